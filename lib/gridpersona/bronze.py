"""The input contract guard for bronze tables.

Bronze tables are where outside data enters the pipeline, so their contracts
(``schemas.BRONZE``) are enforced at two grains:

- table grain: :func:`read_bronze` reads a bronze table and refuses it when its
  schema breaks the contract, naming table and column;
- row grain: :func:`validate_rows` (and its two halves :func:`flag_rows` and
  :func:`split_flagged`) sort rows into valid ones and rejects with a reason.

Only ``bronze.ami_interval`` and ``bronze.customer_archive`` (with its required
columns) must exist. Every other bronze table is optional (``OPTIONAL_TABLES``)
and so is every nullable column: :func:`read_bronze_or_empty` reads an absent
optional table as an empty frame of its contract, :func:`read_bronze` reads an
absent nullable column as nulls, and :func:`absent_inputs_note` says which, in
one line, for the run to log once.

The row-level functions are pure ``DataFrame -> DataFrame``: no I/O, no session.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.lake import Lake, LakeError, SchemaMismatchError, check_schema
from gridpersona.schemas import BRONZE, TableSpec

REASON = "reason"
ROW_JSON = "row_json"

# Columns whose value is a function of another column of the same row:
# table -> (local date column, instant column). The date is the local calendar
# date of the instant in `ami.time_zone`.
LOCAL_DATE_OF: dict[str, tuple[str, str]] = {"bronze.ami_interval": ("date", "ts")}

_MICROS_PER_DAY = 86_400_000_000

# Inputs the pipeline runs without: absent means empty (no bills, no contacts, no responses), never a guess.
REQUIRED_TABLES = ("bronze.ami_interval", "bronze.customer_archive")
OPTIONAL_TABLES = tuple(t for t in BRONZE if t not in REQUIRED_TABLES)


class UnknownTableError(LakeError):
    """A table name that is not one of the bronze contracts."""


def bronze_spec(table: str) -> TableSpec:
    """The contract of bronze ``table``; UnknownTableError listing the valid names otherwise."""
    spec = BRONZE.get(table)
    if spec is None:
        raise UnknownTableError(
            f"{table!r} is not a bronze table; valid bronze tables: {', '.join(sorted(BRONZE))}"
        )
    return spec


def _contract_text(spec: TableSpec) -> str:
    return ", ".join(f"{c.name} {c.dtype.simpleString()}" for c in spec.columns)


def check_contract(table: str, schema: T.StructType) -> None:
    """Raise SchemaMismatchError when ``schema`` breaks the contract of bronze ``table``.

    The message names the table, each offending column (expected vs got) and
    what to do about it.
    """
    spec = bronze_spec(table)
    try:
        check_schema(table, spec.schema, schema)
    except SchemaMismatchError as exc:
        raise SchemaMismatchError(
            f"{exc}. The table breaks its input contract ({_contract_text(spec)}). "
            f"Fix the producer, or rewrite the table from its source files with "
            f"`gridpersona ingest {table}` (which casts to the contract) into an empty table."
        ) from None


def _absent_nullable(spec: TableSpec, stored: T.StructType) -> list[str]:
    """Nullable contract columns that ``stored`` lacks (read as null); required ones are never in this list."""
    have = set(stored.fieldNames())
    return [c.name for c in spec.columns if c.nullable and c.name not in have]


def read_bronze(lake: Lake, table: str) -> DataFrame:
    """Read bronze ``table`` through ``lake``, checked against its contract.

    Returns the latest snapshot with the contract's columns in contract order;
    a nullable contract column the stored table lacks reads as nulls of its
    type (unknown, not a value). Raises UnknownTableError for a name that is
    not a bronze table and SchemaMismatchError (naming table and column) when
    a required column is missing or a column has another type.
    """
    spec = bronze_spec(table)
    df = lake.read(table)
    dtypes = {c.name: c.dtype for c in spec.columns}
    for name in _absent_nullable(spec, df.schema):
        df = df.withColumn(name, F.lit(None).cast(dtypes[name]))
    check_contract(table, df.schema)
    return df.select(*[F.col(f"`{name}`") for name in spec.column_names])


def empty_bronze(spark: SparkSession, table: str) -> DataFrame:
    """An empty frame with the contract schema of bronze ``table``."""
    return spark.createDataFrame([], bronze_spec(table).schema)


def read_bronze_or_empty(lake: Lake, table: str) -> DataFrame:
    """An optional bronze table (``OPTIONAL_TABLES``) via :func:`read_bronze`, or an empty frame of its
    contract when the lake has no such table. A required table is always read (and fails when absent)."""
    if table in REQUIRED_TABLES or lake.exists(table):
        return read_bronze(lake, table)
    return empty_bronze(lake.spark, table)


def create_empty_bronze(lake: Lake, table: str) -> int | None:
    """Create bronze ``table`` as an empty table of its contract (columns, types, partitioning).

    Returns the new version (0), or None when the table already exists and keeps its contract (it is
    left as it is). Raises UnknownTableError for a name that is not a bronze table and
    SchemaMismatchError when an existing table breaks the contract.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    spec = bronze_spec(table)
    if lake.exists(table):
        check_contract(table, lake.schema(table))
        return None
    empty = to_arrow_schema(spec.schema, timezone="UTC").empty_table()
    return lake.write_arrow(table, empty, mode="overwrite", partition_by=spec.partition_by)


