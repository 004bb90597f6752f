"""Every lake table under its ``layer.table`` name in Spark's SQL catalog, as a read-only view.

Analysts write ``SELECT ... FROM gold.customer_segments``; the same names work in
``gridpersona sql`` and through the Thrift server (``gridpersona sql-server``), so
the names must be real catalog objects, not temporary views (Spark allows temporary
views only under a single-part name or ``global_temp``).

Each name is a permanent view whose body reads one Delta snapshot by path, and
nothing else is in the catalog: no physical table a statement could write into or
read around the view. The SQL guard (:mod:`gridpersona.analyst.guard`) lets analysts read
data only underneath these views.

How a version is read is the lake's answer (:meth:`gridpersona.lake.Lake.snapshot`):

- a Spark session without Delta (the embedded backend): a table folder holds the files of every
  version still kept for time travel, so reading the folder would return replaced
  rows. The snapshot's live files (from the Delta log, via delta-rs, exactly what
  ``Lake.read`` reads) are hard-linked into ``<table>/_sql_snapshot/v<version>/``
  with the same hive-style partition folders, and the view is
  ``SELECT CAST(col AS type) ... FROM parquet.`<that folder>```. The folder is
  compared with the Delta log's file list at every registration (names and inodes)
  and rebuilt if anything differs, so a tampered folder does not survive. Hard links
  cost no space and keep a file alive after a vacuum. Folders starting with ``_`` are
  ignored by Delta readers and by Spark.
- a Spark session with Delta (delta-spark): ``SELECT ... FROM delta.`<path>` VERSION AS OF <n>``.

PII: the contract's PII columns (:func:`gridpersona.contracts.pii_columns`) never
appear in the ``layer.table`` view; ``bronze.ingest_rejects.row_json`` of a table
with PII shows only that table's non-PII contract columns. The full rows are in
``pii.<table>`` views, which the guard lets only the pii role read.
"""

from __future__ import annotations

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
from gridpersona.session import session_conf
from gridpersona.contracts import all_specs, pii_columns, spec_for
from gridpersona.contracts.bronze import INGEST_REJECTS

log = logging.getLogger("gridpersona")

SNAPSHOT_DIR = "_sql_snapshot"
CATALOG_DIR = "_sql_catalog"
PII_DB = "pii"
# Snapshot folders kept per table (a running sql-server may still read an older one).
KEEP_SNAPSHOTS = 3
# View bodies capture the SQL confs in force when they are created: partition folder values are read as
# text and cast to the contract type (inference would turn "007" into 7), and files written before a
# column was added still read (as null) under the table's full schema.
_VIEW_CONF = {"spark.sql.sources.partitionColumnTypeInference.enabled": "false",
              "spark.sql.parquet.mergeSchema": "true"}
MASK = "***"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# (JVM session, table folder) -> what was registered there: a table whose Delta version and snapshot folder are
# unchanged keeps its views (re-creating them per statement costs a schema read of every table).
_REGISTERED: dict[tuple[int, str], tuple["Registered", str | None]] = {}


@dataclass(frozen=True)
class Registered:
    name: str  # layer.table
    version: int
    columns: tuple[str, ...]  # as the view shows them
    hidden_pii: tuple[str, ...]  # columns left out of the view (in pii.<table> for the pii role)
    pii_view: bool = False  # pii.<table> registered too


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_types(spark: SparkSession, schema: T.StructType) -> list[str]:
    """Each field's type in Spark SQL syntax (nested names quoted correctly), for CAST."""
    jschema = spark._jvm.org.apache.spark.sql.types.DataType.fromJson(schema.json())
    return [f.dataType().sql() for f in jschema.fields()]


def _expected_files(lake: Lake, table: str, files: list[str]) -> dict[str, str]:
    """Relative path inside the snapshot folder -> the live data file it links to."""
    root = lake.path(table)
    out = {}
    for uri in files:
        src = lake_uri_to_path(uri)
        rel = os.path.relpath(src, root)
        if rel.startswith(".."):
            raise LakeError(f"{table}: data file {src} lies outside the table folder {root}; cannot register it for SQL")
        out[rel] = src
    return out


