"""Reading the bronze inputs under their contracts.

Bronze tables are where outside data enters the pipeline, so their contracts
(``schemas.BRONZE``) are enforced at two grains:

- table grain: :func:`read_bronze` reads a bronze table and refuses it when its
  schema breaks the contract, naming table and column;
- row grain: :func:`gridpersona.transform.validate.validate_rows` sorts rows into
  valid ones and rejects with a reason (used by ingest).

Only ``bronze.ami_interval`` and ``bronze.customer_archive`` (with its required
columns) must exist. Every other bronze table is optional (``OPTIONAL_TABLES``)
and so is every nullable column: :func:`read_bronze_or_empty` reads an absent
optional table as an empty frame of its contract, :func:`read_bronze` reads an
absent nullable column as nulls, and :func:`absent_inputs_note` says which, in
one line, for the run to log once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.lake import Lake, LakeError, SchemaMismatchError, check_schema
from gridpersona.contracts.base import TableSpec
from gridpersona.contracts.bronze import AMI_INTERVAL, BRONZE, CUSTOMER_ARCHIVE


# Inputs the pipeline runs without: absent means empty (no bills, no contacts, no responses), never a guess.
REQUIRED_TABLES = (AMI_INTERVAL.name, CUSTOMER_ARCHIVE.name)
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
    return lake.write_arrow(table, empty, mode="overwrite", partition_by=spec.partition_by).version


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
    # An absent holiday calendar is not read as empty: the configured country's built-in calendar applies.
    calendar = "bronze.holiday_calendar"
    empty = [t for t in tables if t != calendar]
    if empty:
        parts.append("optional inputs absent, read as empty: " + ", ".join(empty))
    if calendar in tables:
        parts.append(f"{calendar} absent: the built-in calendar of calendar.country="
                     f"{lake.settings.calendar.country} applies")
    if columns:
        parts.append("optional columns absent, read as null: "
                     + "; ".join(f"{t} ({', '.join(cols)})" for t, cols in columns.items()))
    return "; ".join(parts) or None