def absent_inputs(lake: Lake) -> tuple[list[str], dict[str, list[str]]]:
    """``(absent optional tables, {present bronze table: nullable contract columns it lacks})``, from
    the tables' schemas only (no Spark job)."""
    tables = [t for t in OPTIONAL_TABLES if not lake.exists(t)]
    columns: dict[str, list[str]] = {}
    for table, spec in BRONZE.items():
        if lake.exists(table):
            stored = lake.schema(table)
            missing = _absent_nullable(spec, stored)
            if missing:
                columns[table] = missing
    return tables, columns


def absent_inputs_note(lake: Lake) -> str | None:
    """One line naming the optional inputs the lake lacks, or None when it has them all."""
    tables, columns = absent_inputs(lake)
    parts = []
    if tables:
        parts.append("optional inputs absent, read as empty: " + ", ".join(tables))
    if columns:
        parts.append("optional columns absent, read as null: "
                     + "; ".join(f"{t} ({', '.join(cols)})" for t, cols in columns.items()))
    return "; ".join(parts) or None


def local_date(ts: Column, time_zone: str) -> Column:
    """Local calendar date of the instant ``ts`` in ``time_zone``.

    Independent of ``spark.sql.session.timeZone``: ``from_utc_timestamp``
    shifts the epoch micros by the zone's offset at that instant, and the day
    is cut from the shifted micros arithmetically (``to_date`` would cut it in
    the session zone).
    """
    shifted = F.unix_micros(F.from_utc_timestamp(ts, time_zone))
    return F.date_from_unix_date(F.floor(shifted / F.lit(_MICROS_PER_DAY)).cast("int"))


