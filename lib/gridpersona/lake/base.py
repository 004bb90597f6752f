"""The Lake facade: table names and paths, publishing, stage scopes, writer locks, write checks.

Everything here holds for both backends; what differs (how a version is read, written, restored or
described) is asked of the backend object (:mod:`gridpersona.lake.deltars`,
:mod:`gridpersona.lake.deltaspark`). See :mod:`gridpersona.lake` for publishing and recovery.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from gridpersona.config import Settings
from gridpersona.console import stage_prefix
from gridpersona.lake import deltalog, locks
from gridpersona.lake.arrow_rows import ArrowRows
from gridpersona.contracts.base import TableSpec
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.lake.common import (LakeBackend, LakeError, SchemaMismatchError, Snapshot, TableInfo,
                                     WriteConflictError, WriteResult, check_schema, checkpoint, log,
                                     partition_value_str, where_to_sql)
from gridpersona.lake.deltars import DeltaRsBackend
from gridpersona.lake.deltaspark import SESSION_CONF as DELTA_SPARK_SESSION_CONF
from gridpersona.lake.deltaspark import DeltaSparkBackend

BACKENDS: dict[str, type[LakeBackend]] = {DeltaRsBackend.name: DeltaRsBackend, DeltaSparkBackend.name: DeltaSparkBackend}
_SESSION_CONF = {DeltaRsBackend.name: {}, DeltaSparkBackend.name: DELTA_SPARK_SESSION_CONF}

# The run log is appended by every stage at its start and end: a writer waits its turn briefly.
_RUN_LOG_LOCK_WAIT_SECONDS = 60.0


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark session conf the configured backend needs (``lake_conf`` of
    :func:`gridpersona.session.build_spark`): Delta's SQL extension and catalog on delta-spark, none on
    the embedded backend."""
    return dict(_SESSION_CONF[settings.lake.backend])


def _check_session(settings: Settings, spark: SparkSession) -> None:
    """A session built without the conf the backend needs would fail later and obscurely (delta-spark:
    `format("delta")` unknown); refuse it here, saying how to build one."""
    missing = [k for k, v in spark_conf(settings).items() if spark.conf.get(k, None) != v]
    if missing:
        raise LakeError(f"lake.backend={settings.lake.backend} needs a Spark session with {', '.join(missing)} "
                        f"set: build it with gridpersona.session.build_spark(settings, "
                        f"lake_conf=gridpersona.lake.spark_conf(settings))")


@dataclass
class StageScope:
    """A running stage as the lake sees it: its locks, its pinned inputs, what it committed."""

    run_id: str
    stage: str
    outputs: set[str]
    held: dict[str, locks.TableLock] = field(default_factory=dict)
    pins: dict[str, int] = field(default_factory=dict)  # table read -> version (versions_read)
    written: dict[str, int] = field(default_factory=dict)  # table -> last version committed (versions_written)

    @property
    def tag(self) -> str:
        return f"{self.run_id}/{self.stage}"


