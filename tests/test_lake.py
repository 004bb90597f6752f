"""The lake layer (deltalake backend): round trips, partition replace, atomicity, schema and feature checks."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.contracts.base import Column, TableSpec
from gridpersona.lake import Lake, LakeError, SchemaMismatchError, spark_conf
from gridpersona.lake.deltars import DeltaRsBackend

SCHEMA = T.StructType([
    T.StructField("meter_id", T.StringType()),
    T.StructField("ts", T.TimestampType()),
    T.StructField("kwh", T.DoubleType()),
    T.StructField("date", T.DateType()),
])
D1, D2, D3 = dt.date(2026, 6, 1), dt.date(2026, 6, 2), dt.date(2026, 6, 3)


def _rows(day: dt.date, meters=("m1", "m2"), kwh=1.0):
    base = dt.datetime(day.year, day.month, day.day, 1, 0, tzinfo=dt.timezone.utc)
    return [(m, base + dt.timedelta(minutes=15 * i), kwh + i, day) for m in meters for i in range(3)]


def _frame(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def _spark_rows(df):
    # Compare instants as epoch micros: independent of session and Python time zones.
    return sorted(df.select("meter_id", F.unix_micros("ts").alias("ts"), "kwh", "date").collect())


def _arrow_rows(table: pa.Table):
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    return sorted(zip(table.column("meter_id").to_pylist(), ts, table.column("kwh").to_pylist(), table.column("date").to_pylist()))


def test_written_table_reads_back_identically_through_spark_and_deltalake(spark, lake):
    rows = _rows(D1) + _rows(D2, kwh=5.0)
    lake.append(_frame(spark, rows), "bronze.roundtrip", partition_by=["date"])

    via_spark = lake.read("bronze.roundtrip")
    via_deltars = DeltaTable(lake.path("bronze.roundtrip")).to_pyarrow_table()

    assert via_spark.schema.names == ["meter_id", "ts", "kwh", "date"]
    assert [f.dataType for f in via_spark.schema.fields] == [f.dataType for f in SCHEMA.fields]
    assert via_deltars.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert via_deltars.schema.field("date").type == pa.date32()
    assert via_deltars.schema.names == via_spark.schema.names
    assert _spark_rows(via_spark) == [tuple(r) for r in _arrow_rows(via_deltars)]
    assert len(_arrow_rows(via_deltars)) == len(rows)
    # The partition column is restored from the log, not lost with the directory names.
    assert {r["date"] for r in via_spark.select("date").collect()} == {D1, D2}


def test_tables_stay_at_the_lowest_protocol(spark, lake):
    lake.append(_frame(spark, _rows(D1)), "bronze.protocol", partition_by=["date"])
    protocol = DeltaTable(lake.path("bronze.protocol")).protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert not protocol.reader_features


def test_replacing_one_partition_rewrites_only_that_partition(spark, lake):
    table = "bronze.replace"
    lake.append(_frame(spark, _rows(D1) + _rows(D2) + _rows(D3)), table, partition_by=["date"])
    before = {a["path"]: a for a in pa.table(DeltaTable(lake.path(table)).get_add_actions(flatten=True)).to_pylist()}

    lake.replace(_frame(spark, _rows(D2, meters=("m9",), kwh=9.0)), table, where={"date": D2})

    after = {a["path"]: a for a in pa.table(DeltaTable(lake.path(table)).get_add_actions(flatten=True)).to_pylist()}
    untouched_before = {p for p, a in before.items() if a["partition.date"] != D2}
    untouched_after = {p for p, a in after.items() if a["partition.date"] != D2}
    assert untouched_before == untouched_after  # the same files, not rewritten copies
    day2 = lake.read(table).filter(F.col("date") == D2)
    assert sorted(r["meter_id"] for r in day2.collect()) == ["m9", "m9", "m9"]
    assert lake.read(table).filter(F.col("date") != D2).count() == 12


def test_writing_the_same_partition_twice_leaves_no_duplicates(spark, lake):
    table = "bronze.idempotent"
    frame = _frame(spark, _rows(D1))
    lake.replace(frame, table, where={"date": D1}, partition_by=["date"])
    lake.replace(frame, table, where={"date": D1})
    out = lake.read(table)
    assert out.count() == 6
    assert out.dropDuplicates(["meter_id", "ts"]).count() == 6


def test_replace_refuses_rows_outside_the_replaced_partition(spark, lake):
    lake.append(_frame(spark, _rows(D1)), "bronze.stray", partition_by=["date"])
    before = lake.version("bronze.stray")
    with pytest.raises(LakeError, match="outside the replaced partitions"):
        lake.replace(_frame(spark, _rows(D1) + _rows(D2)), "bronze.stray", where={"date": D1})
    assert lake.version("bronze.stray") == before
    assert {r["date"] for r in lake.read("bronze.stray").select("date").collect()} == {D1}
    staging = os.path.join(lake.path("bronze.stray"), "_staging")
    assert not os.path.exists(staging) or not os.listdir(staging)


def test_failed_commit_leaves_previous_version_and_no_partial_rows(spark, lake, monkeypatch):
    table = "bronze.atomic"
    lake.append(_frame(spark, _rows(D1)), table, partition_by=["date"])
    version = lake.version(table)
    seen_files = []

    def crash(self, table_name, exists, actions, *a, **k):
        # Data files are in place (moved into the table folder) when the commit fails.
        seen_files.extend(os.path.join(self.path(table_name), act.path) for act in actions)
        assert all(os.path.exists(p) for p in seen_files)
        raise RuntimeError("simulated crash before commit")

    monkeypatch.setattr(DeltaRsBackend, "_commit", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        lake.append(_frame(spark, _rows(D2, kwh=7.0)), table)
    monkeypatch.undo()

    assert seen_files, "the failing write must have produced data files"
    assert lake.version(table) == version
    assert _spark_rows(lake.read(table)) == _spark_rows(_frame(spark, _rows(D1)))
    assert DeltaTable(lake.path(table)).to_pyarrow_table().num_rows == 6
    # The orphaned files are cleaned away, staging included.
    assert not any(os.path.exists(p) for p in seen_files)
    assert not os.path.exists(os.path.join(lake.path(table), "_staging"))


def test_append_with_other_schema_names_table_and_column(spark, lake):
    table = "bronze.schema_check"
    lake.append(_frame(spark, _rows(D1)), table, partition_by=["date"])
    wrong = _frame(spark, _rows(D2)).withColumn("kwh", F.col("kwh").cast("string"))
    with pytest.raises(SchemaMismatchError) as err:
        lake.append(wrong, table)
    message = str(err.value)
    assert "bronze.schema_check" in message and "'kwh'" in message
    assert "expected double, got string" in message

    extra = _frame(spark, _rows(D2)).withColumn("quality", F.lit(1))
    with pytest.raises(SchemaMismatchError, match="column 'quality' \\(int\\) is not in the table"):
        lake.append(extra, table)
    assert lake.read(table).count() == 6


def test_reading_version_n_returns_what_was_committed_at_n(spark, lake):
    table = "bronze.versions"
    snapshots = {}
    v = lake.append(_frame(spark, _rows(D1)), table, partition_by=["date"]).version
    snapshots[v] = _spark_rows(lake.read(table))
    v = lake.append(_frame(spark, _rows(D2)), table).version
    snapshots[v] = _spark_rows(lake.read(table))
    v = lake.replace(_frame(spark, _rows(D1, kwh=3.0)), table, where={"date": D1}).version
    snapshots[v] = _spark_rows(lake.read(table))
    v = lake.overwrite(_frame(spark, _rows(D3)), table).version
    snapshots[v] = _spark_rows(lake.read(table))

    assert sorted(snapshots) == [0, 1, 2, 3]
    for version, expected in snapshots.items():
        assert _spark_rows(lake.read(table, version=version)) == expected
    assert len(snapshots[0]) == 6 and len(snapshots[1]) == 12 and len(snapshots[3]) == 6
    assert [h["version"] for h in lake.history(table)] == [3, 2, 1, 0]


def test_table_with_deletion_vectors_is_refused(lake):
    path = lake.path("bronze.dv")
    data = pa.table({"a": pa.array([1, 2, 3], pa.int64())})
    write_deltalake(path, data, configuration={"delta.enableDeletionVectors": "true"})
    assert "deletionVectors" in (DeltaTable(path).protocol().reader_features or [])
    with pytest.raises(LakeError, match="deletion vectors"):
        lake.read("bronze.dv")


def test_table_with_column_mapping_is_refused(lake):
    # A minimal log as delta-spark writes it for a column-mapped table.
    path = lake.path("bronze.colmap")
    os.makedirs(os.path.join(path, "_delta_log"))
    schema = {"type": "struct", "fields": [{"name": "a", "type": "long", "nullable": True, "metadata": {
        "delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-5f3c"}}]}
    actions = [
        {"protocol": {"minReaderVersion": 2, "minWriterVersion": 5}},
        {"metaData": {"id": "00000000-0000-0000-0000-000000000001", "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [],
                      "configuration": {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"},
                      "createdTime": 0}},
    ]
    with open(os.path.join(path, "_delta_log", "00000000000000000000.json"), "w") as fh:
        fh.write("\n".join(json.dumps(a) for a in actions) + "\n")
    with pytest.raises(LakeError, match="column mapping"):
        lake.read("bronze.colmap")


def test_info_and_list_tables(spark, lake):
    lake.append(_frame(spark, _rows(D1) + _rows(D2)), "silver.a", partition_by=["date"])
    lake.append(_frame(spark, _rows(D1)), "bronze.b")
    assert lake.list_tables() == ["bronze.b", "silver.a"]
    info = lake.info("silver.a")
    assert (info.version, info.rows, info.partition_by) == (0, 12, ("date",))
    assert info.files >= 2 and info.size_bytes > 0


def test_missing_table_error_names_it(lake):
    with pytest.raises(LakeError, match="bronze.nothing: no Delta table"):
        lake.read("bronze.nothing")
    with pytest.raises(LakeError, match="layer.table"):
        lake.path("nolayer")


def test_partition_rows_counts_from_the_delta_log(spark, lake):
    table = "bronze.counted"
    lake.replace(_frame(spark, _rows(D1) + _rows(D2, meters=("m1", "m2", "m3"))), table,
                 where={"date": [D1, D2]}, partition_by=["date"])
    assert lake.partition_rows(table, "date", [D1]) == 6
    assert lake.partition_rows(table, "date", [D2]) == 9
    assert lake.partition_rows(table, "date", [D1, D2, D3]) == 15
    lake.replace(_frame(spark, _rows(D2, meters=("m9",))), table, where={"date": D2})
    assert lake.partition_rows(table, "date", [D1, D2]) == lake.read(table).count() == 9


def test_a_write_returns_the_version_rows_and_files_it_committed(spark, lake):
    table = "bronze.written"
    first = lake.append(_frame(spark, _rows(D1) + _rows(D2)), table, partition_by=["date"])
    assert (first.table, first.version, first.rows) == (table, 0, 12)
    assert first.files == len(DeltaTable(lake.path(table)).file_uris()) >= 2  # one folder per date at least
    replaced = lake.replace(_frame(spark, _rows(D2, meters=("m9",))), table, where={"date": D2})
    assert (replaced.version, replaced.rows) == (1, 3)
    arrow = pa.table({"n": pa.array([1, 2, 3, 4], pa.int64())})
    assert lake.write_arrow("bronze.arrow_written", arrow).rows == 4
    streamed = pa.RecordBatchReader.from_batches(arrow.schema, arrow.to_batches(max_chunksize=1))
    again = lake.write_arrow("bronze.arrow_written", streamed, mode="append")
    assert (again.version, again.rows) == (1, 4)
    assert lake.read_arrow("bronze.arrow_written").num_rows == 8
    with pytest.raises(AttributeError):
        first.rows = 0  # frozen: a result is a record of what happened


def test_partition_values_columns_and_counts_come_from_the_published_snapshot(spark, lake):
    table = "bronze.parts"
    lake.append(_frame(spark, _rows(D1) + _rows(D2, meters=("m1", "m2", "m3"))), table, partition_by=["date"])
    lake.replace(_frame(spark, _rows(D3)), table, where={"date": D3})
    assert lake.partition_columns(table) == ("date",)
    assert lake.partition_values(table, "date") == {D1, D2, D3}
    assert lake.partition_values(table, "date", version=0) == {D1, D2}
    assert lake.partition_counts(table, "date") == {D1: 6, D2: 9, D3: 6}
    assert lake.partition_counts(table, "date", version=0) == {D1: 6, D2: 9}
    with pytest.raises(LakeError, match="not partitioned by 'meter_id'"):
        lake.partition_values(table, "meter_id")


def test_a_snapshot_names_exactly_the_live_files_of_its_version(spark, lake):
    table = "bronze.snap"
    lake.append(_frame(spark, _rows(D1) + _rows(D2)), table, partition_by=["date"])
    lake.replace(_frame(spark, _rows(D2, kwh=2.0)), table, where={"date": D2})
    now, before = lake.snapshot(table), lake.snapshot(table, 0)
    assert (now.version, before.version) == (1, 0)
    assert now.sql_source is None  # the embedded backend's session reads Parquet files, not Delta
    assert set(now.files) == set(DeltaTable(lake.path(table)).file_uris())
    assert set(before.files) == set(DeltaTable(lake.path(table), version=0).file_uris()) != set(now.files)
    assert now.schema == lake.schema(table)


def test_only_the_delta_spark_backend_asks_the_session_for_delta(make_settings):
    assert spark_conf(make_settings()) == {}
    conf = spark_conf(make_settings("lake.backend=delta-spark"))
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def test_a_write_given_a_contract_takes_its_name_and_partitioning(spark, lake):
    spec = TableSpec("bronze.by_contract", "a table written through its contract",
                     (Column("meter_id", T.StringType(), "meter"), Column("ts", T.TimestampType(), "instant"),
                      Column("date", T.DateType(), "local day"), Column("kwh", T.DoubleType(), "energy")),
                     partition_by=("date",))
    result = lake.replace(_frame(spark, _rows(D1) + _rows(D2)), spec, where={"date": [D1, D2]})
    assert result.table == "bronze.by_contract"
    assert lake.partition_columns("bronze.by_contract") == ("date",)
    assert lake.partition_counts("bronze.by_contract", "date") == {D1: 6, D2: 6}


def test_a_session_without_the_backends_conf_is_refused_saying_how_to_build_one(make_settings):
    class Conf:  # a session as the lake sees it: only its conf is asked
        def __init__(self, values):
            self.values = values

        def get(self, key, default=None):
            return self.values.get(key, default)

    class Session:
        def __init__(self, values):
            self.conf = Conf(values)

    settings = make_settings("lake.backend=delta-spark")
    with pytest.raises(LakeError, match=r"lake.backend=delta-spark needs .*spark.sql.extensions.*lake_conf="):
        Lake(settings, Session({}))
    assert Lake(settings, Session(spark_conf(settings))).backend == "delta-spark"
    assert Lake(make_settings(), Session({})).backend == "deltalake"


# ------------------------------------------------------------------ ArrowRows: rows the tasks make and write
def _explode_counts_fn():
    """Each source row (meter_id, date, n) -> n rows of SCHEMA, kwh 0 .. n-1, 15 minutes apart. (A nested
    function: the executors cannot import this test module, so it travels by value.)"""
    def explode(batch: pa.RecordBatch) -> pa.Table:
        n = batch.column("n").to_pylist()
        src = [i for i, k in enumerate(n) for _ in range(k)]
        pos = [j for k in n for j in range(k)]
        dates = batch.column("date").take(pa.array(src, pa.int64()))
        ts = [dt.datetime.combine(d, dt.time(), dt.timezone.utc) + dt.timedelta(minutes=15 * j)
              for d, j in zip(dates.to_pylist(), pos)]
        return pa.table({"meter_id": batch.column("meter_id").take(pa.array(src, pa.int64())),
                         "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "kwh": pa.array(pos, pa.float64()),
                         "date": dates})
    return explode


_explode_counts = _explode_counts_fn()


def _source(spark, rows):
    return spark.createDataFrame(rows, "meter_id string, date date, n int").repartition(2)


def test_arrow_rows_are_written_by_the_tasks_themselves_and_read_back_as_their_frame(spark, lake):
    from gridpersona.lake import ArrowRows
    import pyarrow.parquet as pq

    rows = ArrowRows(_source(spark, [("m1", D1, 3), ("m2", D1, 2), ("m1", D2, 4), ("m3", D3, 0)]), _explode_counts, SCHEMA)
    result = lake.replace(rows, "silver.arrow_rows", where={"date": [D1, D2, D3]}, partition_by=["date"])

    assert result.rows == 9
    assert _spark_rows(lake.read("silver.arrow_rows")) == _spark_rows(rows.frame())
    assert len(_spark_rows(rows.frame())) == 9
    files = DeltaTable(lake.path("silver.arrow_rows")).file_uris()
    # pyarrow wrote them in the tasks (Spark's writer signs "parquet-mr"); no file for a partition without rows.
    assert {pq.read_metadata(f).created_by.split()[0] for f in files} == {"parquet-cpp-arrow"}
    assert {os.path.basename(os.path.dirname(f)) for f in files} == {f"date={D1}", f"date={D2}"}
    assert lake.read("silver.arrow_rows").schema == SCHEMA


def test_arrow_rows_outside_the_replaced_partitions_are_refused(spark, lake):
    from gridpersona.lake import ArrowRows

    lake.append(_frame(spark, _rows(D1)), "silver.arrow_stray", partition_by=["date"])
    before = lake.version("silver.arrow_stray")
    rows = ArrowRows(_source(spark, [("m1", D1, 2), ("m1", D2, 1)]), _explode_counts, SCHEMA)
    with pytest.raises(LakeError, match="outside the replaced partitions"):
        lake.replace(rows, "silver.arrow_stray", where={"date": D1})
    assert lake.version("silver.arrow_stray") == before
    assert _spark_rows(lake.read("silver.arrow_stray")) == _spark_rows(_frame(spark, _rows(D1)))


def test_only_the_files_the_tasks_report_are_committed(spark, lake, monkeypatch):
    """A failed task attempt can leave a file in the staging folder; the commit takes the reported files only."""
    from gridpersona.lake import ArrowRows, arrow_rows
    import pyarrow.parquet as pq

    real_stage = arrow_rows.stage

    def stage_with_a_leftover(rows, partition_by, staging):
        files = real_stage(rows, partition_by, staging)
        os.makedirs(os.path.join(staging, f"date={D1}"), exist_ok=True)
        pq.write_table(_explode_counts(pa.record_batch({"meter_id": ["zz"], "date": pa.array([D1]), "n": [5]}))
                       .drop_columns(["date"]), os.path.join(staging, f"date={D1}", "part-leftover.parquet"))
        return files

    monkeypatch.setattr(arrow_rows, "stage", stage_with_a_leftover)
    rows = ArrowRows(_source(spark, [("m1", D1, 3)]), _explode_counts, SCHEMA)
    lake.replace(rows, "silver.arrow_leftover", where={"date": D1}, partition_by=["date"])
    assert sorted(r["meter_id"] for r in lake.read("silver.arrow_leftover").collect()) == ["m1"] * 3
    assert not os.path.exists(os.path.join(lake.path("silver.arrow_leftover"), "_staging")) or \
        not os.listdir(os.path.join(lake.path("silver.arrow_leftover"), "_staging"))


def test_arrow_rows_without_rows_still_replace_their_partitions(spark, lake):
    from gridpersona.lake import ArrowRows

    lake.append(_frame(spark, _rows(D1) + _rows(D2)), "silver.arrow_empty", partition_by=["date"])
    rows = ArrowRows(_source(spark, [("m1", D1, 0)]), _explode_counts, SCHEMA)
    assert lake.replace(rows, "silver.arrow_empty", where={"date": D1}).rows == 0
    assert {r["date"] for r in lake.read("silver.arrow_empty").select("date").collect()} == {D2}


def test_a_task_bounds_its_open_files_and_buffered_rows(tmp_path, monkeypatch):
    """Batches alternating between three dates, with at most two files open and a tiny buffer: every row
    is written once, in files under Spark-named partition folders, and the task reports each file."""
    import pyarrow.parquet as pq
    from gridpersona.lake import arrow_rows
    from gridpersona.lake.arrow_rows import _arrow_schema, _partition_dir, stage_task_files

    monkeypatch.setattr(arrow_rows, "MAX_OPEN_FILES", 2)
    monkeypatch.setattr(arrow_rows, "ROW_GROUP_ROWS", 4)
    batches = [pa.record_batch({"meter_id": [f"m{i}"], "date": pa.array([day]), "n": [3]})
               for i, day in enumerate([D1, D2, D3, D1, D2, D3])]
    reported = pa.Table.from_batches(list(stage_task_files(iter(batches), _explode_counts, _arrow_schema(SCHEMA),
                                                           ("date",), str(tmp_path)))).to_pylist()
    assert sum(r["rows"] for r in reported) == 18
    assert len(reported) > 3  # a closed partition's later rows went to a new file
    for r in reported:
        assert pq.read_metadata(tmp_path / r["rel"]).num_rows == r["rows"]
    assert {os.path.dirname(r["rel"]) for r in reported} == {f"date={d}" for d in (D1, D2, D3)}
    assert _partition_dir(("k",), ("a b/c=d",)) == "k=a b%2Fc%3Dd"  # as Spark escapes a folder name


def test_a_write_keeps_an_existing_tables_stored_schema(spark, lake):
    """A frame whose columns are declared NOT NULL writes into a table stored with nullable ones: the
    table's schema (as the Delta log holds it) does not change."""
    from gridpersona.lake import ArrowRows

    lake.append(_frame(spark, _rows(D1)), "silver.arrow_schema", partition_by=["date"])
    strict = T.StructType([T.StructField(f.name, f.dataType, nullable=False) for f in SCHEMA.fields])
    lake.replace(ArrowRows(_source(spark, [("m1", D1, 2)]), _explode_counts, strict), "silver.arrow_schema",
                 where={"date": D1})
    assert [f.nullable for f in lake.schema("silver.arrow_schema").fields] == [True] * 4
    assert lake.read("silver.arrow_schema").count() == 2
