"""The lake: Delta tables named ``layer.table`` under one root, two backends.

One small interface (read a snapshot or version, append, overwrite, replace the
rows of some partitions, history, list tables) over two interchangeable backends:

- ``deltalake`` (embedded default): Spark writes Parquet data files natively into
  a staging folder; the files are moved into the table folder and committed to
  the Delta log with the ``deltalake`` package (delta-rs) in one atomic commit.
  Reads take the snapshot's live file list from delta-rs and hand it to Spark.
  No JVM Delta jars needed. Local-filesystem lake roots only.
- ``delta-spark``: ``format("delta")``, for clusters with the Delta jars.

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

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from gridpersona.lake import deltalog, locks
from gridpersona.config import Settings
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.console import stage_prefix

log = logging.getLogger(__name__)

# Reader features this layer cannot honour: reading such a table through a
# plain file list would return wrong rows, so it is refused.
_UNSUPPORTED_READER_FEATURES = {
    "deletionVectors": "deletion vectors (rows deleted without rewriting files)",
    "columnMapping": "column mapping (physical column names differ from logical ones)",
    "v2Checkpoint": "v2 checkpoints",
}


class LakeError(Exception):
    """A lake operation could not be done; the message names the table."""


class SchemaMismatchError(LakeError):
    """A frame's schema does not match the table's."""


class WriteConflictError(LakeError):
    """Another writer holds the table (or committed to it first)."""


# The run log is appended by every stage at its start and end: a writer waits its turn briefly.
_RUN_LOG_LOCK_WAIT_SECONDS = 60.0

# Test hooks at the points where a crash would leave work half done: called with "<stage>:<point>"
# ("-" outside a stage). GRIDPERSONA_CRASH_AT=<stage>:<point> makes the process SIGKILL itself there,
# which is how the kill tests reach each point deterministically.
CHECKPOINT_HOOKS: list[Callable[[str], None]] = []


def checkpoint(stage: str | None, point: str) -> None:
    """A named point in a stage's work (see CHECKPOINT_HOOKS)."""
    name = f"{stage or '-'}:{point}"
    for hook in list(CHECKPOINT_HOOKS):
        hook(name)
    if os.environ.get("GRIDPERSONA_CRASH_AT") == name:
        log.warning("GRIDPERSONA_CRASH_AT=%s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


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


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    rows: int | None
    size_bytes: int
    files: int
    partition_by: tuple[str, ...]


def _type_name(dtype: T.DataType) -> str:
    return dtype.simpleString()


def check_schema(table: str, expected: T.StructType, got: T.StructType) -> None:
    """Raise SchemaMismatchError naming table and column when ``got`` differs from ``expected``.

    Names and types must match; column order and nullability are not compared.
    """
    exp = {f.name: f.dataType for f in expected.fields}
    act = {f.name: f.dataType for f in got.fields}
    problems = []
    for name, dtype in exp.items():
        if name not in act:
            problems.append(f"column '{name}' missing (expected {_type_name(dtype)})")
        elif act[name] != dtype:
            problems.append(f"column '{name}': expected {_type_name(dtype)}, got {_type_name(act[name])}")
    for name, dtype in act.items():
        if name not in exp:
            problems.append(f"column '{name}' ({_type_name(dtype)}) is not in the table")
    if problems:
        raise SchemaMismatchError(f"{table}: schema mismatch: " + "; ".join(problems))


def _partition_value_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).replace("'", "''")
    if hasattr(value, "isoformat") and not isinstance(value, str):
        kind = "DATE" if len(text) == 10 else "TIMESTAMP"
        return f"{kind} '{text}'"
    return f"'{text}'"


def where_to_sql(where: Mapping[str, Any]) -> str:
    """{'date': [d1, d2], 'region': 'A'} -> "date IN (DATE '...', ...) AND region = 'A'"."""
    parts = []
    for col, value in where.items():
        if isinstance(value, (list, tuple, set, frozenset)):
            values = sorted(value, key=str)
            parts.append(f"`{col}` IN ({', '.join(_sql_literal(v) for v in values)})")
        else:
            parts.append(f"`{col}` = {_sql_literal(value)}")
    return " AND ".join(parts)


