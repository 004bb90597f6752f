"""Landing a user's own files (CSV or Parquet) into a bronze table.

``ingest_files`` reads the files, matches their columns to the table's contract
(by name, case-insensitively, or through a ``{contract column: source column}``
mapping), casts each value to the contract type where that loses nothing, checks
every row against the contract (``validate.flag_rows``) and writes the accepted
rows to the bronze table and every rejected row, with its reason and the row as
read, to ``bronze.ingest_rejects``. Nothing is dropped silently:
``rows_read == rows_accepted + rows_rejected``.

Rows that cannot be true are rejected too (``validate.flag_rows``: non-finite,
negative, absurd values, over-long keys; ``validate.flag_duplicate_keys``: a key
seen twice, in the files or in the stored table, unless
``ingest.on_duplicate_key`` is ``latest``).

Problems with the files as a whole (unknown table, missing required or measure
column, a byte not in ``ingest.csv_encoding``, a CSV field beyond
``ingest.max_field_chars``, unreadable or mixed formats) fail before anything is
written, naming the file (and line where there is one).

Time zones, explicitly (the session zone is ``ami.time_zone`` and is never
relied on):

- zone-less timestamp strings and Parquet ``timestamp_ntz`` values are wall-clock
  times in the source zone (``time_zone`` argument, else
  ``ingest.source_time_zone``) and are converted to the UTC instant. Wall-clock
  times that do not exist (the hour skipped when DST starts) move forward by the
  gap; ambiguous ones (the hour repeated when DST ends) take the earlier instant;
- strings carrying a zone (``Z``, ``+08:00``, ``UTC``, ``Europe/Berlin``) and
  Parquet timestamps with a zone are instants and kept as such;
- ``bronze.ami_interval.date`` is the local date of ``ts`` in ``ami.time_zone``:
  derived when the files lack it, checked (``date_mismatch``) when they have it.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import io
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.stages import inputs
from gridpersona.transform import validate
from gridpersona.config import Settings
from gridpersona.lake import Lake, check_schema, SchemaMismatchError
from gridpersona.contracts.base import TableSpec
from gridpersona.contracts.bronze import BRONZE, INGEST_REJECTS

EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv"}

_SRC = "__src_{}"
_SOURCE_FILE = "__source_file"
_CORRUPT = "__corrupt_record"

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_FRACTIONAL = (T.FloatType, T.DoubleType, T.DecimalType)

# A time of day followed by a zone: "Z", "+08:00", "-0500", "UTC", "Europe/Berlin".
_ZONE_SUFFIX = r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([A-Za-z]|[+-]\d)"


class IngestError(ValueError):
    """The files cannot be landed as asked; the message names file, table and column."""


@dataclass
class IngestReport:
    """What one ingest run did; ``render()`` gives the human-readable version."""

    table: str
    ingest_id: str
    files: list[str]
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    ignored_columns: list[str]
    filled_null_columns: list[str]
    mode: str
    version: int | None
    replace_range: tuple[dt.date, dt.date] | None = None
    source_time_zone: str = ""
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Multi-line report for people."""
        target = f"{self.table} ({self.mode}"
        if self.replace_range:
            target += f" {self.replace_range[0]} .. {self.replace_range[1]}"
        target += ")"
        landed = f"version {self.version}" if self.version is not None else "nothing written"
        lines = [f"ingest {self.ingest_id} -> {target}: {landed}"]
        shown = self.files[:5] + ([f"... {len(self.files) - 5} more"] if len(self.files) > 5 else [])
        lines.append(f"  files ({len(self.files)}): " + ", ".join(shown))
        if self.source_time_zone:
            lines.append(f"  zone-less timestamps read in: {self.source_time_zone}")
        lines.append(f"  rows read {self.rows_read} = accepted {self.rows_accepted} + rejected {self.rows_rejected}")
        if self.rejects_by_reason:
            lines.append(f"  rejected rows by reason (in {INGEST_REJECTS.name}, ingest_id = '{self.ingest_id}'):")
            width = max(len(r) for r in self.rejects_by_reason)
            for reason, count in sorted(self.rejects_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {reason:<{width}}  {count}")
        if self.ignored_columns:
            lines.append("  source columns not in the contract (ignored): " + ", ".join(self.ignored_columns))
        if self.filled_null_columns:
            lines.append("  contract columns absent from the files (filled with null): " + ", ".join(self.filled_null_columns))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------- files and columns


def _extension(path: str) -> str | None:
    lower = path.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return ext
    return None


def resolve_files(paths: list[str], fmt: str | None = None) -> tuple[str, list[str]]:
    """Expand ``paths`` (files or directories, searched recursively) to ``(format, files)``.

    The format comes from the extensions (.parquet/.pq, .csv/.csv.gz) unless
    ``fmt`` names it; a file named explicitly with another extension is read as
    ``fmt``. Hidden and ``_``-prefixed files (``_SUCCESS``, ``.crc``) are skipped.
    Mixed formats, missing paths or no data files raise IngestError.
    """
    if fmt is not None and fmt not in ("csv", "parquet"):
        raise IngestError(f"unknown format {fmt!r}: use 'csv' or 'parquet'")
    if not paths:
        raise IngestError("no input paths given")
    found: list[tuple[str, str | None]] = []  # (file, format by extension)
    for path in paths:
        if os.path.isdir(path):
            for dirpath, dirnames, names in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
                for name in sorted(names):
                    ext = _extension(name)
                    if ext and not name.startswith((".", "_")):
                        found.append((os.path.join(dirpath, name), EXTENSIONS[ext]))
        elif os.path.isfile(path):
            ext = _extension(path)
            if ext is None and fmt is None:
                raise IngestError(f"{path}: cannot tell the format from the extension; "
                                  f"name it .csv or .parquet, or pass the format (--format csv|parquet)")
            found.append((path, EXTENSIONS[ext] if ext else None))
        else:
            raise IngestError(f"{path}: no such file or directory")
    if not found:
        raise IngestError(f"no .csv or .parquet files under {', '.join(paths)}")
    formats = {f for _, f in found if f}
    if fmt is not None:
        other = [p for p, f in found if f and f != fmt]
        if other:
            raise IngestError(f"format {fmt!r} was asked for but {other[0]} is {EXTENSIONS[_extension(other[0])]}")
    elif len(formats) > 1:
        by_fmt = {f: next(p for p, g in found if g == f) for f in sorted(formats)}
        raise IngestError("files mix formats (" + ", ".join(f"{f}: {p}" for f, p in by_fmt.items())
                          + "); land each format in its own ingest")
    files = list(dict.fromkeys(os.path.abspath(p) for p, _ in found))
    return fmt or formats.pop(), files


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def check_encoding(path: str, encoding: str) -> None:
    """IngestError naming ``path`` and the line of the first byte that is not valid ``encoding``.

    A full pass over the file in C-speed chunks (about a second per GB
    uncompressed), so that a wrong byte stops the ingest before Spark reads,
    instead of landing as a replacement character or failing without a file.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with _open_bytes(path) as fh:
        while True:
            chunk = fh.read(1 << 22)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from the bytes the decoder held back from the previous chunk.
                held = len(exc.object) - len(chunk)
                at = max(exc.start - held, 0)
                line += chunk.count(b"\n", 0, at)
                bad = exc.object[exc.start:exc.start + 1]
                what = f"byte 0x{bad.hex()}" if bad else "the file's last bytes"
                raise IngestError(
                    f"{path} line {line}: {what} not valid {encoding}; nothing was written. Save the file "
                    f"as {encoding}, or set ingest.csv_encoding to the file's encoding (e.g. gb18030, latin-1)"
                ) from None
            if not chunk:
                return
            line += chunk.count(b"\n")


# Delimiters a header may turn out to be separated by, when the configured one does not split it.
_DELIMITERS = (",", ";", "\t", "|")


def delimiter_hint(header: tuple[str, ...], delimiter: str) -> str:
    """' The header looks ';'-separated: ...' when another usual delimiter splits the header, else ''."""
    text = delimiter.join(header)
    counts = {d: text.count(d) for d in _DELIMITERS if d != delimiter and d in text}
    if not counts:
        return ""
    shown = max(counts, key=counts.get).replace("\t", "\\t")
    return (f" The header looks '{shown}'-separated: set ingest.csv_delimiter='{shown}' "
            f"or pass --delimiter '{shown}'.")


def _csv_header(path: str, delimiter: str, encoding: str = "utf-8") -> tuple[str, ...]:
    """The header's fields exactly as written (spaces kept: Spark compares them so; callers strip)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="") as fh:
        first = fh.readline()
    if not first.strip():
        raise IngestError(f"{path}: empty or no header line; CSV files need a header naming their columns")
    return tuple(next(csv.reader(io.StringIO(first.rstrip("\r\n")), delimiter=delimiter)))


def _parquet_columns(path: str) -> tuple[tuple[str, str], ...]:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            raise IngestError(
                f"{path}: column '{f.name}' is a nanosecond timestamp ({f.type}), which Spark cannot read; "
                f"rewrite the file with microsecond timestamps "
                f"(pyarrow: pq.write_table(..., coerce_timestamps='us'); pandas: df.to_parquet(..., coerce_timestamps='us'))")
    return tuple((f.name, str(f.type)) for f in schema)


@dataclass
class _Group:
    """Files that share one set of source columns (read by Spark in one go)."""

    files: list[str]
    columns: tuple[str, ...]
    header: tuple[str, ...] = ()  # CSV: the header fields as written (the reader's schema names)
    matches: dict[str, str] = field(default_factory=dict)  # contract column -> source column
    ignored: list[str] = field(default_factory=list)
    filled_null: list[str] = field(default_factory=list)

    def where(self) -> str:
        more = len(self.files) - 1
        return self.files[0] + (f" (and {more} more file(s) with the same columns)" if more else "")


def _match_columns(group: _Group, spec: TableSpec, mapping: dict[str, str], derived: set[str],
                   delimiter: str = ",") -> None:
    """Fill ``group.matches/ignored/filled_null``; IngestError for ambiguity or a missing required or
    measure column (with a hint when a CSV header looks split by another ``delimiter``)."""
    by_key: dict[str, list[str]] = {}
    for name in group.columns:
        by_key.setdefault(name.strip().lower(), []).append(name)
    dups = {k: v for k, v in by_key.items() if len(v) > 1}
    if dups:
        names = next(iter(dups.values()))
        raise IngestError(f"{group.where()}: columns {names} differ only in case; rename one of them")
    used: set[str] = set()
    for column in spec.columns:
        source_name = mapping.get(column.name, column.name)
        found = by_key.get(source_name.strip().lower())
        if found:
            group.matches[column.name] = found[0]
            used.add(found[0])
        elif column.name in mapping:
            raise IngestError(
                f"{group.where()}: mapping {column.name}={source_name} names a column the file does not have; "
                f"its columns: {', '.join(group.columns)}." + delimiter_hint(group.header, delimiter))
        elif column.name in derived:
            continue
        elif not column.nullable or column.measure:
            what = "required column" if not column.nullable else "column"
            why = "" if not column.nullable else " (the measured value: every file must have it; a value may be empty)"
            raise IngestError(
                f"{group.where()}: {what} '{column.name}' of {spec.name} not found{why}; nothing was written. "
                f"The file's columns: {', '.join(group.columns)}. If it is there under another name, "
                f"map it: --map {column.name}=<source column> (or ingest.column_mappings in config)."
                + delimiter_hint(group.header, delimiter))
        else:
            group.filled_null.append(column.name)
    group.ignored = [c for c in group.columns if c not in used]


# ---------------------------------------------------------------- casting


def wall_clock_to_instant(ntz: Column, time_zone: str) -> Column:
    """TIMESTAMP_NTZ wall-clock ``ntz`` read in ``time_zone`` -> TIMESTAMP instant.

    Built field by field with ``make_timestamp_ltz(..., zone)`` so the session
    zone plays no part (a cast NTZ -> TIMESTAMP would use it).
    """
    return F.make_timestamp_ltz(
        F.year(ntz), F.month(ntz), F.dayofmonth(ntz), F.hour(ntz), F.minute(ntz),
        F.date_part(F.lit("SECOND"), ntz), F.lit(time_zone),
    )


def parse_instant(text: Column, time_zone: str) -> Column:
    """Timestamp string -> TIMESTAMP instant (null when unparseable).

    Accepts ISO-like ``yyyy-MM-dd[ T]HH:mm[:ss[.f]]`` (``/`` for ``-`` too). A
    zone in the string is honoured; zone-less strings are wall-clock times in
    ``time_zone``.
    """
    norm = F.regexp_replace(F.trim(text), "/", "-")
    zoned = norm.try_cast(T.TimestampType())  # honours the string's own zone
    local = wall_clock_to_instant(norm.try_cast(T.TimestampNTZType()), time_zone)
    return F.when(norm.rlike(_ZONE_SUFFIX), zoned).otherwise(local)


def _is_midnight(ntz: Column) -> Column:
    return ntz == ntz.cast(T.DateType()).cast(T.TimestampNTZType())


def conform_column(src: Column, src_type: T.DataType, target: T.DataType, name: str,
                   time_zone: str) -> tuple[Column, Column]:
    """Cast one source column to its contract type: ``(value, reason)``.

    ``reason`` is null when the value was carried over without loss (a null
    source value is not a failure here; nullability is checked later), else
    ``unparseable:<name>``, ``lossy_cast:<name>`` or ``incompatible_type:<name>``.
    """
    def fail(bad: Column, kind: str) -> Column:
        return F.when(bad, F.lit(f"{kind}:{name}"))

    present = src.isNotNull()
    if src_type == target:
        return src, F.lit(None).cast("string")
    if isinstance(src_type, T.NullType):
        return F.lit(None).cast(target), F.lit(None).cast("string")
    if isinstance(src_type, T.StringType):
        text = F.trim(src)
        present = present & (text != F.lit(""))  # blank text is a missing value, not a bad one
        if isinstance(target, T.TimestampType):
            value = parse_instant(src, time_zone)
            return F.when(present, value), fail(present & value.isNull(), "unparseable")
        if isinstance(target, T.DateType):
            ntz = F.regexp_replace(text, "/", "-").try_cast(T.TimestampNTZType())
            reason = F.when(present & ntz.isNull(), F.lit(f"unparseable:{name}")).when(
                present & ~_is_midnight(ntz), F.lit(f"lossy_cast:{name}"))
            return F.when(present & _is_midnight(ntz), ntz.cast(T.DateType())), reason
        if isinstance(target, _INTEGRAL):
            exact = text.try_cast(target)
            number = text.try_cast(T.DoubleType())
            via_number = number.try_cast(target)
            lossless = via_number.isNotNull() & (via_number.cast(T.DoubleType()) == number)
            value = F.coalesce(exact, F.when(lossless, via_number))
            reason = F.when(present & exact.isNull() & number.isNull(), F.lit(f"unparseable:{name}")).when(
                present & value.isNull(), F.lit(f"lossy_cast:{name}"))
            return F.when(present, value), reason
        if isinstance(target, (T.DoubleType, T.FloatType, T.DecimalType, T.BooleanType)):
            value = text.try_cast(target)
            return F.when(present, value), fail(present & value.isNull(), "unparseable")
        if isinstance(target, T.StringType):
            return src, F.lit(None).cast("string")
    if isinstance(target, T.StringType) and (isinstance(src_type, _INTEGRAL)
                                             or isinstance(src_type, T.DecimalType) and src_type.scale == 0):
        # Identifiers stored as numbers (meter numbers, account numbers).
        return src.cast(T.StringType()), F.lit(None).cast("string")
    if isinstance(target, (T.DoubleType, T.FloatType)) and isinstance(src_type, _INTEGRAL + _FRACTIONAL):
        return src.cast(target), F.lit(None).cast("string")
    if isinstance(target, _INTEGRAL) and isinstance(src_type, _INTEGRAL + _FRACTIONAL):
        value = src.try_cast(target)
        lossless = value.isNotNull() & (value.cast(src_type) == src)
        return F.when(lossless, value), fail(present & ~lossless, "lossy_cast")
    if isinstance(target, T.BooleanType) and isinstance(src_type, _INTEGRAL):
        ok = src.isin(0, 1)
        return F.when(ok, src == 1), fail(present & ~ok, "lossy_cast")
    if isinstance(target, T.TimestampType) and isinstance(src_type, T.TimestampNTZType):
        return wall_clock_to_instant(src, time_zone), F.lit(None).cast("string")
    if isinstance(target, T.DateType) and isinstance(src_type, T.TimestampNTZType):
        return F.when(_is_midnight(src), src.cast(T.DateType())), fail(present & ~_is_midnight(src), "lossy_cast")
    return F.lit(None).cast(target), fail(present, "incompatible_type")


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class _CsvOptions:
    delimiter: str
    encoding: str
    max_field_chars: int


def _read_group(spark: SparkSession, fmt: str, group: _Group, csv_options: _CsvOptions) -> DataFrame:
    """The group's files with source columns renamed ``__src_<i>``, plus source file (and corrupt record)."""
    if fmt == "csv":
        # Every column as text. The schema names the header's own fields, so Spark's header check
        # (CSVHeaderChecker) finds them conforming; they are renamed by position right after.
        # Rows with too few or too many fields land in the corrupt-record column.
        schema = T.StructType([T.StructField(name, T.StringType()) for name in group.header]
                              + [T.StructField(_CORRUPT, T.StringType())])
        raw = (spark.read.schema(schema)
               .options(header=True, sep=csv_options.delimiter, quote='"', escape='"', mode="PERMISSIVE",
                        columnNameOfCorruptRecord=_CORRUPT, encoding=csv_options.encoding,
                        maxCharsPerColumn=csv_options.max_field_chars)
               .csv(group.files))
        raw = raw.toDF(*[_SRC.format(i) for i in range(len(group.columns))], _CORRUPT)
        return raw.select("*", F.input_file_name().alias(_SOURCE_FILE))
    raw = spark.read.parquet(*group.files)
    return raw.select(*[F.col(f"`{c}`").alias(_SRC.format(i)) for i, c in enumerate(group.columns)],
                      F.lit(None).cast("string").alias(_CORRUPT), F.input_file_name().alias(_SOURCE_FILE))


PII_MASK = "***"


def _mask_pii_sources(sources: list, group: _Group, spec: TableSpec, keep_pii: bool) -> list:
    """Source columns as row_json records them: for a table with PII columns, only the values of its non-PII
    contract columns (a PII column, or a column the contract does not know, reads as PII_MASK) unless keep_pii.

    bronze.ingest_rejects is read more widely than the table the rows were meant for.
    """
    if keep_pii or not any(c.pii for c in spec.columns):
        return sources
    plain = {group.matches[c.name] for c in spec.columns if not c.pii and c.name in group.matches}
    return [s if name in plain else F.when(s.isNotNull(), F.lit(PII_MASK)) for s, name in zip(sources, group.columns)]


def _upper_bounds(spec: TableSpec, settings: Settings) -> dict[str, float]:
    """{column: plausible maximum} from the contract's ``upper_bound_setting`` names and ``settings.ingest``."""
    return {c.name: float(getattr(settings.ingest, c.upper_bound_setting))
            for c in spec.columns if c.upper_bound_setting}


def _flag_group(raw: DataFrame, group: _Group, spec: TableSpec, time_zone: str, day_zone: str,
                replace_dates: list[dt.date] | None, settings: Settings) -> DataFrame:
    """One group's rows as contract columns + reason + row_json (rejects only) + source_file."""
    index = {c: i for i, c in enumerate(group.columns)}
    src_types = {f.name: f.dataType for f in raw.schema.fields}
    values, reasons = [], [F.when(F.col(_CORRUPT).isNotNull(), F.lit("malformed_row"))]
    derived_date = None
    for column in spec.columns:
        if column.name in group.matches:
            src_name = _SRC.format(index[group.matches[column.name]])
            value, reason = conform_column(F.col(src_name), src_types[src_name], column.dtype, column.name, time_zone)
            values.append(value.alias(column.name))
            reasons.append(reason)
        elif validate.LOCAL_DATE_OF.get(spec.name, ("",))[0] == column.name:
            derived_date = column.name
            values.append(F.lit(None).cast(column.dtype).alias(column.name))
        else:
            values.append(F.lit(None).cast(column.dtype).alias(column.name))
    sources = [F.col(_SRC.format(i)) for i in range(len(group.columns))]
    conformed = raw.select(*values, F.coalesce(*reasons).alias(validate.REASON), *sources,
                           F.col(_CORRUPT), F.col(_SOURCE_FILE))
    if derived_date:
        ts_col = validate.LOCAL_DATE_OF[spec.name][1]
        conformed = conformed.withColumn(derived_date, validate.local_date(F.col(ts_col), day_zone))
    flagged = validate.flag_rows(conformed, spec, day_zone, max_key_chars=settings.ingest.max_key_chars,
                               upper_bounds=_upper_bounds(spec, settings))
    if replace_dates is not None:
        outside = F.col("date").isNotNull() & ~F.col("date").isin(replace_dates)
        flagged = flagged.withColumn(validate.REASON, F.coalesce(F.col(validate.REASON),
                                                               F.when(outside, F.lit("outside_replace_range"))))
    recorded = _mask_pii_sources(sources, group, spec, settings.ingest.rejects_keep_pii)
    as_read = F.to_json(F.struct(*[s.alias(c) for s, c in zip(recorded, group.columns)]), {"ignoreNullFields": "false"})
    line = F.col(_CORRUPT) if recorded is sources else F.lit(PII_MASK)  # a malformed line of a PII table is masked whole
    raw_line = F.to_json(F.struct(line.alias("malformed_line")))
    row_json = F.when(F.col(validate.REASON).isNotNull(),
                      F.when(F.col(_CORRUPT).isNotNull(), raw_line).otherwise(as_read))
    return flagged.select(*[F.col(f"`{c}`") for c in spec.column_names], F.col(validate.REASON),
                          row_json.alias(validate.ROW_JSON), F.col(_SOURCE_FILE).alias("source_file"))


# ---------------------------------------------------------------- the ingest


def _check_zone(zone: str, what: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise IngestError(f"{what}: unknown time zone {zone!r} (use an IANA name such as Asia/Shanghai)") from None
    return zone


def _check_existing(lake: Lake, spec: TableSpec, fix: str, needs_partition: str | None = None) -> None:
    """Fail before any write when an existing table could not take the rows."""
    table = spec.name
    if not lake.exists(table):
        return
    try:
        check_schema(table, spec.schema, lake.schema(table))
    except SchemaMismatchError as exc:
        raise IngestError(f"{exc}; nothing was written. {fix}") from None
    parts = lake.partition_columns(table)
    if needs_partition and needs_partition not in parts:
        raise IngestError(f"{table}: the existing table is partitioned by {list(parts)}, not by '{needs_partition}', "
                          f"so a date range cannot be replaced; nothing was written. Append instead, or rewrite "
                          f"the table partitioned by {list(spec.partition_by)}.")


def _layout(lake: Lake, spec: TableSpec) -> tuple[str, ...] | None:
    # A new table is laid out as its contract says; an existing one keeps its own layout.
    return None if lake.exists(spec.name) else spec.partition_by


def _first_pass(counts: DataFrame, fmt: str, files: list[str], csv_options: _CsvOptions) -> list:
    """Collect ``counts``, the first Spark job over the files: a CSV field beyond the parser's bound
    becomes an IngestError naming file and line instead of a Java stack trace."""
    try:
        return counts.collect()
    except Exception as exc:
        text = str(exc)
        if fmt != "csv" or "exceeds the maximum number of characters" not in text:
            raise
        limit = csv_options.max_field_chars
        named = [f for f in files if f in text] or files
        for path in named:
            line = _overlong_line(path, limit, csv_options.encoding)
            if line:
                break
        where = f"{path} line {line}" if line else ", ".join(named)
        raise IngestError(
            f"{where}: a field is longer than ingest.max_field_chars ({limit:,} characters); nothing was written. "
            f"No key or reading is that long: look for an unclosed quote or a wrong delimiter, or raise "
            f"ingest.max_field_chars for long free text") from None


def _overlong_line(path: str, limit: int, encoding: str) -> int | None:
    """Number of the first line of ``path`` longer than ``limit`` characters (error path: a full scan)."""
    with _open_bytes(path) as fh:
        for number, raw in enumerate(fh, 1):
            if len(raw) > limit and len(raw.decode(encoding, "replace")) > limit:
                return number
    return None


def _replace_by_key(lake: Lake, spec: TableSpec, valid: DataFrame) -> tuple[int, int]:
    """Rewrite ``spec``'s table with ``valid`` rows replacing the stored rows of the same key:
    ``(version, stored rows replaced)``. For the small tables with unique keys (never the readings)."""
    stored = inputs.read_bronze(lake, spec.name)
    keys = valid.select(*spec.keys).distinct()
    replaced = stored.join(keys, list(spec.keys), "left_semi").count()
    kept = stored.join(keys, list(spec.keys), "left_anti")
    version = lake.overwrite(kept.unionByName(valid), spec.name, partition_by=_layout(lake, spec)).version
    return version, replaced


def ingest_files(spark: SparkSession, lake: Lake, settings: Settings, table: str, paths: list[str], *,
                 fmt: str | None = None, mapping: dict[str, str] | None = None,
                 replace_range: tuple[dt.date, dt.date] | None = None,
                 time_zone: str | None = None, delimiter: str | None = None) -> IngestReport:
    """Land CSV or Parquet ``paths`` into bronze ``table``; returns the IngestReport.

    ``mapping`` ({contract column: source column}) overlays
    ``settings.ingest.column_mappings[table]``. ``time_zone`` (else
    ``settings.ingest.source_time_zone``) is the zone of zone-less timestamps;
    ``delimiter`` (else ``settings.ingest.csv_delimiter``) separates CSV fields.
    Tables with unique keys reject a row whose key repeats in the files or is
    stored already (``duplicate_key``), unless ``ingest.on_duplicate_key`` is
    ``latest``: then the new row replaces the stored one.
    Without ``replace_range`` accepted rows are appended; with
    ``(first_date, last_date)`` they replace those dates of a date-partitioned
    table, and rows outside the range are rejected (``outside_replace_range``).
    Raises IngestError, before anything is written, when the files cannot be
    landed as a whole.
    """
    spec = BRONZE.get(table)
    if spec is None:
        raise IngestError(f"{table!r} is not a bronze table; valid tables: {', '.join(sorted(BRONZE))}")
    zone = _check_zone(time_zone or settings.ingest.source_time_zone,
                       "time_zone" if time_zone else "ingest.source_time_zone")
    day_zone = settings.ami.time_zone
    mapping = {**settings.ingest.column_mappings.get(table, {}), **(mapping or {})}
    unknown = sorted(set(mapping) - set(spec.column_names))
    if unknown:
        raise IngestError(f"mapping names {unknown}, not column(s) of {table}; its columns: {', '.join(spec.column_names)}")
    replace_dates = None
    if replace_range is not None:
        first, last = replace_range
        if "date" not in spec.partition_by:
            raise IngestError(f"replace_range needs a table partitioned by date; {table} is not (append instead)")
        if first > last:
            raise IngestError(f"replace_range: first date {first} is after last date {last}")
        replace_dates = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    _check_existing(lake, spec, "The table breaks its contract; fix or rewrite it before landing more rows into it.",
                    needs_partition="date" if replace_range is not None else None)
    _check_existing(lake, INGEST_REJECTS, f"Move the old {INGEST_REJECTS.name} aside so it can be recreated.")

    fmt, files = resolve_files(list(paths), fmt)
    csv_options = _CsvOptions(delimiter or settings.ingest.csv_delimiter, settings.ingest.csv_encoding,
                              settings.ingest.max_field_chars)
    groups: dict[tuple, _Group] = {}
    for path in files:
        header: tuple[str, ...] = ()
        if fmt == "csv":
            check_encoding(path, csv_options.encoding)
            header = _csv_header(path, csv_options.delimiter, csv_options.encoding)
            signature: tuple = header
            columns = tuple(h.strip() for h in header)
        else:
            signature = _parquet_columns(path)
            columns = tuple(name for name, _ in signature)
        groups.setdefault(signature, _Group([], columns, header)).files.append(path)
    derived = {validate.LOCAL_DATE_OF[table][0]} if table in validate.LOCAL_DATE_OF else set()
    for group in groups.values():
        _match_columns(group, spec, mapping, derived, csv_options.delimiter)

    ingested_at = dt.datetime.now(dt.timezone.utc)
    ingest_id = f"{ingested_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    frames = [_flag_group(_read_group(spark, fmt, g, csv_options), g, spec, zone, day_zone, replace_dates, settings)
              for g in groups.values()]
    flagged = frames[0]
    for frame in frames[1:]:
        flagged = flagged.unionByName(frame)
    latest_wins = spec.unique_keys and settings.ingest.on_duplicate_key == "latest" and lake.exists(table)
    if spec.unique_keys:
        stored = lake.read(table) if lake.exists(table) and not latest_wins else None
        flagged = validate.flag_duplicate_keys(flagged, spec, stored)

    # One materialization serves the counts and both writes.
    flagged = flagged.persist()
    try:
        counts = Counter({row[validate.REASON]: row["count"]
                          for row in _first_pass(flagged.groupBy(validate.REASON).count(), fmt, files, csv_options)})
        accepted = counts.pop(None, 0)
        rejected = sum(counts.values())
        valid, rejects = validate.split_flagged(flagged, spec)
        notes: list[str] = []
        if rejected:
            # Rejects first: if the table write then fails, the rejects are still on record.
            lake.append(
                rejects.select(F.lit(ingest_id).alias("ingest_id"), F.lit(table).alias("target_table"),
                               F.col("source_file"), F.col(validate.REASON), F.col(validate.ROW_JSON),
                               F.lit(ingested_at).cast(T.TimestampType()).alias("ingested_at")),
                INGEST_REJECTS.name, partition_by=_layout(lake, INGEST_REJECTS))
        version = None
        if replace_dates is not None and accepted == 0:
            notes.append(f"no row was accepted, so the dates {replace_range[0]} .. {replace_range[1]} of {table} "
                         f"were left as they were (a replace with no rows would have emptied them)")
        elif replace_dates is not None:
            version = lake.replace(valid, table, where={"date": replace_dates}, partition_by=_layout(lake, spec)).version
        elif accepted and latest_wins:
            version, replaced = _replace_by_key(lake, spec, valid)
            notes.append(f"on_duplicate_key=latest: {replaced} stored row(s) replaced by this ingest's row for the "
                         f"same key; version {version - 1} of {table} still holds them (time travel)")
        elif accepted:
            version = lake.append(valid, table, partition_by=_layout(lake, spec)).version
        elif not rejected and not lake.exists(table):
            # Header-only files: the source exists and holds nothing (e.g. no campaign ran yet).
            version = inputs.create_empty_bronze(lake, table)
            notes.append(f"the files hold no rows: {table} created empty")
        elif not rejected:
            notes.append(f"the files hold no rows: nothing appended to {table}")
        else:
            notes.append(f"no row was accepted, so nothing was appended to {table}")
    finally:
        flagged.unpersist()

    ignored = sorted({c for g in groups.values() for c in g.ignored})
    filled = [c for c in spec.column_names if any(c in g.filled_null for g in groups.values())]
    return IngestReport(
        table=table, ingest_id=ingest_id, files=files, rows_read=accepted + rejected, rows_accepted=accepted,
        rows_rejected=rejected, rejects_by_reason=dict(sorted(counts.items())), ignored_columns=ignored,
        filled_null_columns=filled, mode="replace" if replace_dates is not None else "append", version=version,
        replace_range=replace_range, source_time_zone=zone, notes=notes,
    )