def _folder_matches(folder: str, expected: dict[str, str]) -> bool:
    """True when ``folder`` holds exactly the expected files, each the very file (inode) of the snapshot."""
    found = set()
    for dirpath, _, names in os.walk(folder):
        for n in names:
            found.add(os.path.relpath(os.path.join(dirpath, n), folder))
    if found != set(expected):
        return False
    try:
        for rel, src in expected.items():
            a, b = os.stat(os.path.join(folder, rel)), os.stat(src)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                return False
    except OSError:
        return False
    return True


def _link_snapshot(lake: Lake, table: str, version: int, files: list[str]) -> str:
    """<table>/_sql_snapshot/v<version>/ holding exactly the snapshot's live files (verified, else rebuilt)."""
    expected = _expected_files(lake, table, files)
    base = os.path.join(lake.path(table), SNAPSHOT_DIR)
    final = os.path.join(base, f"v{version}")
    if os.path.isdir(final) and _folder_matches(final, expected):
        return final
    if os.path.isdir(final):
        log.warning("%s: the SQL snapshot folder %s differs from Delta version %d's files; rebuilding it",
                    table, final, version)
    tmp = os.path.join(base, f".tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        for rel, src in expected.items():
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                # File systems without hard links: a symbolic link reads the same while the file lives.
                os.symlink(src, dst)
        if os.path.isdir(final):
            stale = os.path.join(base, f".stale-{uuid.uuid4().hex}")
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
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
    where = f" LOCATION {_sql_string(os.path.join(lake.root, CATALOG_DIR, db + '.db'))}" if lake.embedded else ""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(db)}{where}")


def _masked_row_json() -> str:
    """row_json of bronze.ingest_rejects for analysts: for a target table with PII columns, only the values
    of its non-PII contract columns (any other key, a mapped source name or a malformed line, is masked)."""
    cases = []
    for name, spec in all_specs().items():
        if not any(c.pii for c in spec.columns):
            continue
        keep = ", ".join(_sql_string(c.name) for c in spec.columns if not c.pii)
        cases.append(f"WHEN target_table = {_sql_string(name)} THEN to_json(transform_values("
                     f"from_json(row_json, 'map<string,string>'), "
                     f"(k, v) -> CASE WHEN k IN ({keep}) OR v IS NULL THEN v ELSE {_sql_string(MASK)} END))")
    return f"CASE {' '.join(cases)} ELSE row_json END" if cases else "row_json"


def _create_view(spark: SparkSession, name: str, columns: list[tuple[str, str]], source: str,
                 notes: dict[str, str], comment: str) -> None:
    """CREATE OR REPLACE VIEW name (col COMMENT ...) AS SELECT <expr> AS col, ... FROM source.

    ``columns`` are (column, expression) over ``source``'s columns.
    """
    view_cols = ", ".join(_quote(c) + (f" COMMENT {_sql_string(notes[c])}" if c in notes else "") for c, _ in columns)
    select = ", ".join(f"{expr} AS {_quote(c)}" for c, expr in columns)
    body = f"SELECT {select} FROM {source}"
    with session_conf(spark, _VIEW_CONF):
        spark.sql(f"CREATE OR REPLACE VIEW {name} ({view_cols}) COMMENT {_sql_string(comment)} AS {body}")


def _allow(spark: SparkSession, name: str, pii_only: bool) -> None:
    from gridpersona.analyst.guard import allow_view

    try:
        allow_view(spark, name, pii_only)
    except Exception:  # py4j: no guard in this session (the pipeline's); nothing enforces views there
        log.debug("no SQL guard in this session; %s registered without it", name)


