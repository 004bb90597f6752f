"""The vocabulary of a table contract: :class:`Column`, :class:`TableSpec` and Spark type shorthands.

The bottom layer of the package: imports nothing from gridpersona, and needs no
SparkSession (only ``pyspark.sql.types``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T

# The lake's layers, in the order data flows through them (ops and truth stand beside the flow).
LAYERS = ("bronze", "silver", "gold", "ops", "truth")

S, D, TS, DT = T.StringType(), T.DoubleType(), T.TimestampType(), T.DateType()
L, I, B = T.LongType(), T.IntegerType(), T.BooleanType()
ARR_S = T.ArrayType(S, True)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    description: str
    unit: str = ""
    nullable: bool = True
    pii: bool = False
    # The measured value the table exists for: its column must be in every landed file, although a
    # single value may be null (unknown). A file without it is refused, never filled with nulls.
    measure: bool = False
    # A value below zero cannot be true (energy consumed, capacity, persons): rejected as `negative`.
    non_negative: bool = False
    # The `ingest.*` setting bounding a plausible value (above it: rejected as `absurd_value`).
    upper_bound_setting: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str  # layer.table
    description: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    source: str = ""
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Columns naming a row of another table (a customer's meter, a contact's customer).
    foreign_keys: tuple[str, ...] = ()
    # One row per key: a second row for a key, within one ingest or against the stored table, is a
    # conflict (ingest.on_duplicate_key). False where duplicates are a known fault that a later stage
    # detects (bronze.ami_interval: clean quarantines them).
    unique_keys: bool = False
    # Columns the configuration adds to the written ones (gold.customer_tags: one per tag of
    # conf/tags.yaml), said in words for the data dictionary; empty: the columns are all written here.
    configured_columns: str = ""

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    @property
    def identifiers(self) -> list[str]:
        """String columns that identify a row here or elsewhere (keys and foreign keys): length-checked."""
        names = set(self.keys) | set(self.foreign_keys)
        return [c.name for c in self.columns if c.name in names and isinstance(c.dtype, T.StringType)]

    @property
    def fractional(self) -> list[str]:
        """Floating-point columns: NaN and infinities can reach them and are never a reading."""
        return [c.name for c in self.columns if isinstance(c.dtype, (T.DoubleType, T.FloatType))]
