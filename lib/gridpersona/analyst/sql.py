"""`gridpersona sql`: read-only Spark SQL over the lake's tables by their ``layer.table`` names.

The tables a statement names are registered in the session's catalog first
(:mod:`gridpersona.analyst.catalog`); a statement that names none (``SHOW TABLES IN
gold``, ``SELECT 1``) gets every table registered. The statement then runs on a
thread in the SQL guard's analyst scope (:mod:`gridpersona.analyst.guard`): queries,
SHOW, DESCRIBE and USE over the registered views only; anything else is refused
before it has any effect. Results are bounded (``limit``) before they reach the
driver and are rendered as a text table, CSV or JSON Lines.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from gridpersona.console import render_table
from gridpersona.lake import Lake
from gridpersona.contracts import pii_columns
from gridpersona.analyst.catalog import PII_DB, register_lake
from gridpersona.analyst.guard import GuardUnavailable, analyst_scope, require_loaded

FORMATS = ("table", "csv", "json")
# Cells longer than this are cut in the text table (CSV and JSON keep them whole).
MAX_CELL = 60

_NAME = re.compile(r"(?<![\w.`])`?([A-Za-z_]\w*)`?\s*\.\s*`?([A-Za-z_]\w*)`?")
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


class SqlError(ValueError):
    """A statement could not be analysed or run; the message says why in one line, without a Java stack."""


@dataclass
class QueryResult:
    columns: list[str]
    types: list[T.DataType]
    rows: list[tuple]
    truncated: bool  # more rows existed than the limit allowed


def referenced_tables(statement: str, known: Sequence[str]) -> list[str]:
    """Lake tables (from ``known``) that ``statement`` names as ``layer.table`` (or ``pii.table``), in order."""
    lookup = {f"{PII_DB}.{t.split('.', 1)[1]}".lower(): t for t in known}
    lookup.update({t.lower(): t for t in known})
    found: list[str] = []
    for m in _NAME.finditer(statement):
        name = lookup.get(f"{m.group(1)}.{m.group(2)}".lower())
        if name and name not in found:
            found.append(name)
    return found


# Loggers that repeat a failing query's error with its Java stack (a task's exception, the aborted stage):
# silenced while `run_query` runs, since its SqlError already says what went wrong.
_TASK_FAILURE_LOGGERS = ("org.apache.spark.executor.Executor", "org.apache.spark.scheduler.TaskSetManager",
                         "org.apache.spark.scheduler.TaskSchedulerImpl", "org.apache.spark.scheduler.DAGScheduler")


def _short_error(exc: Exception) -> str:
    """One line: Spark's error class and explanation (its first sentence line) and where in the statement."""
    text = str(exc).strip()
    if hasattr(exc, "java_exception"):  # a Py4JJavaError: the Java exception's own message, not the trace
        try:
            text = str(exc.java_exception.getMessage() or "").strip() or text
        except Exception:  # the JVM may be gone
            pass
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.split(r"\s*SQLSTATE: \w+", first)[0].strip()
    where = re.search(r"(?:line (\d+),? pos(?:ition)? (\d+))", text)
    if where:
        first += f" (line {where.group(1)}, position {where.group(2)})"
    return first


def _hint(message: str, lake_tables: Sequence[str], allow_pii: bool) -> str:
    if "TABLE_OR_VIEW_NOT_FOUND" in message:
        return ("; lake tables: " + ", ".join(lake_tables)) if lake_tables else "; the lake has no tables yet"
    if "UNRESOLVED_COLUMN" in message:
        named = [c for c in sorted(pii_columns()) if re.search(rf"`?{c}`?", message.split("Did you mean")[0])]
        if named:
            return (f"; {', '.join(named)}: customer PII, never in the layer.table views; "
                    f"{PII_DB}.<table> has it for the pii role (--allow-pii, for users entitled to see it)")
    return ""


@contextlib.contextmanager
def _quiet_task_failures(spark: SparkSession) -> Iterator[None]:
    """Turn the JVM loggers of ``_TASK_FAILURE_LOGGERS`` off for the block, then restore their levels."""
    try:
        jvm = spark.sparkContext._jvm
        configurator = jvm.org.apache.logging.log4j.core.config.Configurator
        manager = jvm.org.apache.logging.log4j.LogManager
        before = {name: manager.getLogger(name).getLevel() for name in _TASK_FAILURE_LOGGERS}
        for name in _TASK_FAILURE_LOGGERS:
            configurator.setLevel(name, jvm.org.apache.logging.log4j.Level.OFF)
    except Exception:  # not log4j2 (a cluster's own logging): leave it as configured
        yield
        return
    try:
        yield
    finally:
        for name, level in before.items():
            configurator.setLevel(name, level)


def run_query(spark: SparkSession, lake: Lake, statement: str, limit: int | None = 1000,
              allow_pii: bool = False) -> QueryResult:
    """Register the tables ``statement`` needs, run it under the SQL guard, return at most ``limit`` rows (None: all).

    ``allow_pii``: the pii role (may read ``pii.*`` views); otherwise the analyst role.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.logger import PySparkLogger

    # PySpark logs every analysis error with its JVM stack before raising it; the error below says it once.
    PySparkLogger.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    statement = statement.strip().rstrip(";").strip()
    if not statement:
        raise SqlError("empty statement")
    try:
        require_loaded(spark)
    except GuardUnavailable as exc:
        raise SqlError(str(exc)) from None
    lake_tables = lake.list_tables()
    needed = referenced_tables(statement, lake_tables) or lake_tables
    register_lake(spark, lake, needed)
    try:
        with _quiet_task_failures(spark), analyst_scope(spark, "pii" if allow_pii else "analyst"):
            df = spark.sql(statement)
            rows = df.limit(limit + 1).collect() if limit is not None else df.collect()
    except (PySparkException, Py4JJavaError) as exc:
        # Analysis errors (unknown table or column, syntax) and errors at execution time alike.
        message = _short_error(exc)
        raise SqlError(message + _hint(message, lake_tables, allow_pii)) from None
    truncated = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    return QueryResult(df.columns, [f.dataType for f in df.schema.fields], [tuple(r) for r in rows], truncated)


def _plain(value: Any) -> Any:
    """A JSON-ready value: dates and instants as ISO text, decimals as floats, rows as objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "asDict"):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return format(value, ".10g")
    if isinstance(value, (bool, int, str, decimal.Decimal)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return json.dumps(_plain(value), ensure_ascii=False)


def format_result(result: QueryResult, fmt: str = "table") -> str:
    """The rows as a text table, CSV (header first) or JSON Lines (one object per row)."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow(["" if v is None else _cell(v) for v in row])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return "\n".join(json.dumps({c: _plain(v) for c, v in zip(result.columns, row)}, ensure_ascii=False)
                         for row in result.rows)
    if fmt != "table":
        raise SqlError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    right = [i for i, t in enumerate(result.types) if isinstance(t, _NUMERIC)]
    cells = [[_cut(_cell(v)) for v in row] for row in result.rows]
    return render_table(result.columns, cells, align_right=right)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
