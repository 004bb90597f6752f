"""Every lake table under its ``layer.table`` name in Spark's SQL catalog.

Analysts write ``SELECT ... FROM gold.customer_segments``; the same names work in
``gridpersona sql`` and through the Thrift server (``gridpersona sql-server``), so
the names must be real catalog objects, not temporary views (Spark allows temporary
views only under a single-part name or ``global_temp``, and a permanent view may not
refer to a temporary one).

How a table is registered depends on the lake backend:

- ``delta-spark``: ``CREATE TABLE layer.table USING delta LOCATION '<path>'``; Delta
  resolves the latest snapshot itself (the same statement registers the tables in a
  cluster's Hive metastore or Unity Catalog).
- ``deltalake`` (no Delta jars): a table folder holds the files of every version
  still kept for time travel, so a plain Parquet table over it would return
  replaced rows. Instead the snapshot's live files (from the Delta log, via
  delta-rs, exactly what ``Lake.read`` reads) are hard-linked into a snapshot folder
  ``<table>/_sql_snapshot/v<version>/`` with the same hive-style partition folders;
  a Parquet table over that folder holds exactly the snapshot's rows, with Spark's
  native scan and partition pruning. Hard links cost no space and keep the file
  alive even if a later vacuum removes the original. Folders starting with ``_``
  are ignored by Delta readers and by Spark.

On top of the physical table sits a permanent view ``layer.table`` with the table's
column order (Spark moves partition columns last), the contract's column comments,
and, for ``bronze.customer_archive``, without the PII columns (name, phone, address)
unless ``allow_pii`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Iterable

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from gridpersona.lake import Lake, LakeError, lake_uri_to_path
from gridpersona.schemas import pii_columns, spec_for

log = logging.getLogger("gridpersona")

# Database holding the physical snapshot tables the `layer.table` views select from.
SNAPSHOT_DB = "gridpersona_snapshots"
SNAPSHOT_DIR = "_sql_snapshot"
CATALOG_DIR = "_sql_catalog"
# Snapshot folders kept per table (a running sql-server may still read an older one).
KEEP_SNAPSHOTS = 3

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Registered:
    name: str  # layer.table
    version: int
    columns: tuple[str, ...]  # as the view shows them
    hidden_pii: tuple[str, ...]  # columns left out of the view


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ddl_columns(spark: SparkSession, fields: list[T.StructField]) -> str:
    """Column list for CREATE TABLE in Spark's own DDL rendering (quotes nested names correctly)."""
    nullable = T.StructType([T.StructField(f.name, f.dataType, True) for f in fields])
    return spark._jvm.org.apache.spark.sql.types.DataType.fromJson(nullable.json()).toDDL()


def _link_snapshot(lake: Lake, table: str, version: int, files: list[str]) -> str:
    """Hard-link the snapshot's live files into <table>/_sql_snapshot/v<version>/; returns that folder."""
    root = lake.path(table)
    base = os.path.join(root, SNAPSHOT_DIR)
    final = os.path.join(base, f"v{version}")
    if os.path.isdir(final):
        return final
    tmp = os.path.join(base, f".tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        for uri in files:
            src = lake_uri_to_path(uri)
            rel = os.path.relpath(src, root)
            if rel.startswith(".."):
                raise LakeError(f"{table}: data file {src} lies outside the table folder {root}; "
                                f"cannot register it for SQL")
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                # File systems without hard links: a symbolic link reads the same while the file lives.
                os.symlink(src, dst)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process built the same snapshot folder first; theirs is identical.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune_snapshots(base, keep=KEEP_SNAPSHOTS)
    return final


def _prune_snapshots(base: str, keep: int) -> None:
    versions = sorted((int(n[1:]) for n in os.listdir(base) if re.fullmatch(r"v\d+", n)), reverse=True)
    for v in versions[keep:]:
        shutil.rmtree(os.path.join(base, f"v{v}"), ignore_errors=True)


def _ensure_database(spark: SparkSession, lake: Lake, db: str) -> None:
    if spark.catalog.databaseExists(db):
        return
    # A session-local catalog keeps its (empty) database folders beside the lake, not in the working directory.
    where = "" if lake.backend == "delta-spark" else f" LOCATION {_sql_string(os.path.join(lake.root, CATALOG_DIR, db + '.db'))}"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(db)}{where}")


def _physical_name(table: str, version: int | None) -> str:
    layer, name = table.split(".", 1)
    return f"{SNAPSHOT_DB}.{layer}__{name}" + ("" if version is None else f"__v{version}")