class Lake:
    """The lake under ``settings.lake.root``; see module docstring."""

    def __init__(self, settings: Settings, spark: SparkSession | None = None):
        self.settings = settings
        self._spark = spark
        # Resolved: delta-rs reports file paths with symlinks resolved, and basePath must match them.
        self.root = os.path.realpath(os.path.expanduser(settings.lake.root))
        self.backend = settings.lake.backend
        # What the latest write through this Lake did: table, version, rows, files.
        self.last_write: dict[str, Any] = {}
        self._scope: StageScope | None = None
        # Publishing resolution is asked on every read: cached, keyed by the Delta logs' change stamps.
        self._visible_cache: dict[str, tuple[tuple, int | None]] = {}
        self._unfinished_cache: tuple[tuple, frozenset[str]] | None = None

    # ------------------------------------------------------------ basics
    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            from gridpersona.session import build_spark

            self._spark = build_spark(self.settings)
        return self._spark

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

    def _delta_table(self, table: str, version: int | None = None):
        """The table at ``version`` or, by default, at the version a reader sees (see the module docstring)."""
        from deltalake import DeltaTable

        version = self._resolve(table, version)
        try:
            return DeltaTable(self.path(table), version=version)
        except Exception as exc:  # delta-rs raises several exception types
            raise LakeError(f"{table}: cannot open Delta table at {self.path(table)}"
                            f"{'' if version is None else f' version {version}'}: {exc}") from exc

    def _check_readable(self, table: str, dt) -> None:
        protocol = dt.protocol()
        features = set(protocol.reader_features or [])
        config = dt.metadata().configuration or {}
        if config.get("delta.columnMapping.mode", "none") not in ("none", None):
            features.add("columnMapping")
        bad = sorted(features & set(_UNSUPPORTED_READER_FEATURES))
        if bad:
            what = "; ".join(_UNSUPPORTED_READER_FEATURES[f] for f in bad)
            raise LakeError(
                f"{table}: the table uses Delta reader feature(s) {bad} ({what}) that the "
                f"'deltalake' backend cannot honour; reading it file by file would return wrong rows. "
                f"Rewrite the table without the feature (e.g. REORG/purge deletion vectors) or use "
                f"lake.backend=delta-spark."
            )

    # ------------------------------------------------------------ publishing
    def _latest_physical(self, table: str) -> int | None:
        """The newest committed version, published or not (None without a table)."""
        versions = deltalog.commit_versions(self.path(table))
        if versions:
            return versions[-1]
        if not self._exists_physical(table):
            return None
        if self.backend == "delta-spark":
            return int(self._history_spark(table, 1)[0]["version"])
        from deltalake import DeltaTable

        return DeltaTable(self.path(table)).version()

    def _unfinished_runs(self) -> frozenset[str]:
        """``run_id/stage`` of every stage run in ops.job_runs without a ``succeeded`` row."""
        path = self.path(JOB_RUNS.name)
        stamp = deltalog.log_stamp(path)
        if stamp is None:
            return frozenset()
        key = (path, stamp)
        if self._unfinished_cache is not None and self._unfinished_cache[0] == key:
            return self._unfinished_cache[1]
        from deltalake import DeltaTable

        try:
            dt = DeltaTable(path)
            if not {"run_id", "stage", "status"} <= set(dt.schema().to_arrow().names):
                return frozenset()
            runs = dt.to_pyarrow_table(columns=["run_id", "stage", "status"]).to_pydict()
        except Exception as exc:  # delta-rs raises several exception types
            raise LakeError(f"{JOB_RUNS.name}: cannot read the run log at {path}, which says which stage outputs "
                            f"are published: {exc}") from exc
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
            self._clean_leftovers(table)
            self._roll_back_unpublished(table, tag=scope.tag if scope else None)
        except BaseException:
            lock.release()
            raise
        return lock

    def _clean_leftovers(self, table: str) -> None:
        """With the table's lock held: delete data files a crashed write moved in but never committed (from
        its journal), then its staging folders."""
        root = self.path(table)
        staging = os.path.join(root, "_staging")
        if not os.path.isdir(staging):
            return
        removed = 0
        for name in sorted(os.listdir(staging)):
            if not name.endswith(".journal"):
                continue
            try:
                with open(os.path.join(staging, name), encoding="utf-8") as fh:
                    journal = json.load(fh)
            except (OSError, ValueError):
                continue  # torn while being written: nothing was moved yet
            committed = deltalog.added_paths(root, int(journal["base_version"]))
            for rel in journal["files"]:
                if rel.replace(os.sep, "/") in committed:
                    continue
                target = os.path.join(root, rel)
                if os.path.exists(target):
                    os.remove(target)
                    removed += 1
                    _remove_empty_parents(os.path.dirname(target), root)
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("%s: removed the leftovers of an interrupted write (staging folder%s)", table,
                    f", {removed} uncommitted data files" if removed else "")

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
        if self.backend == "delta-spark":
            self.spark.sql(f"RESTORE TABLE delta.`{root}` TO VERSION AS OF {published}")
            return
        from deltalake import DeltaTable
        from deltalake.transaction import CommitProperties

        metadata = {deltalog.RUN_TAG_KEY: tag} if tag else {}
        DeltaTable(root).restore(published, commit_properties=CommitProperties(custom_metadata=metadata))

    # ------------------------------------------------------------ metadata
    def version(self, table: str) -> int:
        """The version a reader of ``table`` sees (published; pinned or pending within a stage)."""
        return self._resolve(table)

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        """Newest first: version, timestamp (ms), operation, parameters, metrics."""
        if self.backend == "delta-spark":
            return self._history_spark(table, limit)
        rows = self._delta_table(table).history(limit)
        return [
            {
                "version": r.get("version"),
                "timestamp": r.get("timestamp"),
                "operation": r.get("operation"),
                "parameters": r.get("operationParameters", {}),
                "metrics": r.get("operationMetrics", {}),
                "user_metadata": r.get("userMetadata"),
            }
            for r in rows
        ]

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

    def _history_spark(self, table: str, limit: int | None) -> list[dict]:
        self._require(table)
        sql = f"DESCRIBE HISTORY delta.`{self.path(table)}`" + (f" LIMIT {int(limit)}" if limit else "")
        return [
            {"version": r["version"], "timestamp": int(r["timestamp"].timestamp() * 1000), "operation": r["operation"],
             "parameters": r["operationParameters"], "metrics": r["operationMetrics"], "user_metadata": r["userMetadata"]}
            for r in self.spark.sql(sql).collect()
        ]

    def info(self, table: str) -> TableInfo:
        """Version, row count, size and file count of the snapshot a reader sees (no Spark job)."""
        dt = self._delta_table(table)
        actions = pa.table(dt.get_add_actions(flatten=True))
        rows = None
        if "num_records" in actions.column_names:
            counts = actions.column("num_records").to_pylist()
            rows = None if any(c is None for c in counts) else int(sum(counts))
        size = int(sum(actions.column("size_bytes").to_pylist())) if actions.num_rows else 0
        return TableInfo(table, dt.version(), rows if actions.num_rows else 0, size, actions.num_rows,
                         tuple(dt.metadata().partition_columns))

    def partition_counts(self, table: str, column: str) -> dict[Any, int]:
        """{partition value: rows} of the latest snapshot, values as the column's Python type (a date
        for a date column). From the Delta log's per-file ``numRecords`` when every file has it (no
        Spark job), else counted by Spark."""
        if self.backend != "delta-spark":
            actions = pa.table(self._delta_table(table).get_add_actions(flatten=True))
            key = f"partition.{column}"
            if not actions.num_rows:
                return {}
            if key in actions.column_names and "num_records" in actions.column_names:
                records = actions.column("num_records").to_pylist()
                if None not in records:
                    counts: dict[Any, int] = {}
                    for value, n in zip(actions.column(key).to_pylist(), records):
                        counts[value] = counts.get(value, 0) + int(n)
                    return counts
        return {r[0]: r[1] for r in self.read(table).groupBy(column).count().collect()}

    def partition_rows(self, table: str, column: str, values: Iterable[Any], version: int | None = None) -> int | None:
        """Rows in the partitions ``column in values`` of the snapshot a reader sees (or of ``version``), from
        the Delta log's per-file ``numRecords`` (no Spark job); None when the backend or a file lacks it."""
        if self.backend == "delta-spark":
            return None
        dt = self._delta_table(table, version)
        wanted = {_partition_value_str(v) for v in values}
        actions = pa.table(dt.get_add_actions(flatten=True))
        key = f"partition.{column}"
        if not actions.num_rows:
            return 0
        if key not in actions.column_names or "num_records" not in actions.column_names:
            return None
        total = 0
        for value, count in zip(actions.column(key).to_pylist(), actions.column("num_records").to_pylist()):
            if _partition_value_str(value) in wanted:
                if count is None:
                    return None
                total += int(count)
        return total

    def schema(self, table: str, version: int | None = None) -> T.StructType:
        """The stored schema of ``table`` (or of ``version``): from the Delta log, no Spark job on the
        deltalake backend; from Spark's Delta reader on delta-spark."""
        if self.backend == "delta-spark":
            return self.read(table, version).schema
        dt = self._delta_table(table, version)
        return T.StructType.fromJson(json.loads(dt.schema().to_json()))

    def check_stored_schema(self, table: str, expected: T.StructType, what_to_do: str) -> None:
        """When ``table`` exists, raise SchemaMismatchError (column named, then ``what_to_do``) if its stored
        schema differs from ``expected``: a table written by older code, refused before anything is written."""
        if not self.exists(table):
            return
        try:
            check_schema(table, self.schema(table), expected)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{exc}. {what_to_do}") from None

    # ------------------------------------------------------------ read
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """The table's snapshot a reader sees (see the module docstring), or ``version``, as a Spark
        DataFrame (columns in table order)."""
        if self.backend == "delta-spark":
            version = self._resolve(table, version)
            return self.spark.read.format("delta").option("versionAsOf", version).load(self.path(table))
        dt = self._delta_table(table, version)
        self._check_readable(table, dt)
        schema = T.StructType.fromJson(json.loads(dt.schema().to_json()))
        files = dt.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        partition_cols = dt.metadata().partition_columns
        # Partition values live in directory names (hive style, as every Delta
        # writer without column mapping lays them out); basePath makes Spark
        # restore them, typed by the schema we pass.
        reader = self.spark.read.schema(schema)
        if partition_cols:
            root = self.path(table)
            off_layout = [f for f in files[:50] if not all(f"/{c}=" in f for c in partition_cols)]
            if off_layout:
                raise LakeError(f"{table}: data file {off_layout[0]} is not laid out in hive-style "
                                f"partition folders; this backend cannot restore its partition values")
            reader = reader.option("basePath", root)
        df = reader.parquet(*files)
        return df.select(*[f"`{f.name}`" for f in schema.fields])

    def read_arrow(self, table: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Bounded tables only: the snapshot read by delta-rs, without Spark."""
        dt = self._delta_table(table, version)
        self._check_readable(table, dt)
        return dt.to_pyarrow_table(columns=columns)

    # ------------------------------------------------------------ write
    def append(self, df: DataFrame, table: str, partition_by: Iterable[str] | None = None) -> int:
        return self.write(df, table, mode="append", partition_by=partition_by)

    def overwrite(self, df: DataFrame, table: str, partition_by: Iterable[str] | None = None) -> int:
        return self.write(df, table, mode="overwrite", partition_by=partition_by)

    def replace(self, df: DataFrame, table: str, where: Mapping[str, Any], partition_by: Iterable[str] | None = None) -> int:
        """Replace exactly the rows matching ``where`` (partition columns only) with ``df``.

        ``where`` maps partition columns to a value or a list of values. Every
        row of ``df`` must match it, so a rerun for the same partitions leaves no
        duplicates and touches nothing else. Creates the table if absent.
        """
        return self.write(df, table, mode="replace", partition_by=partition_by, where=where)

    def write(self, df: DataFrame, table: str, mode: str = "append", partition_by: Iterable[str] | None = None,
              where: Mapping[str, Any] | None = None, description: str | None = None) -> int:
        """Write ``df`` to ``table`` holding its writer lock; returns the new table version."""
        if mode not in ("append", "overwrite", "replace"):
            raise LakeError(f"{table}: unknown write mode {mode!r} (append, overwrite, replace)")
        with self._writing(table):
            version = self._write_locked(df, table, mode, tuple(partition_by or ()), where, description)
        if self._scope is not None and self._commit_tag(table):
            self._scope.written[table] = version
        self._checkpoint(f"committed:{table}")
        return version

    def _write_locked(self, df: DataFrame, table: str, mode: str, partition_by: tuple[str, ...],
                      where: Mapping[str, Any] | None, description: str | None) -> int:
        exists = self._exists_physical(table)
        if exists:
            # The writer holds the lock and cleaned up first, so the newest commit is the one to build on.
            latest = self._latest_physical(table)
            table_schema = self.schema(table, latest) if self.backend == "deltalake" else self.read(table, latest).schema
            table_parts = self._partition_columns(table, latest)
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
            stray = df.filter(f"NOT ({where_to_sql(where)})").limit(1).count()
            if stray:
                raise LakeError(f"{table}: frame holds rows outside the replaced partitions ({where_to_sql(where)})")
        for col in partition_by:
            if col not in df.columns:
                raise LakeError(f"{table}: partition column '{col}' is not in the frame (columns: {df.columns})")
        t0 = time.perf_counter()
        if self.backend == "delta-spark":
            version = self._write_spark(df, table, mode, partition_by, where, exists)
        else:
            version = self._write_deltars(df, table, mode, partition_by, where, exists, description)
        # Progress while a stage runs: each committed write, not only the stage's total at its end.
        log.info("%s%s %s: %s rows, version %d, %d files (%.1f s)", stage_prefix(), mode, table,
                 f"{self.last_write.get('rows', 0):,}", version, self.last_write.get("files", 0), time.perf_counter() - t0)
        return version

    def _partition_columns(self, table: str, version: int | None = None) -> tuple[str, ...]:
        if self.backend == "delta-spark":
            rows = self.spark.sql(f"DESCRIBE DETAIL delta.`{self.path(table)}`").collect()
            return tuple(rows[0]["partitionColumns"])
        return tuple(self._delta_table(table, version).metadata().partition_columns)

    def _write_spark(self, df, table, mode, partition_by, where, exists) -> int:
        writer = df.write.format("delta")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if mode == "replace":
            writer = writer.mode("overwrite").option("replaceWhere", where_to_sql(where))
        else:
            writer = writer.mode(mode)
        tag = self._commit_tag(table)
        if tag:
            writer = writer.option("userMetadata", f"{deltalog.RUN_TAG_KEY}={tag}")
        writer.save(self.path(table))
        latest = self._history_spark(table, 1)[0]
        metrics = latest.get("metrics") or {}
        self.last_write = {"table": table, "version": int(latest["version"]),
                           "rows": int(metrics.get("numOutputRows", 0)), "files": int(metrics.get("numFiles", 0))}
        return self.last_write["version"]

    def _stage_parquet(self, df: DataFrame, table: str, partition_by: tuple[str, ...]) -> tuple[str, list[dict]]:
        """Spark writes the frame's Parquet files into a staging folder; returns (folder, files)."""
        root = self.path(table)
        staging = os.path.join(root, "_staging", uuid.uuid4().hex)
        writer = df.write.mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(staging)
        files = []
        for dirpath, _, names in os.walk(staging):
            for name in names:
                if not name.endswith(".parquet"):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, staging)
                values: dict[str, str | None] = {}
                for part in Path(rel).parent.parts:
                    key, _, raw = part.partition("=")
                    value = unquote(raw)
                    values[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
                files.append({"staged": full, "rel": rel, "partition_values": values,
                              "rows": pq.read_metadata(full).num_rows})
        return staging, files

    def _write_deltars(self, df, table, mode, partition_by, where, exists, description) -> int:
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import AddAction, CommitProperties

        root = self.path(table)
        os.makedirs(root, exist_ok=True)
        t0 = time.time()
        staging, files = self._stage_parquet(df, table, partition_by)
        self._checkpoint(f"staged:{table}")
        # The journal names the files about to move into the table folder: if the process dies before
        # the commit, the next writer deletes those no Delta version references.
        journal = staging + ".journal"
        with open(journal, "w", encoding="utf-8") as fh:
            json.dump({"base_version": self._latest_physical(table) if exists else -1,
                       "files": [f["rel"] for f in files]}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        moved: list[str] = []
        try:
            actions = []
            for f in files:
                # Spark's file names carry a per-job UUID, so they cannot collide with live files.
                target = os.path.join(root, f["rel"])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(f["staged"], target)
                moved.append(target)
                stat = os.stat(target)
                actions.append(AddAction(
                    path=f["rel"].replace(os.sep, "/"), size=stat.st_size, partition_values=f["partition_values"],
                    modification_time=int(stat.st_mtime * 1000), data_change=True,
                    stats=json.dumps({"numRecords": f["rows"]}),
                ))
            schema = Schema.from_json(df.schema.json())
            metadata = {"gridpersona.mode": mode, "gridpersona.rows": str(sum(f["rows"] for f in files))}
            tag = self._commit_tag(table)
            if tag:
                metadata[deltalog.RUN_TAG_KEY] = tag
            self._checkpoint(f"moved:{table}")
            self._commit(table, exists, actions, mode, schema, partition_by, where,
                         CommitProperties(custom_metadata=metadata), description)
        except BaseException:
            for path in moved:
                try:
                    os.remove(path)
                except OSError:
                    pass
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                os.remove(journal)
            except OSError:
                pass
            staging_parent = os.path.join(root, "_staging")
            if os.path.isdir(staging_parent) and not os.listdir(staging_parent):
                os.rmdir(staging_parent)
        version = DeltaTable(root).version()
        self.last_write = {"table": table, "version": version, "rows": sum(f["rows"] for f in files), "files": len(files)}
        log.debug("%s: committed version %d (%d files, %.1fs)", table, version, len(files), time.time() - t0)
        return version

    def _commit(self, table, exists, actions, mode, schema, partition_by, where, props, description) -> None:
        """The single atomic step of a deltalake-backend write: one commit to the Delta log."""
        try:
            self._commit_actions(table, exists, actions, mode, schema, partition_by, where, props, description)
        except LakeError:
            raise
        except Exception as exc:
            # Backstop behind the writer lock (a writer that does not take it): delta-rs reports a lost
            # race as CommitFailedError / DeltaError; say it in one line.
            from deltalake.exceptions import CommitFailedError, DeltaError

            if not isinstance(exc, (CommitFailedError, DeltaError)):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WriteConflictError(f"{table}: the commit failed ({first}); nothing was written. If another "
                                     f"process writes this table, wait for it to end and run again") from None

    def _commit_actions(self, table, exists, actions, mode, schema, partition_by, where, props, description) -> None:
        from deltalake import DeltaTable
        from deltalake.transaction import create_table_with_add_actions

        root = self.path(table)
        if not exists:
            create_table_with_add_actions(root, schema, actions, mode="error", partition_by=list(partition_by) or None,
                                          name=table, description=description, commit_properties=props)
            return
        dt = DeltaTable(root)
        if mode == "append":
            dt.create_write_transaction(actions, "append", schema, partition_by=list(partition_by) or None, commit_properties=props)
        elif mode == "overwrite":
            dt.create_write_transaction(actions, "overwrite", schema, partition_by=list(partition_by) or None, commit_properties=props)
        else:
            filters = []
            for col, value in where.items():
                if isinstance(value, (list, tuple, set, frozenset)):
                    filters.append((col, "in", [_partition_value_str(v) for v in value]))
                else:
                    filters.append((col, "=", _partition_value_str(value)))
            dt.create_write_transaction(actions, "overwrite", schema, partition_by=list(partition_by) or None,
                                        partition_filters=filters, commit_properties=props)

    # ------------------------------------------------------------ arrow path (generator, small tables)
    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader, mode: str = "overwrite",
                    partition_by: Iterable[str] | None = None, add_columns: bool = False) -> int:
        """Write Arrow data (a Table or a RecordBatchReader streaming many batches) in one commit, holding
        the table's writer lock. ``add_columns``: an append may add nullable columns the stored table lacks
        (an additive migration); any other difference is still refused."""
        partition_by = list(partition_by or [])
        if self.backend == "delta-spark":
            arrow = data.read_all() if isinstance(data, pa.RecordBatchReader) else data
            df = self.spark.createDataFrame(arrow)
            return self.write(df, table, mode=mode, partition_by=partition_by)
        from deltalake import DeltaTable, write_deltalake
        from deltalake.transaction import CommitProperties

        root = self.path(table)
        os.makedirs(os.path.dirname(root), exist_ok=True)
        if mode not in ("append", "overwrite"):
            raise LakeError(f"{table}: write_arrow supports append or overwrite, not {mode!r}")
        tag = self._commit_tag(table)
        props = CommitProperties(custom_metadata={deltalog.RUN_TAG_KEY: tag}) if tag else None
        with self._writing(table):
            schema_mode = "overwrite" if mode == "overwrite" else None
            if mode == "append" and self._exists_physical(table):
                expected = self.schema(table, self._latest_physical(table))
                got = _arrow_to_spark_schema(data.schema)
                added = [f for f in got.fields if f.name not in expected.fieldNames()]
                if add_columns and added and all(f.nullable for f in added):
                    check_schema(table, T.StructType(expected.fields + added), got)
                    schema_mode = "merge"
                    log.info("%s: adding column(s) %s", table, ", ".join(f.name for f in added))
                else:
                    check_schema(table, expected, got)
            write_deltalake(root, data, mode=mode, partition_by=partition_by or None, schema_mode=schema_mode,
                            name=table, commit_properties=props)
            version = DeltaTable(root).version()
        if tag:
            self._scope.written[table] = version
        return version


def _arrow_to_spark_schema(schema: pa.Schema) -> T.StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _remove_empty_parents(folder: str, stop: str) -> None:
    """Remove ``folder`` and its parents while empty, up to (not including) ``stop``."""
    while os.path.abspath(folder) != os.path.abspath(stop) and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def lake_uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri
