"""The embedded backend (``lake.backend: deltalake``): Spark writes Parquet, delta-rs commits; no Delta jars.

Writes: Spark writes the frame's Parquet data files natively into a staging folder (for an
:class:`~gridpersona.lake.arrow_rows.ArrowRows`, the tasks write them with pyarrow); the files are moved
into the table folder and committed to the Delta log with the ``deltalake`` package (delta-rs) in one
atomic commit. A journal beside the staging folder names the files about to move, so the next writer can
delete those a crash left uncommitted. Reads take the snapshot's live file list from delta-rs and hand it
to Spark. Local-filesystem lake roots only.

Log-level reads (metadata, partition counts, Arrow reads of small tables) go through delta-rs on both
backends: the package is always installed and needs no Spark job.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from gridpersona.lake import arrow_rows, deltalog
from gridpersona.lake.arrow_rows import ArrowRows
from gridpersona.lake.common import (LakeError, Snapshot, TableInfo, WriteConflictError, WriteResult,
                                     arrow_to_spark_schema, check_schema, log, partition_value_str,
                                     remove_empty_parents, where_to_sql)

# Reader features this layer cannot honour: reading such a table through a
# plain file list would return wrong rows, so it is refused.
_UNSUPPORTED_READER_FEATURES = {
    "deletionVectors": "deletion vectors (rows deleted without rewriting files)",
    "columnMapping": "column mapping (physical column names differ from logical ones)",
    "v2Checkpoint": "v2 checkpoints",
}


def _outside(files: list[dict], where: Mapping[str, Any]) -> str | None:
    """The partition (as 'col=value') of the first staged file outside ``where``, None when all are inside."""
    allowed = {col: {partition_value_str(v) for v in (value if isinstance(value, (list, tuple, set, frozenset))
                                                      else [value])}
               for col, value in where.items()}
    for f in files:
        for col, ok in allowed.items():
            if f["partition_values"].get(col) not in ok:
                return f"{col}={f['partition_values'].get(col)}"
    return None


def _partition_values(rel: str) -> dict[str, str | None]:
    """The partition values of a staged file from its Hive-style folders (``date=2026-06-01/...``)."""
    values: dict[str, str | None] = {}
    for part in Path(rel).parent.parts:
        key, _, raw = part.partition("=")
        value = unquote(raw)
        values[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    return values


class DeltaRsBackend:
    # A replace checks the partitions of the files it staged (no pass over the frame before the write).
    checks_replace_partitions = True
    # Writes an ArrowRows in its tasks (lake/arrow_rows.py), not through a Spark frame.
    writes_arrow_rows = True
    """The ``deltalake`` backend; see the module docstring. Versions it is given are resolved by the Lake."""

    name = "deltalake"
    # The lake root is a local folder the process owns: a session's SQL catalog keeps its folders beside it.
    embedded = True

    def __init__(self, lake):
        # The Lake facade (gridpersona.lake.base) this backend serves: paths, the session, version
        # resolution, the writer lock and crash checkpoints are its own (not imported: base imports this).
        self.lake = lake

    def path(self, table: str) -> str:
        return self.lake.path(table)

    # ------------------------------------------------------------ opening a version
    def _open(self, table: str, version: int | None):
        from deltalake import DeltaTable

        try:
            return DeltaTable(self.path(table), version=version)
        except Exception as exc:  # delta-rs raises several exception types
            raise LakeError(f"{table}: cannot open Delta table at {self.path(table)}"
                            f"{'' if version is None else f' version {version}'}: {exc}") from exc

    def _open_resolved(self, table: str, version: int | None = None):
        """The table at ``version`` or, by default, at the version a reader sees."""
        return self._open(table, self.lake._resolve(table, version))

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

    # ------------------------------------------------------------ log-level metadata
    def latest_version(self, table: str) -> int:
        """The newest committed version of an existing table whose log is not local."""
        from deltalake import DeltaTable

        return DeltaTable(self.path(table)).version()

    def latest_columns(self, table: str, columns: list[str]) -> dict[str, list] | None:
        """``columns`` of the newest committed version (published or not) as lists; None when one is missing."""
        from deltalake import DeltaTable

        dt = DeltaTable(self.path(table))
        if not set(columns) <= set(dt.schema().to_arrow().names):
            return None
        return dt.to_pyarrow_table(columns=columns).to_pydict()

    def history(self, table: str, limit: int | None) -> list[dict]:
        rows = self._open_resolved(table).history(limit)
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

    def info(self, table: str, version: int) -> TableInfo:
        dt = self._open(table, version)
        actions = pa.table(dt.get_add_actions(flatten=True))
        rows = None
        if "num_records" in actions.column_names:
            counts = actions.column("num_records").to_pylist()
            rows = None if any(c is None for c in counts) else int(sum(counts))
        size = int(sum(actions.column("size_bytes").to_pylist())) if actions.num_rows else 0
        return TableInfo(table, dt.version(), rows if actions.num_rows else 0, size, actions.num_rows,
                         tuple(dt.metadata().partition_columns))

    def partition_columns(self, table: str, version: int | None) -> tuple[str, ...]:
        return tuple(self._open_resolved(table, version).metadata().partition_columns)

    def log_partition_counts(self, table: str, column: str, version: int) -> dict[Any, int | None] | None:
        """{partition value (the column's Python type): rows} from the Delta log's per-file ``numRecords``;
        a value maps to None when a file of it lacks the count. None when the log has no partition values of
        ``column`` or no counts at all."""
        actions = pa.table(self._open(table, version).get_add_actions(flatten=True))
        key = f"partition.{column}"
        if not actions.num_rows:
            return {}
        if key not in actions.column_names or "num_records" not in actions.column_names:
            return None
        counts: dict[Any, int | None] = {}
        for value, n in zip(actions.column(key).to_pylist(), actions.column("num_records").to_pylist()):
            before = counts.get(value, 0)
            counts[value] = None if before is None or n is None else before + int(n)
        return counts

    def partition_values(self, table: str, column: str, version: int) -> set[Any]:
        actions = pa.table(self._open(table, version).get_add_actions(flatten=True))
        if not actions.num_rows:
            return set()
        key = f"partition.{column}"
        if key not in actions.column_names:
            raise LakeError(f"{table}: not partitioned by '{column}' (partitions: "
                            f"{list(self._open(table, version).metadata().partition_columns)})")
        return set(actions.column(key).to_pylist())

    def schema(self, table: str, version: int) -> T.StructType:
        dt = self._open(table, version)
        return T.StructType.fromJson(json.loads(dt.schema().to_json()))

    def snapshot(self, table: str, version: int) -> Snapshot:
        dt = self._open(table, version)
        self._check_readable(table, dt)  # refuses deletion vectors / column mapping, as read does
        schema = T.StructType.fromJson(json.loads(dt.schema().to_json()))
        return Snapshot(table, dt.version(), schema, tuple(dt.file_uris()))

    # ------------------------------------------------------------ read
    def read(self, table: str, version: int) -> DataFrame:
        dt = self._open(table, version)
        self._check_readable(table, dt)
        schema = T.StructType.fromJson(json.loads(dt.schema().to_json()))
        files = dt.file_uris()
        spark = self.lake.spark
        if not files:
            return spark.createDataFrame([], schema)
        partition_cols = dt.metadata().partition_columns
        # Partition values live in directory names (hive style, as every Delta
        # writer without column mapping lays them out); basePath makes Spark
        # restore them, typed by the schema we pass.
        reader = spark.read.schema(schema)
        if partition_cols:
            root = self.path(table)
            off_layout = [f for f in files[:50] if not all(f"/{c}=" in f for c in partition_cols)]
            if off_layout:
                raise LakeError(f"{table}: data file {off_layout[0]} is not laid out in hive-style "
                                f"partition folders; this backend cannot restore its partition values")
            reader = reader.option("basePath", root)
        df = reader.parquet(*files)
        return df.select(*[f"`{f.name}`" for f in schema.fields])

    def read_arrow(self, table: str, version: int, columns: list[str] | None) -> pa.Table:
        dt = self._open(table, version)
        self._check_readable(table, dt)
        return dt.to_pyarrow_table(columns=columns)

    # ------------------------------------------------------------ crash recovery (writer lock held)
    def clean_leftovers(self, table: str) -> None:
        """Delete data files a crashed write moved in but never committed (from its journal), then its
        staging folders."""
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
                    remove_empty_parents(os.path.dirname(target), root)
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("%s: removed the leftovers of an interrupted write (staging folder%s)", table,
                    f", {removed} uncommitted data files" if removed else "")

    def restore(self, table: str, version: int, tag: str | None) -> None:
        """Delta RESTORE of ``table`` to ``version``, the commit tagged ``tag`` (a stage's own cleanup)."""
        from deltalake import DeltaTable
        from deltalake.transaction import CommitProperties

        metadata = {deltalog.RUN_TAG_KEY: tag} if tag else {}
        DeltaTable(self.path(table)).restore(version, commit_properties=CommitProperties(custom_metadata=metadata))

    # ------------------------------------------------------------ write (writer lock held)
    def _stage_parquet(self, df: DataFrame, table: str, partition_by: tuple[str, ...]) -> tuple[str, list[dict]]:
        """Spark (or, for an ArrowRows, the tasks) writes the frame's Parquet files into a staging folder;
        returns (folder, files)."""
        root = self.path(table)
        staging = os.path.join(root, "_staging", uuid.uuid4().hex)
        try:
            if isinstance(df, ArrowRows):
                # The tasks write their own files (arrow_rows); only the files they report are committed.
                os.makedirs(staging, exist_ok=True)
                return staging, [{"staged": os.path.join(staging, f["rel"]), "rel": f["rel"], "rows": f["rows"],
                                  "partition_values": _partition_values(f["rel"])}
                                 for f in arrow_rows.stage(df, partition_by, staging)]
            writer = df.write.mode("overwrite")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.parquet(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a failed task's partial files go with the write
            raise
        files = []
        for dirpath, _, names in os.walk(staging):
            for name in names:
                if not name.endswith(".parquet"):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, staging)
                files.append({"staged": full, "rel": rel, "partition_values": _partition_values(rel),
                              "rows": pq.read_metadata(full).num_rows})
        return staging, files

    def write(self, df: DataFrame, table: str, mode: str, partition_by: tuple[str, ...],
              where: Mapping[str, Any] | None, exists: bool, base_version: int, tag: str | None,
              description: str | None) -> WriteResult:
        """Commit ``df`` (checked by the Lake) to ``table``; ``base_version``: the newest version (-1: none)."""
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import AddAction, CommitProperties

        root = self.path(table)
        os.makedirs(root, exist_ok=True)
        t0 = time.time()
        staging, files = self._stage_parquet(df, table, partition_by)
        if mode == "replace" and where:
            stray = _outside(files, where)
            if stray:
                shutil.rmtree(staging, ignore_errors=True)
                raise LakeError(f"{table}: frame holds rows outside the replaced partitions ({where_to_sql(where)}): "
                                f"a file of partition {stray}; nothing was written")
        self.lake._checkpoint(f"staged:{table}")
        # The journal names the files about to move into the table folder: if the process dies before
        # the commit, the next writer deletes those no Delta version references.
        journal = staging + ".journal"
        with open(journal, "w", encoding="utf-8") as fh:
            json.dump({"base_version": base_version, "files": [f["rel"] for f in files]}, fh)
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
            # An existing table keeps its stored schema (nullability included: the Lake checked the frame's
            # names and types against it); a new one takes the frame's (an ArrowRows: its contract's).
            schema = Schema.from_json((self.schema(table, base_version) if exists else df.schema).json())
            metadata = {"gridpersona.mode": mode, "gridpersona.rows": str(sum(f["rows"] for f in files))}
            if tag:
                metadata[deltalog.RUN_TAG_KEY] = tag
            self.lake._checkpoint(f"moved:{table}")
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
        log.debug("%s: committed version %d (%d files, %.1fs)", table, version, len(files), time.time() - t0)
        return WriteResult(table, version, sum(f["rows"] for f in files), len(files))

    def _commit(self, table, exists, actions, mode, schema, partition_by, where, props, description) -> None:
        """The single atomic step of a write: one commit to the Delta log."""
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
                    filters.append((col, "in", [partition_value_str(v) for v in value]))
                else:
                    filters.append((col, "=", partition_value_str(value)))
            dt.create_write_transaction(actions, "overwrite", schema, partition_by=list(partition_by) or None,
                                        partition_filters=filters, commit_properties=props)

    # ------------------------------------------------------------ arrow path (generator, small tables)
    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader, mode: str, partition_by: list[str],
                    add_columns: bool) -> WriteResult:
        """Through delta-rs's own writer, holding the table's writer lock (see :meth:`Lake.write_arrow`)."""
        from deltalake import DeltaTable, write_deltalake
        from deltalake.transaction import CommitProperties

        lake = self.lake
        root = self.path(table)
        os.makedirs(os.path.dirname(root), exist_ok=True)
        if mode not in ("append", "overwrite"):
            raise LakeError(f"{table}: write_arrow supports append or overwrite, not {mode!r}")
        tag = lake._commit_tag(table)
        props = CommitProperties(custom_metadata={deltalog.RUN_TAG_KEY: tag}) if tag else None
        with lake._writing(table):
            schema_mode = "overwrite" if mode == "overwrite" else None
            if mode == "append" and lake._exists_physical(table):
                expected = lake.schema(table, lake._latest_physical(table))
                got = arrow_to_spark_schema(data.schema)
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
            lake._scope.written[table] = version
        # A streamed reader is spent: its rows are counted from the commit's file statistics.
        adds = deltalog.commit_adds(root, version)
        rows = data.num_rows if isinstance(data, pa.Table) else sum(
            int(json.loads(a.get("stats") or "{}").get("numRecords", 0)) for a in adds)
        return WriteResult(table, version, rows, len(adds))

