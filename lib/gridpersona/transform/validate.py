"""Row-level checks of an input table against its contract: pure ``DataFrame -> DataFrame``.

:func:`validate_rows` (and its two halves :func:`flag_rows` and :func:`split_flagged`) sort
rows into valid ones and rejects with a reason; :func:`flag_duplicate_keys` marks keys seen
twice. No I/O, no session: ingest reads and writes, these only decide.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.contracts.base import TableSpec

REASON = "reason"
ROW_JSON = "row_json"

# Columns whose value is a function of another column of the same row:
# table -> (local date column, instant column). The date is the local calendar
# date of the instant in `ami.time_zone`.
LOCAL_DATE_OF: dict[str, tuple[str, str]] = {"bronze.ami_interval": ("date", "ts")}

_MICROS_PER_DAY = 86_400_000_000


class ContractViolation(ValueError):
    """A frame that lacks a column its contract declares."""


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
        raise ContractViolation(f"{spec.name}: cannot validate rows, frame lacks contract column(s) {missing}")
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