def _is_missing(col: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        # A blank identifier is as missing as a null one.
        return col.isNull() | (F.trim(col) == F.lit(""))
    return col.isNull()


def flag_rows(df: DataFrame, spec: TableSpec, time_zone: str, *, max_key_chars: int | None = None,
              upper_bounds: dict[str, float] | None = None) -> DataFrame:
    """``df`` plus a ``reason`` column: null for valid rows, else the first failing check.

    Checks, in order: a reason already in ``df.reason`` (e.g. a cast failure
    found upstream), ``missing_required:<col>`` for each non-nullable column
    in contract order, ``key_too_long:<col>`` for an identifier
    (``spec.identifiers``) longer than ``max_key_chars``, ``non_finite:<col>``
    for NaN or an infinity in a floating-point column, ``negative:<col>`` below
    zero in a ``non_negative`` column, ``absurd_value:<col>`` above
    ``upper_bounds[col]``, ``invalid_value:<col>`` for values outside
    ``spec.allowed_values``, and ``date_mismatch`` when a local date column
    (``LOCAL_DATE_OF``) differs from the local date of its instant in
    ``time_zone``. ``df`` must hold every contract column; other columns pass
    through unchanged.
    """
    missing = [c for c in spec.column_names if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"{spec.name}: cannot validate rows, frame lacks contract column(s) {missing}")
    dtypes = {c.name: c.dtype for c in spec.columns}
    checks: list[Column] = []
    for name in spec.required:
        checks.append(F.when(_is_missing(F.col(f"`{name}`"), dtypes[name]), F.lit(f"missing_required:{name}")))
    checks += _value_checks(spec, max_key_chars, upper_bounds or {})
    for name, allowed in spec.allowed_values.items():
        col = F.col(f"`{name}`")
        checks.append(F.when(col.isNotNull() & ~col.isin(list(allowed)), F.lit(f"invalid_value:{name}")))
    if spec.name in LOCAL_DATE_OF:
        date_col, ts_col = LOCAL_DATE_OF[spec.name]
        date, ts = F.col(f"`{date_col}`"), F.col(f"`{ts_col}`")
        mismatch = date.isNotNull() & ts.isNotNull() & (date != local_date(ts, time_zone))
        checks.append(F.when(mismatch, F.lit("date_mismatch")))
    if REASON in df.columns:
        checks.insert(0, F.col(REASON))
    reason = F.coalesce(*checks) if checks else F.lit(None)
    return df.withColumn(REASON, reason.cast("string"))


def _value_checks(spec: TableSpec, max_key_chars: int | None, upper_bounds: dict[str, float]) -> list[Column]:
    """Values that cannot be true whatever the source says: over-long keys, non-finite, negative, absurd."""
    checks: list[Column] = []
    if max_key_chars is not None:
        for name in spec.identifiers:
            checks.append(F.when(F.length(F.col(f"`{name}`")) > max_key_chars, F.lit(f"key_too_long:{name}")))
    fractional = set(spec.fractional)
    for c in spec.columns:
        col = F.col(f"`{c.name}`")
        if c.name in fractional:
            # NaN compares equal to itself in Spark SQL, so isnan is the test, not col != col.
            checks.append(F.when(F.isnan(col) | col.isin(float("inf"), float("-inf")), F.lit(f"non_finite:{c.name}")))
        if c.non_negative:
            checks.append(F.when(col < 0, F.lit(f"negative:{c.name}")))
        if c.name in upper_bounds:
            checks.append(F.when(col > F.lit(upper_bounds[c.name]), F.lit(f"absurd_value:{c.name}")))
    return checks


def flag_duplicate_keys(flagged: DataFrame, spec: TableSpec, stored_keys: DataFrame | None = None) -> DataFrame:
    """Rows of ``flagged`` (from :func:`flag_rows`) still valid whose key repeats get ``reason = duplicate_key``.

    A key is a duplicate when two or more valid rows of ``flagged`` share it
    (every one of them is flagged: nothing says which is right) or when it is
    in ``stored_keys`` (the key columns of the rows already stored; None: no
    check against them). Rows already rejected keep their reason and play no
    part. ``spec.keys`` must be non-empty.
    """
    keys = [F.col(f"`{k}`") for k in spec.keys]
    valid = F.col(REASON).isNull()
    # Only valid rows count, and key columns are required: a null key never makes a duplicate.
    seen = F.count(F.when(valid, F.lit(1))).over(Window.partitionBy(*keys))
    out = flagged.withColumn(REASON, F.when(valid & (seen > 1), F.lit("duplicate_key")).otherwise(F.col(REASON)))
    if stored_keys is not None:
        marker = "__stored_key"
        stored = stored_keys.select(*keys).distinct().withColumn(marker, F.lit(True))
        out = (out.join(stored, list(spec.keys), "left")
               .withColumn(REASON, F.when(F.col(REASON).isNull() & F.col(marker), F.lit("duplicate_key"))
                           .otherwise(F.col(REASON)))
               .drop(marker))
    return out.select(*flagged.columns)


def split_flagged(flagged: DataFrame, spec: TableSpec) -> tuple[DataFrame, DataFrame]:
    """Split a frame from :func:`flag_rows` into ``(valid_df, rejects_df)``.

    ``valid_df`` holds the contract columns in contract order. ``rejects_df``
    keeps every column of ``flagged`` plus ``row_json``: an existing
    ``row_json`` column (the row as read, set upstream) or else the JSON of
    the row's contract columns.
    """
    valid = flagged.filter(F.col(REASON).isNull()).select(*[F.col(f"`{c}`") for c in spec.column_names])
    rejects = flagged.filter(F.col(REASON).isNotNull())
    if ROW_JSON not in flagged.columns:
        as_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in spec.column_names]), {"ignoreNullFields": "false"})
        rejects = rejects.withColumn(ROW_JSON, as_json)
    return valid, rejects


def validate_rows(df: DataFrame, spec: TableSpec, time_zone: str) -> tuple[DataFrame, DataFrame]:
    """Row-level contract checks: ``(valid_df, rejects_df)``; every row lands in exactly one.

    See :func:`flag_rows` for the checks and reasons and :func:`split_flagged`
    for the two frames. Both are lazy views of ``df``; a caller that consumes
    both should persist ``flag_rows(...)`` and split that (as ingest does).
    """
    return split_flagged(flag_rows(df, spec, time_zone), spec)