def register_table(spark: SparkSession, lake: Lake, table: str) -> Registered:
    """Create (or refresh) view ``table`` (no PII columns) and, for a table with PII, ``pii.<name>`` (all)."""
    layer, name = table.split(".", 1)
    if not (_IDENT.match(layer) and _IDENT.match(name)) or layer == PII_DB:
        raise LakeError(f"{table}: not a valid SQL name (letters, digits, underscores; layer not {PII_DB!r})")
    version = lake.version(table)
    key = (spark._jsparkSession.hashCode(), lake.path(table))
    cached = _REGISTERED.get(key)
    if cached and cached[0].version == version and _still_registered(spark, lake, table, cached):
        return cached[0]
    _ensure_database(spark, lake, layer)
    folder = None
    snap = lake.snapshot(table, version)
    version, schema, source = snap.version, snap.schema, snap.sql_source
    if source is None:
        folder = _link_snapshot(lake, table, version, list(snap.files)) if snap.files else None
        source = f"parquet.{_quote(folder)}" if folder else None
    types = _sql_types(spark, schema)
    if source is None:
        # A table without data files (e.g. no campaign ran yet): typed columns and no rows, so the view
        # has the table's columns and every expression over them resolves.
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {_quote(f.name)}" for f, t in zip(schema.fields, types))
        source = f"(SELECT {nulls}) AS no_rows WHERE false"
    exprs = {f.name: f"CAST({_quote(f.name)} AS {t})" for f, t in zip(schema.fields, types)}
    pii = pii_columns() & set(exprs)
    spec = spec_for(table)
    notes = {c.name: c.description for c in spec.columns} if spec else {}
    comment = (f"{spec.description} " if spec else "") + f"Delta version {version} at {lake.path(table)}."
    shown = [(c, e) for c, e in exprs.items() if c not in pii]
    has_pii = bool(pii)
    if table == INGEST_REJECTS.name and "row_json" in exprs:
        shown = [(c, _masked_row_json() if c == "row_json" else e) for c, e in shown]
        has_pii = True
    if pii:
        comment_shown = comment + f" PII columns {', '.join(sorted(pii))} only in {PII_DB}.{name} (pii role)."
    elif has_pii:
        comment_shown = comment + f" row_json of tables with PII masked; whole in {PII_DB}.{name} (pii role)."
    else:
        comment_shown = comment
    _create_view(spark, f"{_quote(layer)}.{_quote(name)}", shown, source, notes, comment_shown)
    _allow(spark, table, pii_only=False)
    if has_pii:
        _ensure_database(spark, lake, PII_DB)
        _create_view(spark, f"{_quote(PII_DB)}.{_quote(name)}", list(exprs.items()), source, notes,
                     comment + " Customer PII: readable by the pii role only.")
        _allow(spark, f"{PII_DB}.{name}", pii_only=True)
    reg = Registered(table, version, tuple(c for c, _ in shown), tuple(sorted(pii)), has_pii)
    _REGISTERED[key] = (reg, folder)
    return reg


def _still_registered(spark: SparkSession, lake: Lake, table: str, cached: tuple[Registered, str | None]) -> bool:
    """The views exist and the snapshot folder still holds exactly the Delta version's files."""
    reg, folder = cached
    layer, name = table.split(".", 1)
    views = [f"{layer}.{name}"] + ([f"{PII_DB}.{name}"] if reg.pii_view else [])
    if not all(spark.catalog.tableExists(v) for v in views):
        return False
    if folder is None:
        return True
    return _folder_matches(folder, _expected_files(lake, table, list(lake.snapshot(table, reg.version).files)))


def register_lake(spark: SparkSession, lake: Lake, tables: Iterable[str] | None = None) -> list[Registered]:
    """Register every lake table (or ``tables``) under its ``layer.table`` name; returns what was registered."""
    names = list(tables) if tables is not None else lake.list_tables()
    return [register_table(spark, lake, t) for t in names]


def refresh_lake(spark: SparkSession, lake: Lake, known: dict[str, int]) -> list[Registered]:
    """Re-register tables that are new or whose Delta version moved past ``known`` (updated in place)."""
    changed = []
    for table in lake.list_tables():
        if known.get(table) != lake.version(table):
            reg = register_table(spark, lake, table)
            known[table] = reg.version
            changed.append(reg)
    return changed
