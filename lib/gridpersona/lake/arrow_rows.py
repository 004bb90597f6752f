"""Rows an Arrow function makes from a frame's batches, written by the tasks themselves on the embedded backend.

A stage whose output rows are a numpy/pyarrow function of a much smaller frame (silver.ami_clean: the
readings exploded from clean's meter-day arrays) hands the Lake an :class:`ArrowRows` instead of a
DataFrame. Every backend can write it as the frame :meth:`ArrowRows.frame` (``mapInArrow``: Spark
receives the rows and writes them). The embedded ``deltalake`` backend instead runs the function inside
each task and writes the task's Parquet files with pyarrow into its staging folder
(:func:`stage_task_files`): the rows never pass through the JVM. On the default lake's 28.5M reading
rows that is 7-11 CPU s against 27-33 for Spark's explode and Parquet writer (``bench/README.md``).

A task returns the files it completed; the driver commits exactly those, so the leftovers of a failed
task attempt in the staging folder are never committed (the folder is deleted after the commit, or when
the staging step fails). A task holds at most ``ROW_GROUP_ROWS`` rows in memory and ``MAX_OPEN_FILES``
files open; folders are named as Spark names them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from gridpersona.lake.common import partition_value_str

# Rows a task buffers (all partitions together) before it writes them out as row groups.
ROW_GROUP_ROWS = 1 << 20
# Files a task keeps open at once (Spark's spark.sql.maxConcurrentOutputFileWriters plays this part for
# its own writer): past it the least recently written file is closed, and a later row of its partition
# starts a new file.
MAX_OPEN_FILES = 64
# The characters Spark escapes in a partition folder name (ExternalCatalogUtils.escapePathName), as %XX.
_ESCAPED = {*map(chr, range(0x01, 0x20)), '"', "#", "%", "'", "*", "/", ":", "=", "?", "\\", "\x7f", "{", "[", "]", "^"}
# A task's row per completed file, as Spark and as Arrow declare it.
STAGED_SCHEMA = "rel string, rows long"
_STAGED = pa.schema([("rel", pa.string()), ("rows", pa.int64())])


@dataclass(frozen=True)
class ArrowRows:
    """``fn`` applied to each Arrow batch of ``source`` gives rows of ``schema`` (a table's contract order,
    partition columns included). ``fn`` must be picklable (a module-level function or a
    ``functools.partial`` of one): it runs in the executors."""

    source: DataFrame
    fn: Callable[[pa.RecordBatch], pa.Table]
    schema: T.StructType

    @property
    def columns(self) -> list[str]:
        return self.schema.fieldNames()

    def frame(self) -> DataFrame:
        """The rows as a Spark frame (for any backend, a test or a read before the write)."""
        fn, arrow_schema = self.fn, _arrow_schema(self.schema)

        def rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                yield from fn(batch).cast(arrow_schema).to_batches()

        return self.source.mapInArrow(rows, self.schema)

    def select(self, *names: str) -> "ArrowRows | DataFrame":
        """Itself when ``names`` are its columns in order (a write in table order); else the frame's select."""
        if [n.strip("`") for n in names] == self.columns:
            return self
        return self.frame().select(*names)


