"""The lake: Delta tables named ``layer.table`` under one root, two backends.

One small interface, the :class:`Lake` facade (read a snapshot or version, append, overwrite, replace the
rows of some partitions, history, partition values and counts, list tables), over two interchangeable
backends chosen by ``lake.backend``; nothing outside this package asks which one runs:

- ``deltalake`` (embedded default, :mod:`gridpersona.lake.deltars`): Spark writes Parquet data files
  natively into a staging folder; the files are moved into the table folder and committed to
  the Delta log with the ``deltalake`` package (delta-rs) in one atomic commit.
  Reads take the snapshot's live file list from delta-rs and hand it to Spark.
  No JVM Delta jars needed. Local-filesystem lake roots only.
- ``delta-spark`` (:mod:`gridpersona.lake.deltaspark`): ``format("delta")``, for clusters with the Delta
  jars; its session needs :func:`spark_conf`.

Modules: ``base`` (the facade: publishing, stage scopes, locks, write checks), ``deltars`` and
``deltaspark`` (the backends), ``common`` (errors, result records, schema checks), ``deltalog`` (reading
commit tags from a local Delta log), ``locks`` (per-table writer locks).

A write that fails before its commit leaves the table at its previous version:
its data files were never referenced by the log and are deleted.

Publishing (what makes a stage whole). A write made inside a stage (between
:meth:`Lake.begin_stage` and :meth:`Lake.end_stage`) tags its commit with the
stage run (``<run_id>/<stage>``). Readers see, per table, the newest version
whose commit is untagged (a write outside any stage: ingest, generate, a hand
fix) or tagged by a stage run that has a ``succeeded`` row in ``ops.job_runs``;
commits of a run that is still running, failed or crashed stay invisible. So the
``succeeded`` row, one append, publishes all of a stage's tables at once. The
stage's own reads see its pending commits, and every other table it reads is
pinned at the version first resolved. A table whose every version is
unpublished reads as absent.

Writers hold a per-table lock (:mod:`gridpersona.lake.locks`); with it held, a
writer first removes what a crash left (staging folders, data files moved in
but never committed, commits of unfinished runs: rolled back with a Delta
RESTORE to the published version).
"""

from gridpersona.lake.arrow_rows import ArrowRows
from gridpersona.lake.base import BACKENDS, Lake, StageScope, spark_conf
from gridpersona.lake.common import (CHECKPOINT_HOOKS, LakeError, SchemaMismatchError, Snapshot,
                                     TableInfo, WriteConflictError, WriteResult, check_schema, checkpoint,
                                     lake_uri_to_path, where_to_sql)

__all__ = [
    "ArrowRows", "BACKENDS", "CHECKPOINT_HOOKS", "Lake", "LakeError", "SchemaMismatchError", "Snapshot",
    "StageScope", "TableInfo", "WriteConflictError", "WriteResult", "check_schema", "checkpoint",
    "lake_uri_to_path", "spark_conf", "where_to_sql",
]