class Lake:
    """The lake under ``settings.lake.root``; see the :mod:`gridpersona.lake` docstring."""

    def __init__(self, settings: Settings, spark: SparkSession | None = None):
        self.settings = settings
        if spark is not None:
            _check_session(settings, spark)
        self._spark = spark
        # Resolved: delta-rs reports file paths with symlinks resolved, and basePath must match them.
        self.root = os.path.realpath(os.path.expanduser(settings.lake.root))
        self.backend = settings.lake.backend
        self._backend: LakeBackend = BACKENDS[self.backend](self)
        self._scope: StageScope | None = None
        # Publishing resolution is asked on every read: cached, keyed by the Delta logs' change stamps.
        self._visible_cache: dict[str, tuple[tuple, int | None]] = {}
        self._unfinished_cache: tuple[tuple, frozenset[str]] | None = None

    # ------------------------------------------------------------ basics
    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            from gridpersona.session import build_spark

            self._spark = build_spark(self.settings, lake_conf=spark_conf(self.settings))
        return self._spark

    @property
    def embedded(self) -> bool:
        """Whether the lake is the embedded kind (local root, no Delta jars): a session's SQL catalog then
        keeps its database folders beside the lake; on a cluster backend it is the cluster's catalog."""
        return self._backend.embedded

    def path(self, table: str) -> str:
        if table in self.settings.lake.locations:
            return os.path.realpath(os.path.expanduser(self.settings.lake.locations[table]))
        layer, _, name = table.partition(".")
        if not layer or not name or "/" in table:
            raise LakeError(f"table name {table!r} must look like layer.table (e.g. bronze.ami_interval)")
        return os.path.join(self.root, layer, name)

    def exists(self, table: str) -> bool:
        """Whether ``table`` has a published version (see the module docstring)."""
        return self._visible(table) is not None

    def _exists_physical(self, table: str) -> bool:
        return os.path.isdir(os.path.join(self.path(table), "_delta_log"))

    def list_tables(self) -> list[str]:
        """The tables with a published version."""
        found = set(t for t in self.settings.lake.locations if self._exists_physical(t))
        if os.path.isdir(self.root):
            for layer in sorted(os.listdir(self.root)):
                layer_dir = os.path.join(self.root, layer)
                if not os.path.isdir(layer_dir) or layer.startswith((".", "_")):
                    continue
                for name in sorted(os.listdir(layer_dir)):
                    if os.path.isdir(os.path.join(layer_dir, name, "_delta_log")):
                        found.add(f"{layer}.{name}")
        return sorted(t for t in found if self.exists(t))

    def _require(self, table: str) -> None:
        if not self._exists_physical(table):
            raise LakeError(f"{table}: no Delta table at {self.path(table)} (run `gridpersona tables` to list what exists)")

    def _resolve(self, table: str, version: int | None = None) -> int:
        """``version`` when given, else the version a reader of ``table`` sees now (published, pinned or pending)."""
        self._require(table)
        if version is not None:
            return version
        visible = self._visible(table)
        if visible is None:
            raise LakeError(f"{table}: no published version yet: every version was written by a stage run that has "
                            f"not succeeded (`gridpersona runs` lists them); rerun that stage")
        return visible

    # ------------------------------------------------------------ publishing
    def _latest_physical(self, table: str) -> int | None:
        """The newest committed version, published or not (None without a table)."""
        versions = deltalog.commit_versions(self.path(table))
        if versions:
            return versions[-1]
        if not self._exists_physical(table):
            return None
        return self._backend.latest_version(table)

    def _unfinished_runs(self) -> frozenset[str]:
        """``run_id/stage`` of every stage run in ops.job_runs without a ``succeeded`` row."""
        path = self.path(JOB_RUNS.name)
        stamp = deltalog.log_stamp(path)
        if stamp is None:
            return frozenset()
        key = (path, stamp)
        if self._unfinished_cache is not None and self._unfinished_cache[0] == key:
            return self._unfinished_cache[1]
        try:
            runs = self._backend.latest_columns(JOB_RUNS.name, ["run_id", "stage", "status"])
        except Exception as exc:  # delta-rs raises several exception types
            raise LakeError(f"{JOB_RUNS.name}: cannot read the run log at {path}, which says which stage outputs "
                            f"are published: {exc}") from exc
        if runs is None:
            return frozenset()
        seen, succeeded = set(), set()
        for run_id, stage, status in zip(runs["run_id"], runs["stage"], runs["status"]):
            (succeeded if status == "succeeded" else seen).add(f"{run_id}/{stage}")
        unfinished = frozenset(seen - succeeded)
        self._unfinished_cache = (key, unfinished)
        return unfinished

    def _newest_published(self, table: str, own_tag: str | None) -> int | None:
        """Newest version of ``table`` committed outside a stage, by a succeeded stage run or by ``own_tag``."""
        path = self.path(table)
        versions = deltalog.commit_versions(path)
        if not versions:  # no local log to read (object store): every commit counts as published
            return self._latest_physical(table)
        unfinished = self._unfinished_runs()
        for version in reversed(versions):
            tag = deltalog.run_tag(deltalog.commit_info(path, version))
            if tag is None or tag == own_tag or tag not in unfinished:
                return version
        # Commits older than the oldest JSON file left in the log were checkpointed long ago.
        return versions[0] - 1 if versions[0] > 0 else None

    def _visible(self, table: str) -> int | None:
        """The version a reader sees now (None: absent). Within a stage: its own outputs with its pending
        commits, any other table pinned at the version first seen."""
        scope = self._scope
        if scope is not None and table not in scope.outputs and table in scope.pins:
            return scope.pins[table]
        stamp = deltalog.log_stamp(self.path(table))
        if stamp is None:
            return None
        own = scope.tag if scope is not None else None
        key = (stamp, deltalog.log_stamp(self.path(JOB_RUNS.name)), own)
        cached = self._visible_cache.get(table)
        if cached is not None and cached[0] == key:
            version = cached[1]
        else:
            version = self._newest_published(table, own)
            self._visible_cache[table] = (key, version)
        if scope is not None and version is not None and table not in scope.outputs and not table.startswith("ops."):
            scope.pins[table] = version
        return version

    def begin_stage(self, run_id: str, stage: str, outputs: Iterable[str], inputs: Iterable[str] = ()) -> StageScope:
        """Enter a stage: lock every output (WriteConflictError when another writer holds one), clean what a
        crash left in them, and pin the inputs that exist. Pair with :meth:`end_stage`."""
        if self._scope is not None:
            raise LakeError(f"stage {stage}: stage {self._scope.stage} is still open on this Lake")
        scope = StageScope(run_id, stage, set(outputs))
        self._scope = scope
        try:
            for table in sorted(scope.outputs):
                scope.held[table] = self._lock_for_write(table)
            for table in inputs:
                self.exists(table)  # pins it
        except BaseException:
            self.end_stage()
            raise
        return scope

    def rollback_stage(self) -> None:
        """Put every table the open stage committed back to its published version (a stage that failed)."""
        scope = self._scope
        if scope is None:
            return
        for table in sorted(scope.written):
            try:
                self._roll_back_unpublished(table, tag=None)
            except Exception as exc:  # the next writer of the table rolls it back; the stage's own error matters more
                log.warning("%s: could not roll back the failed stage's commits now (%s); the next write of the "
                            "table will", table, exc)

    def end_stage(self) -> None:
        """Release the open stage's locks."""
        scope, self._scope = self._scope, None
        if scope is not None:
            for lock in scope.held.values():
                lock.release()

    @property
    def stage_scope(self) -> StageScope | None:
        return self._scope

    def _commit_tag(self, table: str) -> str | None:
        # The run log and other ops tables publish on commit: a running row must be seen while it runs.
        if self._scope is None or table.startswith("ops."):
            return None
        return self._scope.tag

    def _checkpoint(self, point: str) -> None:
        checkpoint(self._scope.stage if self._scope else None, point)

    @contextmanager
    def _writing(self, table: str) -> Iterator[None]:
        """Hold ``table``'s writer lock for one write (a stage holds its outputs' locks to its end)."""
        scope = self._scope
        if scope is not None and table in scope.held:
            yield
            return
        if scope is not None and not table.startswith("ops."):
            # A table the stage did not declare: locked from now to the stage's end, like a declared one.
            scope.held[table] = self._lock_for_write(table)
            scope.outputs.add(table)
            yield
            return
        wait = _RUN_LOG_LOCK_WAIT_SECONDS if table == JOB_RUNS.name else 0.0
        lock = self._lock_for_write(table, wait)
        try:
            yield
        finally:
            lock.release()

    def _lock_for_write(self, table: str, wait_seconds: float = 0.0) -> locks.TableLock:
        scope = self._scope
        owner = locks.owner_record(scope.run_id if scope else None, scope.stage if scope else None)
        lock = locks.try_lock(self.root, table, owner, wait_seconds)
        if lock is None:
            holder = locks.read_owner(locks.lock_path(self.root, table))
            raise WriteConflictError(
                f"{table} is being written by {locks.describe_owner(holder)}; nothing was written: wait for it to "
                f"end (`gridpersona runs` lists stage runs) and run again")
        try:
            self._backend.clean_leftovers(table)
            self._roll_back_unpublished(table, tag=scope.tag if scope else None)
        except BaseException:
            lock.release()
            raise
        return lock

    def _roll_back_unpublished(self, table: str, tag: str | None) -> None:
        """With the table's lock held: undo commits of stage runs that did not succeed (Delta RESTORE to the
        published version; a table never published is removed)."""
        latest = self._latest_physical(table)
        if latest is None:
            return
        published = self._newest_published(table, own_tag=None)
        if published == latest:
            return
        root = self.path(table)
        self._visible_cache.pop(table, None)
        if published is None:
            log.warning("%s: removing the table: no stage run that wrote it has succeeded (versions 0..%d)",
                        table, latest)
            shutil.rmtree(root)
            return
        log.warning("%s: rolling back versions %d..%d (stage runs that did not succeed) to published version %d",
                    table, published + 1, latest, published)
        self._backend.restore(table, published, tag)

    # ------------------------------------------------------------ metadata
    def version(self, table: str) -> int:
        """The version a reader of ``table`` sees (published; pinned or pending within a stage)."""
        return self._resolve(table)

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        """Newest first: version, timestamp (ms), operation, parameters, metrics."""
        return self._backend.history(table, limit)

    def history_entry(self, table: str, version: int) -> dict:
        """The commit of ``version``: version, timestamp (ms), operation and, for a stage's commit, ``run``
        (``run_id/stage``)."""
        info = deltalog.commit_info(self.path(table), version)
        if info is None:
            match = [h for h in self.history(table) if h["version"] == version]
            if not match:
                raise LakeError(f"{table}: no version {version} in its history")
            return {**match[0], "run": None}
        return {"version": version, "timestamp": info.get("timestamp"), "operation": info.get("operation"),
                "run": deltalog.run_tag(info)}

    def info(self, table: str) -> TableInfo:
        """Version, row count, size and file count of the snapshot a reader sees (no Spark job)."""
        return self._backend.info(table, self._resolve(table))

    def partition_columns(self, table: str, version: int | None = None) -> tuple[str, ...]:
        """The columns ``table`` is partitioned by (at ``version``, by default the version a reader sees)."""
        return self._backend.partition_columns(table, version)

    def partition_counts(self, table: str, column: str, version: int | None = None) -> dict[Any, int]:
        """{partition value: rows} of the snapshot a reader sees (or of ``version``), values as the column's
        Python type (a date for a date column). From the Delta log's per-file ``numRecords`` when every file
        has it (no Spark job), else counted by Spark."""
        counts = self._backend.log_partition_counts(table, column, self._resolve(table, version))
        if counts is not None and None not in counts.values():
            return counts
        return {r[0]: r[1] for r in self.read(table, version).groupBy(column).count().collect()}

    def partition_values(self, table: str, column: str, version: int | None = None) -> set[Any]:
        """The values of partition column ``column`` with live data files in the snapshot a reader sees (or
        ``version``), as the column's Python type (a date for a date column); from the Delta log, no Spark job."""
        return self._backend.partition_values(table, column, self._resolve(table, version))

    def partition_rows(self, table: str, column: str, values: Iterable[Any], version: int | None = None) -> int | None:
        """Rows in the partitions ``column in values`` of the snapshot a reader sees (or of ``version``), from
        the Delta log's per-file ``numRecords`` (no Spark job); None when the backend or a file lacks it."""
        counts = self._backend.log_partition_counts(table, column, self._resolve(table, version))
        if counts is None:
            return None
        wanted = {partition_value_str(v) for v in values}
        total = 0
        for value, count in counts.items():
            if partition_value_str(value) in wanted:
                if count is None:
                    return None
                total += count
        return total

    def schema(self, table: str, version: int | None = None) -> T.StructType:
        """The stored schema of ``table`` (or of ``version``): from the Delta log, no Spark job on the
        deltalake backend; from Spark's Delta reader on delta-spark."""
        return self._backend.schema(table, self._resolve(table, version))

    def check_stored_schema(self, table: str, expected: T.StructType, what_to_do: str) -> None:
        """When ``table`` exists, raise SchemaMismatchError (column named, then ``what_to_do``) if its stored
        schema differs from ``expected``: a table written by older code, refused before anything is written."""
        if not self.exists(table):
            return
        try:
            check_schema(table, self.schema(table), expected)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{exc}. {what_to_do}") from None

    def snapshot(self, table: str, version: int | None = None) -> Snapshot:
        """The snapshot a reader sees (or ``version``) as a SQL catalog registers it: its version, schema and
        either a Spark SQL relation reading it or its live data files (see :class:`Snapshot`). Refuses a
        table whose Delta features a file-by-file reader cannot honour, as :meth:`read` does."""
        return self._backend.snapshot(table, self._resolve(table, version))

    # ------------------------------------------------------------ read
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table's snapshot a reader sees (see the module docstring), or ``version``, as a Spark
        DataFrame (columns in table order)."""
        return self._backend.read(table, self._resolve(table, version))

    def read_arrow(self, table: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Bounded tables only: the snapshot read by delta-rs, without Spark."""
        return self._backend.read_arrow(table, self._resolve(table, version), columns)

    # ------------------------------------------------------------ write
    def append(self, df: DataFrame, table: str | TableSpec, partition_by: Iterable[str] | None = None) -> WriteResult:
        return self.write(df, table, mode="append", partition_by=partition_by)

    def overwrite(self, df: DataFrame, table: str | TableSpec, partition_by: Iterable[str] | None = None) -> WriteResult:
        return self.write(df, table, mode="overwrite", partition_by=partition_by)

    def replace(self, df: DataFrame | ArrowRows, table: str | TableSpec, where: Mapping[str, Any],
                partition_by: Iterable[str] | None = None) -> WriteResult:
        """Replace exactly the rows matching ``where`` (partition columns only) with ``df``.

        ``where`` maps partition columns to a value or a list of values. Every
        row of ``df`` must match it, so a rerun for the same partitions leaves no
        duplicates and touches nothing else. Creates the table if absent. ``df``
        may be an :class:`ArrowRows` (rows a task makes and, on the embedded
        backend, writes itself).
        """
        return self.write(df, table, mode="replace", partition_by=partition_by, where=where)

    def write(self, df: DataFrame | ArrowRows, table: str | TableSpec, mode: str = "append",
              partition_by: Iterable[str] | None = None, where: Mapping[str, Any] | None = None,
              description: str | None = None) -> WriteResult:
        """Write ``df`` to ``table`` holding its writer lock; returns what was written (new version, rows).

        ``table`` is a name or a contract: a contract gives the name and, unless ``partition_by`` is
        passed, the partitioning (declared once, in the contract)."""
        if isinstance(table, TableSpec):
            partition_by = table.partition_by if partition_by is None else partition_by
            table = table.name
        if mode not in ("append", "overwrite", "replace"):
            raise LakeError(f"{table}: unknown write mode {mode!r} (append, overwrite, replace)")
        with self._writing(table):
            result = self._write_locked(df, table, mode, tuple(partition_by or ()), where, description)
        if self._scope is not None and self._commit_tag(table):
            self._scope.written[table] = result.version
        self._checkpoint(f"committed:{table}")
        return result

    def _write_locked(self, df: DataFrame, table: str, mode: str, partition_by: tuple[str, ...],
                      where: Mapping[str, Any] | None, description: str | None) -> WriteResult:
        if isinstance(df, ArrowRows) and not getattr(self._backend, "writes_arrow_rows", False):
            df = df.frame()  # Spark writes the rows (lake/arrow_rows.py)
        exists = self._exists_physical(table)
        latest = -1
        if exists:
            # The writer holds the lock and cleaned up first, so the newest commit is the one to build on.
            latest = self._latest_physical(table)
            table_schema = self.schema(table, latest)
            table_parts = self.partition_columns(table, latest)
            if partition_by and tuple(partition_by) != tuple(table_parts):
                raise LakeError(f"{table}: table is partitioned by {list(table_parts)}, write asked for {list(partition_by)}")
            partition_by = tuple(table_parts)
            # Every mode keeps the table's schema; a schema change is a migration, not a write.
            check_schema(table, table_schema, df.schema)
            df = df.select(*[f"`{f.name}`" for f in table_schema.fields])
        if mode == "replace":
            if not where:
                raise LakeError(f"{table}: replace needs a non-empty `where` over partition columns")
            not_parts = [c for c in where if c not in partition_by]
            if not_parts:
                raise LakeError(f"{table}: replace `where` may name partition columns only {list(partition_by)}; "
                                f"got {not_parts}")
            # The embedded backend checks the partitions of the files it staged (no extra pass over the frame).
            stray = (not getattr(self._backend, "checks_replace_partitions", False)
                     and df.filter(f"NOT ({where_to_sql(where)})").limit(1).count())
            if stray:
                raise LakeError(f"{table}: frame holds rows outside the replaced partitions ({where_to_sql(where)})")
        for col in partition_by:
            if col not in df.columns:
                raise LakeError(f"{table}: partition column '{col}' is not in the frame (columns: {df.columns})")
        t0 = time.perf_counter()
        result = self._backend.write(df, table, mode, partition_by, where, exists, latest, self._commit_tag(table),
                                     description)
        # Progress while a stage runs: each committed write, not only the stage's total at its end.
        log.info("%s%s %s: %s rows, version %d, %d files (%.1f s)", stage_prefix(), mode, table,
                 f"{result.rows:,}", result.version, result.files, time.perf_counter() - t0)
        return result

    # ------------------------------------------------------------ arrow path (generator, small tables)
    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader, mode: str = "overwrite",
                    partition_by: Iterable[str] | None = None, add_columns: bool = False) -> WriteResult:
        """Write Arrow data (a Table or a RecordBatchReader streaming many batches) in one commit, holding
        the table's writer lock. ``add_columns``: an append may add nullable columns the stored table lacks
        (an additive migration); any other difference is still refused."""
        return self._backend.write_arrow(table, data, mode, list(partition_by or []), add_columns)
