"""What the lake's facade and its backends share: errors, result records, schema checks, SQL literals.

No backend code here, so both :mod:`gridpersona.lake.base` (the facade) and the backend modules import it.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

log = logging.getLogger("gridpersona.lake")



class LakeError(Exception):
    """A lake operation could not be done; the message names the table."""


class SchemaMismatchError(LakeError):
    """A frame's schema does not match the table's."""


class WriteConflictError(LakeError):
    """Another writer holds the table (or committed to it first)."""


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


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    rows: int | None
    size_bytes: int
    files: int
    partition_by: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    """What one committed write did: the table, its new version, the rows and data files it wrote."""

    table: str
    version: int
    rows: int
    files: int


@dataclass(frozen=True)
class Snapshot:
    """One version of a table as a SQL catalog registers it.

    ``sql_source``: a Spark SQL relation reading exactly this version (``delta.`<path>` VERSION AS OF n``)
    when the backend's Spark session reads Delta itself; None when it does not, and then ``files`` are the
    version's live data files (URIs, hive-style partition folders under the table folder) to read as Parquet.
    """

    table: str
    version: int
    schema: T.StructType
    files: tuple[str, ...]
    sql_source: str | None = None


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


def partition_value_str(value: Any) -> str | None:
    """A partition value as the Delta log writes it (strings; booleans lower case)."""
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


def arrow_to_spark_schema(schema: pa.Schema) -> T.StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def remove_empty_parents(folder: str, stop: str) -> None:
    """Remove ``folder`` and its parents while empty, up to (not including) ``stop``."""
    while os.path.abspath(folder) != os.path.abspath(stop) and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def lake_uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


class LakeBackend(Protocol):
    """What a backend does for the :class:`~gridpersona.lake.base.Lake` facade; versions it is given are
    resolved by the facade (``None`` only where named). Writes are called with the table's writer lock held
    and the frame already checked against the table."""

    name: str
    embedded: bool  # local lake root, no Delta jars: a session's SQL catalog keeps its folders beside the lake

    def latest_version(self, table: str) -> int: ...
    def latest_columns(self, table: str, columns: list[str]) -> dict[str, list] | None: ...
    def history(self, table: str, limit: int | None) -> list[dict]: ...
    def info(self, table: str, version: int) -> TableInfo: ...
    def partition_columns(self, table: str, version: int | None) -> tuple[str, ...]: ...
    def partition_values(self, table: str, column: str, version: int) -> set[Any]: ...
    def log_partition_counts(self, table: str, column: str, version: int) -> dict[Any, int | None] | None: ...
    def schema(self, table: str, version: int) -> T.StructType: ...
    def snapshot(self, table: str, version: int) -> Snapshot: ...
    def read(self, table: str, version: int) -> DataFrame: ...
    def read_arrow(self, table: str, version: int, columns: list[str] | None) -> pa.Table: ...
    def clean_leftovers(self, table: str) -> None: ...
    def restore(self, table: str, version: int, tag: str | None) -> None: ...
    def write(self, df: DataFrame, table: str, mode: str, partition_by: tuple[str, ...],
              where: Mapping[str, Any] | None, exists: bool, base_version: int, tag: str | None,
              description: str | None) -> WriteResult: ...
    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatchReader, mode: str, partition_by: list[str],
                    add_columns: bool) -> WriteResult: ...