def _arrow_schema(schema: T.StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema
    return to_arrow_schema(schema, timezone="UTC")


def _escape(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in text)


def _partition_dir(partition_by: tuple[str, ...], values: tuple) -> str:
    """Hive-style folders as Spark names them (``date=2026-06-01``; a null is __HIVE_DEFAULT_PARTITION__)."""
    parts = []
    for col, value in zip(partition_by, values):
        text = partition_value_str(value)
        parts.append(f"{col}={'__HIVE_DEFAULT_PARTITION__' if text is None else _escape(text)}")
    return os.path.join(*parts) if parts else ""


def stage_task_files(batches: Iterator[pa.RecordBatch], fn: Callable[[pa.RecordBatch], pa.Table],
                     arrow_schema: pa.Schema, partition_by: tuple[str, ...], staging: str
                     ) -> Iterator[pa.RecordBatch]:
    """One task: ``fn`` of each batch, its rows written with pyarrow into a Parquet file per partition (a
    second one when the first was closed to stay under ``MAX_OPEN_FILES``; Hive-style folders under
    ``staging``, partition columns not in the file, Snappy as Spark writes).
    Yields one row per completed file: its path relative to ``staging`` and its row count."""
    file_schema = pa.schema([f for f in arrow_schema if f.name not in partition_by])
    task = uuid.uuid4().hex
    writers: dict[tuple, tuple[pq.ParquetWriter, int]] = {}   # open files (insertion order: least recent first)
    done: list[list] = []                                      # [rel, rows] of every file, in order
    buffered: dict[tuple, list[pa.Table]] = {}
    held = 0

    def close(key: tuple) -> None:
        writer, _ = writers.pop(key)
        writer.close()

    def flush_all() -> None:
        nonlocal held
        for key, tables in buffered.items():
            if key in writers:
                writers[key] = writers.pop(key)  # most recently written last
            else:
                if len(writers) >= MAX_OPEN_FILES:
                    close(next(iter(writers)))
                rel = os.path.join(_partition_dir(partition_by, key), f"part-{len(done):05d}-{task}.c000.snappy.parquet")
                os.makedirs(os.path.dirname(os.path.join(staging, rel)) or staging, exist_ok=True)
                writers[key] = (pq.ParquetWriter(os.path.join(staging, rel), file_schema, compression="snappy"), len(done))
                done.append([rel, 0])
            table = pa.concat_tables(tables)
            writers[key][0].write_table(table, row_group_size=ROW_GROUP_ROWS)
            done[writers[key][1]][1] += table.num_rows
        buffered.clear()
        held = 0

    try:
        for batch in batches:
            rows = fn(batch).cast(arrow_schema)
            if not rows.num_rows:
                continue
            for key, part in _split(rows, partition_by):
                buffered.setdefault(key, []).append(part.drop_columns(list(partition_by)))
                held += part.num_rows
            if held >= ROW_GROUP_ROWS:  # bounded memory: the task's buffer, whatever its partitions
                flush_all()
        flush_all()
    finally:
        for writer, _ in writers.values():
            writer.close()
    if done:
        yield pa.RecordBatch.from_pydict({"rel": [r for r, _ in done], "rows": [n for _, n in done]}, schema=_STAGED)


def _split(rows: pa.Table, partition_by: tuple[str, ...]) -> Iterator[tuple[tuple, pa.Table]]:
    """(partition values, rows) of each partition in ``rows`` (one slice each after a stable sort)."""
    if not partition_by:
        yield (), rows
        return
    order = pc.sort_indices(rows, sort_keys=[(c, "ascending") for c in partition_by])  # nulls last
    rows = rows.take(order)
    codes = np.zeros(rows.num_rows, dtype=np.int64)
    for col in partition_by:
        encoded = pc.dictionary_encode(rows.column(col).combine_chunks(), null_encoding="encode")
        codes = codes * (len(encoded.dictionary) + 1) + encoded.indices.to_numpy(zero_copy_only=False)
    bounds = np.r_[0, np.nonzero(np.diff(codes))[0] + 1, rows.num_rows]
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = rows.slice(int(a), int(b - a))
        yield tuple(part.column(c)[0].as_py() for c in partition_by), part


def stage(rows: ArrowRows, partition_by: tuple[str, ...], staging: str) -> list[dict]:
    """Run :func:`stage_task_files` in every task of ``rows.source``; the completed files (``rel``, ``rows``)."""
    fn, arrow_schema = rows.fn, _arrow_schema(rows.schema)

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from stage_task_files(batches, fn, arrow_schema, partition_by, staging)

    return [r.asDict() for r in rows.source.mapInArrow(task, STAGED_SCHEMA).collect()]
