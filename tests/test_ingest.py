"""Landing users' files into bronze tables, and the bronze input-contract guard.

The session zone is ``ami.time_zone`` (Asia/Shanghai); source files here use
other zones so a conversion that leaned on the session zone would show.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.stages.inputs import (UnknownTableError, absent_inputs_note, check_contract, read_bronze,
                                       read_bronze_or_empty)
from gridpersona.transform.validate import validate_rows
from gridpersona.app.cli import main as cli_main
from gridpersona.config import load_settings
from gridpersona.stages.ingest import IngestError, conform_column, ingest_files
from gridpersona.lake import Lake, SchemaMismatchError
from gridpersona.contracts.bronze import BRONZE

AMI = "bronze.ami_interval"
REJECTS = "bronze.ingest_rejects"


def epoch(y, mo, d, h, mi, zone):
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone)).timestamp())


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def ami_rows(lake):
    """bronze.ami_interval as sorted (meter_id, epoch seconds, kwh, date) tuples."""
    df = lake.read(AMI).select("meter_id", F.unix_seconds("ts").alias("epoch"), "kwh", "date")
    return sorted(tuple(r) for r in df.collect())


def test_csv_with_mapping_lands_typed_utc_instants(make_settings, spark, tmp_path):
    # meter_id mapped in config, kwh mapped by the caller; READ_TIME is zone-less Berlin wall clock.
    settings = make_settings("ingest.column_mappings={bronze.ami_interval: {meter_id: METER_NO, ts: READ_TIME}}",
                             "ingest.csv_delimiter=;")
    lake = Lake(settings, spark)
    path = write_csv(tmp_path / "mdm.csv", [
        "METER_NO;read_time;ENERGY;QUALITY",
        "M1;2026-06-01 20:00:00;0.25;ok",
        "M1;2026/06/01 20:15;0.5;ok",
        "M2;2026-06-01T09:00:00;1;ok",
    ])
    report = ingest_files(spark, lake, settings, AMI, [path], mapping={"kwh": "ENERGY"}, time_zone="Europe/Berlin")

    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (3, 3, 0)
    assert report.ignored_columns == ["QUALITY"] and report.filled_null_columns == []
    schema = {f.name: f.dataType for f in lake.read(AMI).schema.fields}
    assert schema == {"meter_id": T.StringType(), "ts": T.TimestampType(), "kwh": T.DoubleType(), "date": T.DateType()}
    # Berlin 20:00 CEST is 18:00 UTC, i.e. 02:00 next day in Shanghai: the partition date is Shanghai's.
    assert ami_rows(lake) == [
        ("M1", epoch(2026, 6, 1, 20, 0, "Europe/Berlin"), 0.25, dt.date(2026, 6, 2)),
        ("M1", epoch(2026, 6, 1, 20, 15, "Europe/Berlin"), 0.5, dt.date(2026, 6, 2)),
        ("M2", epoch(2026, 6, 1, 9, 0, "Europe/Berlin"), 1.0, dt.date(2026, 6, 1)),
    ]
    assert lake.info(AMI).partition_by == ("date",)
    assert "rows read 3 = accepted 3 + rejected 0" in report.render()


def test_bad_rows_go_to_ingest_rejects_with_reasons(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "bad.csv", [
        "meter_id,ts,kwh",
        "M1,2026-06-01 00:00:00,0.1",
        "M1,2026-06-01 00:15:00,abc",
        ",2026-06-01 00:30:00,0.3",
        "M2,not a time,0.4",
        "M2,2026-06-01 00:45:00+08:00,",
        "M3,2026-06-01 01:00:00",
    ])
    report = ingest_files(spark, lake, settings, AMI, [path], time_zone="UTC")

    assert report.rejects_by_reason == {"malformed_row": 1, "missing_required:meter_id": 1,
                                        "unparseable:kwh": 1, "unparseable:ts": 1}
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (6, 2, 4)
    assert report.rows_read == report.rows_accepted + report.rows_rejected
    assert lake.read(AMI).count() == report.rows_accepted
    # A null kwh is allowed (nullable), and a zone in the string wins over the source zone.
    assert ami_rows(lake) == [("M1", epoch(2026, 6, 1, 0, 0, "UTC"), 0.1, dt.date(2026, 6, 1)),
                              ("M2", epoch(2026, 6, 1, 0, 45, "Asia/Shanghai"), None, dt.date(2026, 6, 1))]

    rejects = lake.read(REJECTS).filter(F.col("ingest_id") == report.ingest_id).collect()
    by_reason = {r["reason"]: r for r in rejects}
    assert sorted(by_reason) == sorted(report.rejects_by_reason)
    assert all(r["target_table"] == AMI and r["source_file"].endswith("bad.csv") for r in rejects)
    assert lake.info(REJECTS).partition_by == ("target_table",)
    assert json.loads(by_reason["unparseable:kwh"]["row_json"]) == {"meter_id": "M1", "ts": "2026-06-01 00:15:00", "kwh": "abc"}
    assert json.loads(by_reason["unparseable:ts"]["row_json"])["ts"] == "not a time"
    assert json.loads(by_reason["missing_required:meter_id"]["row_json"])["meter_id"] is None
    assert "unparseable:kwh" in report.render()


def test_missing_required_column_fails_naming_the_column(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "no_meter.csv", ["METER,ts,kwh", "M1,2026-06-01 00:00:00,0.1"])

    with pytest.raises(IngestError, match=r"required column 'meter_id'.*--map meter_id=") as info:
        ingest_files(spark, lake, settings, AMI, [path])
    assert "no_meter.csv" in str(info.value) and AMI in str(info.value)
    assert not lake.exists(AMI) and not lake.exists(REJECTS)


def test_replace_range_twice_leaves_no_duplicates_and_other_dates_untouched(settings, lake, spark, tmp_path):
    noon = [dt.datetime(2026, 6, d, 12, tzinfo=ZoneInfo("Asia/Shanghai")) for d in (1, 2, 3)]
    seed = [("M1", ts, float(ts.day), ts.date()) for ts in noon] + [("M2", noon[1], 20.0, noon[1].date())]
    lake.append(spark.createDataFrame(seed, BRONZE[AMI].schema), AMI, partition_by=["date"])
    redo = write_csv(tmp_path / "redo.csv", [
        "meter_id,ts,kwh",
        "M1,2026-06-02 12:00:00,2.5",
        "M1,2026-06-02 12:15:00,2.75",
        "M1,2026-06-03 12:00:00,99.0",  # outside the replaced range
    ])
    day = dt.date(2026, 6, 2)
    reports = [ingest_files(spark, lake, settings, AMI, [redo], replace_range=(day, day)) for _ in range(2)]

    assert all(r.mode == "replace" and r.rejects_by_reason == {"outside_replace_range": 1} for r in reports)
    sh = "Asia/Shanghai"  # settings.ingest.source_time_zone
    assert ami_rows(lake) == [
        ("M1", epoch(2026, 6, 1, 12, 0, sh), 1.0, dt.date(2026, 6, 1)),
        ("M1", epoch(2026, 6, 2, 12, 0, sh), 2.5, dt.date(2026, 6, 2)),
        ("M1", epoch(2026, 6, 2, 12, 15, sh), 2.75, dt.date(2026, 6, 2)),
        ("M1", epoch(2026, 6, 3, 12, 0, sh), 3.0, dt.date(2026, 6, 3)),
    ]


def test_parquet_timestamp_ntz_read_in_stated_zone(settings, lake, spark, tmp_path):
    wall = [dt.datetime(2026, 6, 1, 23, 0), dt.datetime(2026, 6, 2, 0, 0)]
    pq.write_table(pa.table({
        "Meter_ID": pa.array(["M1", "M1"]),
        "TS": pa.array(wall, pa.timestamp("us")),  # no zone: timestamp_ntz to Spark
        "kwh": pa.array([1, 2], pa.int64()),  # integer -> double is lossless
    }), tmp_path / "ntz.parquet")
    instant = dt.datetime(2026, 6, 2, 3, 0, tzinfo=dt.timezone.utc)
    pq.write_table(pa.table({
        "meter_id": pa.array(["M9"]),
        "ts": pa.array([instant], pa.timestamp("us", tz="UTC")),  # an instant: kept as is
        "kwh": pa.array([0.5]),
    }), tmp_path / "ltz.pq")

    report = ingest_files(spark, lake, settings, AMI, [str(tmp_path)], time_zone="America/New_York")

    assert report.rows_accepted == 3 and len(report.files) == 2
    # New York 23:00 EDT = 03:00 UTC = 11:00 in Shanghai, the next day.
    assert ami_rows(lake) == [
        ("M1", epoch(2026, 6, 1, 23, 0, "America/New_York"), 1.0, dt.date(2026, 6, 2)),
        ("M1", epoch(2026, 6, 2, 0, 0, "America/New_York"), 2.0, dt.date(2026, 6, 2)),
        ("M9", int(instant.timestamp()), 0.5, dt.date(2026, 6, 2)),
    ]


def test_conform_column_refuses_lossy_and_incompatible_casts(spark):
    df = spark.createDataFrame([(2.0, "3"), (2.5, "3.0"), (None, "3.5"), (1.0, "x")], "d double, s string")
    d_value, d_reason = conform_column(F.col("d"), T.DoubleType(), T.IntegerType(), "n", "UTC")
    s_value, s_reason = conform_column(F.col("s"), T.StringType(), T.IntegerType(), "n", "UTC")
    b_value, b_reason = conform_column(F.col("d"), T.DoubleType(), T.TimestampType(), "t", "UTC")
    got = df.select(d_value.alias("d"), d_reason.alias("d_reason"), s_value.alias("s"), s_reason.alias("s_reason"),
                    b_reason.alias("t_reason"))
    expected = spark.createDataFrame([
        (2, None, 3, None, "incompatible_type:t"),
        (None, "lossy_cast:n", 3, None, "incompatible_type:t"),
        (None, None, None, "lossy_cast:n", None),
        (1, None, None, "unparseable:n", "incompatible_type:t"),
    ], "d int, d_reason string, s int, s_reason string, t_reason string")
    assert_df_equality(got, expected, ignore_nullable=True)  # row order kept: one expected row per input row


def test_validate_rows_flags_invalid_values_and_date_mismatch(spark):
    spec = BRONZE["bronze.service_interaction"]
    ts = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    df = spark.createDataFrame(
        [("i1", "c1", ts, "app", "repair", None), ("i2", "c1", ts, "fax", "repair", None),
         ("i3", "c1", ts, None, "repair", None)],
        "interaction_id string, customer_id string, ts timestamp, channel string, interaction_type string, topic string")
    valid, rejects = validate_rows(df, spec, "Asia/Shanghai")
    assert_df_equality(valid, df.filter(F.col("interaction_id") == "i1"), ignore_nullable=True)
    assert_df_equality(rejects.select("interaction_id", "reason"),
                       spark.createDataFrame([("i2", "invalid_value:channel"), ("i3", "missing_required:channel")],
                                             "interaction_id string, reason string"),
                       ignore_row_order=True, ignore_nullable=True)

    ami = BRONZE[AMI]
    rows = spark.createDataFrame([("M1", ts, 1.0, dt.date(2026, 6, 1)), ("M1", ts, 1.0, dt.date(2026, 5, 31))],
                                 "meter_id string, ts timestamp, kwh double, date date")
    _, rejects = validate_rows(rows, ami, "Asia/Shanghai")  # 00:00 UTC is 08:00 in Shanghai, same date
    assert_df_equality(rejects.select("date", "reason"),
                       spark.createDataFrame([(dt.date(2026, 5, 31), "date_mismatch")], "date date, reason string"),
                       ignore_nullable=True)


def test_read_bronze_refuses_table_breaking_contract(lake, spark):
    bad = spark.createDataFrame([("M1", dt.datetime(2026, 6, 1), "0.1", dt.date(2026, 6, 1))],
                                "meter_id string, ts timestamp, kwh string, date date")
    lake.overwrite(bad, AMI, partition_by=["date"])

    with pytest.raises(SchemaMismatchError, match=r"bronze.ami_interval.*column 'kwh': expected double, got string"):
        read_bronze(lake, AMI)


def test_read_bronze_returns_contract_columns_in_order(lake, spark):
    df = spark.createDataFrame([(dt.date(2026, 6, 1), 0.1, "M1", dt.datetime(2026, 6, 1))],
                               "date date, kwh double, meter_id string, ts timestamp")
    lake.overwrite(df, AMI)
    assert read_bronze(lake, AMI).columns == ["meter_id", "ts", "kwh", "date"]


def test_unknown_table_error_lists_valid_tables(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "x.csv", ["a", "1"])
    with pytest.raises(IngestError, match=r"'bronze.meters' is not a bronze table") as info:
        ingest_files(spark, lake, settings, "bronze.meters", [path])
    assert all(name in str(info.value) for name in BRONZE)
    with pytest.raises(UnknownTableError, match="bronze.ami_interval, bronze.billing_payment"):
        read_bronze(lake, "silver.ami_clean")


def test_mixed_formats_are_refused(settings, lake, spark, tmp_path):
    write_csv(tmp_path / "a.csv", ["meter_id,ts,kwh"])
    pq.write_table(pa.table({"meter_id": ["M1"]}), tmp_path / "b.parquet")
    with pytest.raises(IngestError, match="mix formats"):
        ingest_files(spark, lake, settings, AMI, [str(tmp_path)])


# ------------------------------------------------------------------ minimal inputs


def test_absent_optional_inputs_read_as_empty_and_are_named_in_one_line(lake, spark):
    archive = spark.createDataFrame([("C1", "M1", "R1", "residential")],
                                    "customer_id string, meter_id string, region string, customer_type string")
    lake.overwrite(archive, "bronze.customer_archive")
    read = read_bronze(lake, "bronze.customer_archive")
    assert read.columns == BRONZE["bronze.customer_archive"].column_names
    assert read.collect()[0].asDict()["tariff_type"] is None and read.schema["household_size"].dataType == T.IntegerType()
    contacts = read_bronze_or_empty(lake, "bronze.contact_history")
    assert contacts.schema == BRONZE["bronze.contact_history"].schema and contacts.count() == 0
    assert absent_inputs_note(lake) == (
        "optional inputs absent, read as empty: bronze.billing_payment, bronze.service_interaction, "
        "bronze.contact_history, bronze.campaign_response, bronze.weather; bronze.holiday_calendar absent: the built-in "
        "calendar of calendar.country=cn applies; optional columns absent, read as null: "
        "bronze.customer_archive (customer_name, phone, address, tariff_type, age_band, household_size, housing_type, "
        "contracted_capacity_kva, products_held, do_not_contact, vip, account_open_date, account_close_date)")
    with pytest.raises(Exception, match="bronze.ami_interval"):  # a required input is never guessed
        read_bronze_or_empty(lake, AMI)
    shutil.rmtree(lake.path("bronze.customer_archive"))
    lake.overwrite(archive.drop("region"), "bronze.customer_archive")
    with pytest.raises(SchemaMismatchError, match="column 'region' missing"):
        read_bronze(lake, "bronze.customer_archive")


def test_header_only_csv_creates_the_empty_table(settings, lake, spark, tmp_path):
    table = "bronze.contact_history"
    path = write_csv(tmp_path / "contacts.csv", ["contact_id,customer_id,campaign_id,ts,channel"])
    report = ingest_files(spark, lake, settings, table, [path])
    assert (report.rows_read, report.version) == (0, 0) and "created empty" in report.render()
    check_contract(table, lake.schema(table))
    assert read_bronze(lake, table).count() == 0 and absent_inputs_note(lake) and table not in absent_inputs_note(lake)
    again = ingest_files(spark, lake, settings, table, [path])
    assert again.version is None and lake.version(table) == 0 and "nothing appended" in again.render()


def test_create_table_makes_an_empty_table_of_the_contract(settings, lake, capsys):
    root = ["--env", "test", "--set", f"lake.root={lake.root}"]
    assert cli_main(root + ["create-table", AMI]) == 0
    assert "created empty" in capsys.readouterr().out
    check_contract(AMI, lake.schema(AMI))
    assert lake.partition_columns(AMI) == ("date",) and lake.info(AMI).rows == 0
    assert cli_main(root + ["create-table", AMI]) == 0
    assert "already exists" in capsys.readouterr().out and lake.version(AMI) == 0
    assert cli_main(root + ["create-table", "silver.ami_clean"]) == 2
    assert "not a bronze table" in capsys.readouterr().err


def test_source_time_zone_follows_ami_time_zone_unless_set(tmp_path):
    base = [f"lake.root={tmp_path}"]
    assert load_settings("test", base).ingest.source_time_zone == load_settings("test", base).ami.time_zone
    london = load_settings("test", base + ["ami.time_zone=Europe/London"])
    assert london.ingest.source_time_zone == "Europe/London"
    explicit = load_settings("test", base + ["ami.time_zone=Europe/London", "ingest.source_time_zone=UTC"])
    assert explicit.ingest.source_time_zone == "UTC"


def test_cli_ingest_and_a_failing_query_print_no_java_noise(tmp_path):
    """One CLI process (one JVM): a CSV ingest logs no header warning; a query failing at execution time
    prints one error line and exits 2."""
    csv_path = tmp_path / "mdm.csv"
    # A BOM and spaces around a header field: the names Spark's header check compares.
    csv_path.write_text("\ufeffmeter_id, ts ,kwh\nM1,2026-06-01 00:00,0.5\nM2,2026-06-01 00:15,0.25\n", encoding="utf-8")
    script = (
        "import sys\nfrom gridpersona.app.cli import main\n"
        f"root = ['--env', 'test', '--set', 'lake.root={tmp_path / 'lake'}']\n"
        f"assert main(root + ['ingest', '{AMI}', '{csv_path}']) == 0\n"
        "print('---', file=sys.stderr, flush=True)\n"
        f"sys.exit(main(root + ['sql', 'SELECT CAST(meter_id AS INT) FROM {AMI}']))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.path.join(os.path.dirname(__file__), "..", "lib"),
                                                                     os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    ingest_err, sql_err = proc.stderr.split("---\n", 1)
    assert "rows read 2 = accepted 2" in proc.stdout
    assert "CSVHeaderChecker" not in ingest_err and "does not conform" not in ingest_err, ingest_err
    assert sql_err.strip().splitlines() == [sql_err.strip()], sql_err  # one line
    assert sql_err.startswith("gridpersona sql: error: [CAST_INVALID_INPUT]") and "'M1'" in sql_err


def test_rejected_archive_rows_keep_no_pii_in_row_json_unless_configured(make_settings, spark, tmp_path):
    header = "customer_id,meter_id,NAME,phone,address,region,customer_type,EMAIL"
    lines = [header, "C1,M1,Zhang Wei,13800138000,88 Secret Road,R1,alien,zw@example.com",  # not an allowed type
             "C2,M2,Li Na,13900139000,9 Quiet Lane,R1,residential,\"unterminated"]
    path = write_csv(tmp_path / "archive.csv", lines)
    ARCHIVE = "bronze.customer_archive"
    for keep in (False, True):
        settings = make_settings(f"ingest.rejects_keep_pii={str(keep).lower()}", f"lake.root={tmp_path / f'lake{keep}'}")
        lake = Lake(settings, spark)
        report = ingest_files(spark, lake, settings, ARCHIVE, [path], mapping={"customer_name": "NAME"})
        rows = [json.loads(r["row_json"]) for r in lake.read(REJECTS).filter(F.col("target_table") == ARCHIVE)
                .orderBy("reason").collect()]
        assert report.rows_rejected == len(rows) >= 1
        as_read = next(r for r in rows if "customer_id" in r)
        assert as_read["customer_id"] == "C1" and as_read["customer_type"] == "alien"  # why it was rejected
        if keep:
            assert as_read["NAME"] == "Zhang Wei" and as_read["phone"] == "13800138000"
        else:
            # PII (mapped name included) and columns the contract does not know are masked; the rest stays.
            assert (as_read["NAME"], as_read["phone"], as_read["address"], as_read["EMAIL"]) == ("***",) * 4
            text = json.dumps(rows)
            assert "Zhang" not in text and "Li Na" not in text and "13900139000" not in text