def register_table(spark: SparkSession, lake: Lake, table: str, allow_pii: bool = False) -> Registered:
    """Create (or refresh) the catalog view ``table`` over the table's latest snapshot."""
    layer, name = table.split(".", 1)
    if not (_IDENT.match(layer) and _IDENT.match(name)):
        raise LakeError(f"{table}: not a valid SQL name (letters, digits, underscores)")
    _ensure_database(spark, lake, layer)
    _ensure_database(spark, lake, SNAPSHOT_DB)
    if lake.backend == "delta-spark":
        version = lake.version(table)
        physical = _physical_name(table, None)
        spark.sql(f"DROP TABLE IF EXISTS {physical}")
        spark.sql(f"CREATE TABLE {physical} USING delta LOCATION {_sql_string(lake.path(table))}")
        schema = spark.table(physical).schema
    else:
        dt = lake._delta_table(table)
        lake._check_readable(table, dt)  # refuses deletion vectors / column mapping, as Lake.read does
        version = dt.version()
        schema = T.StructType.fromJson(json.loads(dt.schema().to_json()))
        partition_cols = list(dt.metadata().partition_columns)
        folder = _link_snapshot(lake, table, version, dt.file_uris())
        physical = _physical_name(table, version)
        by_name = {f.name: f for f in schema.fields}
        # Spark stores partition columns last; the view restores the table's order.
        cols = [f for f in schema.fields if f.name not in partition_cols] + [by_name[c] for c in partition_cols]
        col_sql = _ddl_columns(spark, cols)
        part_sql = f" PARTITIONED BY ({', '.join(_quote(c) for c in partition_cols)})" if partition_cols else ""
        if not spark.catalog.tableExists(physical):
            spark.sql(f"CREATE TABLE {physical} ({col_sql}) USING parquet{part_sql} LOCATION {_sql_string(folder)}")
            if partition_cols:
                # The catalog tracks partitions of a partitioned table: discover the snapshot's folders.
                spark.sql(f"ALTER TABLE {physical} RECOVER PARTITIONS")
    hidden = tuple(sorted(pii_columns() & {f.name for f in schema.fields})) if not allow_pii else ()
    shown = [f for f in schema.fields if f.name not in hidden]
    spec = spec_for(table)
    notes = {c.name: c.description for c in spec.columns} if spec else {}
    view_cols = ", ".join(_quote(f.name) + (f" COMMENT {_sql_string(notes[f.name])}" if f.name in notes else "")
                          for f in shown)
    comment = f"{spec.description} " if spec else ""
    comment += f"Delta version {version} at {lake.path(table)}."
    if hidden:
        comment += f" PII columns {', '.join(hidden)} hidden (allow_pii)."
    spark.sql(f"CREATE OR REPLACE VIEW {_quote(layer)}.{_quote(name)} ({view_cols}) COMMENT {_sql_string(comment)} "
              f"AS SELECT {', '.join(_quote(f.name) for f in shown)} FROM {physical}")
    if lake.backend != "delta-spark":
        _drop_older_physical(spark, table, version)
    return Registered(table, version, tuple(f.name for f in shown), hidden)


def _drop_older_physical(spark: SparkSession, table: str, version: int) -> None:
    layer, name = table.split(".", 1)
    prefix = f"{layer}__{name}__v"
    for row in spark.sql(f"SHOW TABLES IN {SNAPSHOT_DB} LIKE '{prefix}*'").collect():
        if row["tableName"] != f"{prefix}{version}":
            spark.sql(f"DROP TABLE IF EXISTS {SNAPSHOT_DB}.{_quote(row['tableName'])}")


def register_lake(spark: SparkSession, lake: Lake, tables: Iterable[str] | None = None,
                  allow_pii: bool = False) -> list[Registered]:
    """Register every lake table (or ``tables``) under its ``layer.table`` name; returns what was registered."""
    names = list(tables) if tables is not None else lake.list_tables()
    return [register_table(spark, lake, t, allow_pii=allow_pii) for t in names]


def refresh_lake(spark: SparkSession, lake: Lake, known: dict[str, int], allow_pii: bool = False) -> list[Registered]:
    """Re-register tables that are new or whose Delta version moved past ``known`` (updated in place)."""
    changed = []
    for table in lake.list_tables():
        if known.get(table) != lake.version(table):
            reg = register_table(spark, lake, table, allow_pii=allow_pii)
            known[table] = reg.version
            changed.append(reg)
    return changed
