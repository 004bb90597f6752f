"""The cluster backend (``lake.backend: delta-spark``): Spark's own Delta source, ``format("delta")``.

Needs the Delta jars on the Spark class path and the session conf in :data:`SESSION_CONF`
(:func:`gridpersona.lake.spark_conf` hands it to :func:`gridpersona.session.build_spark`). Reads, writes,
history, partition columns and RESTORE go through Spark; the log-level reads that need no Spark job
(table info, Arrow reads of small tables, the run log) stay with delta-rs, inherited from
:class:`~gridpersona.lake.deltars.DeltaRsBackend`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from gridpersona.lake import deltalog
from gridpersona.lake.common import Snapshot, WriteResult, where_to_sql
from gridpersona.lake.deltars import DeltaRsBackend

SESSION_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class DeltaSparkBackend(DeltaRsBackend):
    # Delta's replaceWhere is asked to replace; the Lake checks the frame's rows against it first.
    checks_replace_partitions = False
    name = "delta-spark"
    # A cluster's lake: the session's SQL catalog is the cluster's own, nothing is kept beside the lake.
    embedded = False

    def _sql(self, statement: str):
        return self.lake.spark.sql(statement)

    def latest_version(self, table: str) -> int:
        return int(self._history(table, 1)[0]["version"])

    def history(self, table: str, limit: int | None) -> list[dict]:
        return self._history(table, limit)

    def _history(self, table: str, limit: int | None) -> list[dict]:
        self.lake._require(table)
        sql = f"DESCRIBE HISTORY delta.`{self.path(table)}`" + (f" LIMIT {int(limit)}" if limit else "")
        return [
            {"version": r["version"], "timestamp": int(r["timestamp"].timestamp() * 1000), "operation": r["operation"],
             "parameters": r["operationParameters"], "metrics": r["operationMetrics"], "user_metadata": r["userMetadata"]}
            for r in self._sql(sql).collect()
        ]

    def partition_columns(self, table: str, version: int | None) -> tuple[str, ...]:
        rows = self._sql(f"DESCRIBE DETAIL delta.`{self.path(table)}`").collect()
        return tuple(rows[0]["partitionColumns"])

    def log_partition_counts(self, table: str, column: str, version: int) -> dict[Any, int | None] | None:
        return None  # counted by Spark (Lake.partition_counts) or not at all (Lake.partition_rows)

    def schema(self, table: str, version: int) -> T.StructType:
        return self.read(table, version).schema

    def snapshot(self, table: str, version: int) -> Snapshot:
        # Spark resolves the version from the Delta log itself: nothing is copied or linked.
        source = f"delta.{_quote(self.path(table))} VERSION AS OF {int(version)}"
        return Snapshot(table, version, self._sql(f"SELECT * FROM {source}").schema, (), sql_source=source)

    def read(self, table: str, version: int) -> DataFrame:
        return self.lake.spark.read.format("delta").option("versionAsOf", version).load(self.path(table))

    def restore(self, table: str, version: int, tag: str | None) -> None:
        self._sql(f"RESTORE TABLE delta.`{self.path(table)}` TO VERSION AS OF {version}")

    def write(self, df: DataFrame, table: str, mode: str, partition_by: tuple[str, ...],
              where: Mapping[str, Any] | None, exists: bool, base_version: int, tag: str | None,
              description: str | None) -> WriteResult:
        writer = df.write.format("delta")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if mode == "replace":
            writer = writer.mode("overwrite").option("replaceWhere", where_to_sql(where))
        else:
            writer = writer.mode(mode)
        if tag:
            writer = writer.option("userMetadata", f"{deltalog.RUN_TAG_KEY}={tag}")
        writer.save(self.path(table))
        latest = self._history(table, 1)[0]
        metrics = latest.get("metrics") or {}
        return WriteResult(table, int(latest["version"]), int(metrics.get("numOutputRows", 0)),
                           int(metrics.get("numFiles", 0)))

    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader, mode: str, partition_by: list[str],
                    add_columns: bool) -> WriteResult:
        """Through a Spark frame and :meth:`Lake.write` (lock, checks and stage bookkeeping included)."""
        arrow = data.read_all() if isinstance(data, pa.RecordBatchReader) else data
        df = self.lake.spark.createDataFrame(arrow)
        return self.lake.write(df, table, mode=mode, partition_by=partition_by)
