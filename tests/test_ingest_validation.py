"""Ingest refuses what cannot be true: impossible values, missing value columns, over-long keys,
duplicate keys, bad bytes and a wrong delimiter; and `run` refuses an as-of without data or an
unknown stage, before Spark does any work."""

from __future__ import annotations

import datetime as dt
import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from py4j.protocol import Py4JNetworkError

from gridpersona.app.cli import COMMANDS
from gridpersona.app.cli import main as cli_main
from gridpersona.stages.ingest import IngestError, ingest_files
from gridpersona.lake import Lake
from gridpersona.stages.pipeline import EmptyWindowError, run_pipeline
from gridpersona.session import out_of_memory_message

AMI = "bronze.ami_interval"
ARCHIVE = "bronze.customer_archive"
REJECTS = "bronze.ingest_rejects"

# Each impossible reading with the reason it must be rejected for; the first row is the one good reading.
IMPOSSIBLE = [("NaN", "non_finite:kwh"), ("inf", "non_finite:kwh"), ("-Infinity", "non_finite:kwh"),
              ("1e309", "non_finite:kwh"), ("1e308", "absurd_value:kwh"), ("-0.5", "negative:kwh")]


def write_csv(path, lines, encoding="utf-8"):
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return str(path)


def rejects_of(lake, report):
    return sorted((r["reason"], r["source_file"].rsplit("/", 1)[-1])
                  for r in lake.read(REJECTS).filter(F.col("ingest_id") == report.ingest_id).collect())


def test_csv_impossible_readings_are_rejected_with_reasons(settings, lake, spark, tmp_path):
    lines = ["meter_id,ts,kwh", "M0,2026-06-01 00:00,0.5"]
    lines += [f"M{i},2026-06-01 00:00,{v}" for i, (v, _) in enumerate(IMPOSSIBLE, 1)]
    report = ingest_files(spark, lake, settings, AMI, [write_csv(tmp_path / "odd.csv", lines)])

    expected = {"non_finite:kwh": 4, "absurd_value:kwh": 1, "negative:kwh": 1}
    assert report.rejects_by_reason == expected
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (7, 1, 6)
    assert [r["meter_id"] for r in lake.read(AMI).collect()] == ["M0"]
    assert rejects_of(lake, report) == sorted((reason, "odd.csv") for _, reason in IMPOSSIBLE)
    assert re.search(r"non_finite:kwh +4\n", report.render())


def test_parquet_impossible_readings_are_rejected_and_limit_follows_config(make_settings, spark, tmp_path):
    settings = make_settings("ingest.max_interval_kwh=5")
    lake = Lake(settings, spark)
    ts = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    kwh = [0.5, math.nan, math.inf, -math.inf, 1e308, -0.5, 6.0]
    pq.write_table(pa.table({"meter_id": [f"M{i}" for i in range(len(kwh))],
                             "ts": pa.array([ts] * len(kwh), pa.timestamp("us", tz="UTC")), "kwh": kwh}),
                   tmp_path / "odd.parquet")
    report = ingest_files(spark, lake, settings, AMI, [str(tmp_path / "odd.parquet")])

    assert report.rejects_by_reason == {"non_finite:kwh": 3, "absurd_value:kwh": 2, "negative:kwh": 1}
    assert report.rows_read == len(kwh) == report.rows_accepted + report.rows_rejected
    assert [r["kwh"] for r in lake.read(AMI).collect()] == [0.5]


def test_default_reading_limit_is_clean_max_interval_kwh(make_settings):
    assert make_settings().ingest.max_interval_kwh == make_settings().clean.max_interval_kwh == 10000.0
    assert make_settings("clean.max_interval_kwh=50").ingest.max_interval_kwh == 50


def test_non_finite_and_negative_checked_in_every_bronze_table(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "archive.csv", [
        "customer_id,meter_id,region,customer_type,contracted_capacity_kva,household_size",
        "C1,M1,R1,residential,8,3",
        "C2,M2,R1,residential,NaN,2",
        "C3,M3,R1,residential,8,-1",
    ])
    report = ingest_files(spark, lake, settings, ARCHIVE, [path])
    assert report.rejects_by_reason == {"non_finite:contracted_capacity_kva": 1, "negative:household_size": 1}


def test_file_without_the_reading_column_fails_before_writing(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "nokwh.csv", ["meter_id,ts,energy_wh", "M1,2026-06-01 00:00,500"])
    with pytest.raises(IngestError, match=r"nokwh\.csv: column 'kwh' of bronze\.ami_interval not found.*--map kwh="):
        ingest_files(spark, lake, settings, AMI, [path])
    assert not lake.exists(AMI) and not lake.exists(REJECTS)
    # Parquet too; a nullable column that is not the measure may still be absent (read as null).
    pq.write_table(pa.table({"meter_id": ["M1"], "ts": ["2026-06-01 00:00"]}), tmp_path / "nokwh.parquet")
    with pytest.raises(IngestError, match=r"nokwh\.parquet: column 'kwh'"):
        ingest_files(spark, lake, settings, AMI, [str(tmp_path / "nokwh.parquet")])
    archive = write_csv(tmp_path / "a.csv", ["customer_id,meter_id,region,customer_type", "C1,M1,R1,residential"])
    assert "phone" in ingest_files(spark, lake, settings, ARCHIVE, [archive]).filled_null_columns


def test_over_long_key_is_rejected_and_a_giant_field_stops_naming_the_line(make_settings, spark, tmp_path):
    settings = make_settings("ingest.max_field_chars=100000")
    lake = Lake(settings, spark)
    path = write_csv(tmp_path / "keys.csv", ["meter_id,ts,kwh", "M1,2026-06-01 00:00,1",
                                             "M" * 129 + ",2026-06-01 00:00,1", "M" * 128 + ",2026-06-01 00:00,1"])
    report = ingest_files(spark, lake, settings, AMI, [path])
    assert report.rejects_by_reason == {"key_too_long:meter_id": 1} and report.rows_accepted == 2

    giant = write_csv(tmp_path / "giant.csv", ["meter_id,ts,kwh", "M1,2026-06-01 00:00,1", "M2,2026-06-01 00:15,1",
                                               "X" * 2_000_000 + ",2026-06-01 00:30,1"])
    version = lake.version(AMI)
    with pytest.raises(IngestError, match=r"giant\.csv line 4: a field is longer than ingest\.max_field_chars "
                                          r"\(100,000 characters\)") as info:
        ingest_files(spark, lake, settings, AMI, [giant])
    assert len(str(info.value)) < 400 and "\n" not in str(info.value)
    assert lake.version(AMI) == version


# ------------------------------------------------------------------ duplicate keys

ARCHIVE_HEADER = "customer_id,meter_id,customer_name,region,customer_type"


def archive_rows(lake):
    return sorted((r["customer_id"], r["meter_id"], r["region"]) for r in lake.read(ARCHIVE).collect())


def test_duplicate_archive_keys_are_rejected_within_the_files_and_against_stored(settings, lake, spark, tmp_path):
    first = write_csv(tmp_path / "a1.csv", [ARCHIVE_HEADER, "C1,M1,Ann,R1,residential", "C2,M2,Bob,R1,residential",
                                            "C2,M9,Bob,R2,residential"])
    report = ingest_files(spark, lake, settings, ARCHIVE, [first])
    # Two rows for C2 in one ingest: nothing says which is right, so both are rejected.
    assert report.rejects_by_reason == {"duplicate_key": 2} and archive_rows(lake) == [("C1", "M1", "R1")]

    second = write_csv(tmp_path / "a2.csv", [ARCHIVE_HEADER, "C1,M5,Ann,R3,residential", "C3,M3,Cy,R1,commercial"])
    report = ingest_files(spark, lake, settings, ARCHIVE, [second])
    assert report.rejects_by_reason == {"duplicate_key": 1} and report.rows_accepted == 1
    assert archive_rows(lake) == [("C1", "M1", "R1"), ("C3", "M3", "R1")]
    assert rejects_of(lake, report) == [("duplicate_key", "a2.csv")]
    assert "Ann" not in report.render()


def test_duplicate_key_latest_wins_replaces_the_stored_row(make_settings, spark, tmp_path):
    settings = make_settings("ingest.on_duplicate_key=latest")
    lake = Lake(settings, spark)
    ingest_files(spark, lake, settings, ARCHIVE, [write_csv(tmp_path / "a1.csv", [
        ARCHIVE_HEADER, "C1,M1,Ann,R1,residential", "C2,M2,Bob,R1,residential"])])
    report = ingest_files(spark, lake, settings, ARCHIVE, [write_csv(tmp_path / "a2.csv", [
        ARCHIVE_HEADER, "C2,M7,Bob,R2,residential", "C3,M3,Cy,R1,commercial",
        "C4,M4,Di,R1,residential", "C4,M8,Di,R1,residential"])])

    assert archive_rows(lake) == [("C1", "M1", "R1"), ("C2", "M7", "R2"), ("C3", "M3", "R1")]
    assert report.rejects_by_reason == {"duplicate_key": 2}  # C4 twice in one ingest: rejected under latest too
    assert (report.rows_read, report.rows_accepted) == (4, 2)
    assert any("1 stored row(s) replaced" in n for n in report.notes)
    assert lake.read(ARCHIVE, version=report.version - 1).filter(F.col("customer_id") == "C2").first()["meter_id"] == "M2"


# ------------------------------------------------------------------ encoding and delimiter


def test_bad_byte_names_file_and_line_before_spark_reads(make_settings, spark, tmp_path):
    settings = make_settings()
    lake = Lake(settings, spark)
    path = write_csv(tmp_path / "latin.csv", ["customer_id,meter_id,region,customer_type", "C1,M1,R1,residential",
                                              "C2,M2,Zürich,residential"], encoding="latin-1")
    with pytest.raises(IngestError, match=r"latin\.csv line 3: byte 0xfc not valid utf-8; nothing was written.*"
                                          r"ingest\.csv_encoding"):
        ingest_files(spark, lake, settings, ARCHIVE, [path])
    assert not lake.exists(ARCHIVE)
    latin = make_settings("ingest.csv_encoding=latin-1")
    report = ingest_files(spark, Lake(latin, spark), latin, ARCHIVE, [path])
    assert report.rows_accepted == 2 and "Zürich" in [r["region"] for r in Lake(latin, spark).read(ARCHIVE).collect()]


def test_semicolon_file_gets_a_delimiter_hint_and_lands_with_the_delimiter(settings, lake, spark, tmp_path):
    path = write_csv(tmp_path / "semi.csv", ["meter_id;ts;kwh", "M1;2026-06-01 00:00;0.5"])
    with pytest.raises(IngestError, match=r"semi\.csv: required column 'meter_id'.*The header looks ';'-separated: "
                                          r"set ingest\.csv_delimiter=';' or pass --delimiter ';'"):
        ingest_files(spark, lake, settings, AMI, [path])
    assert ingest_files(spark, lake, settings, AMI, [path], delimiter=";").rows_accepted == 1


def test_configured_encoding_reads_gb18030(make_settings, spark, tmp_path):
    settings = make_settings("ingest.csv_encoding=gb18030")
    lake = Lake(settings, spark)
    path = write_csv(tmp_path / "gb.csv", ["customer_id,meter_id,region,customer_type", "C1,M1,华东,residential"],
                     encoding="gb18030")
    ingest_files(spark, lake, settings, ARCHIVE, [path])
    assert [r["region"] for r in lake.read(ARCHIVE).collect()] == ["华东"]


# ------------------------------------------------------------------ run: window, stage names, driver memory


@pytest.fixture
def no_spark(monkeypatch):
    """Fails the test if anything starts a Spark session (Lake.spark builds one through build_spark)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Spark session was started")

    monkeypatch.setattr("gridpersona.session.build_spark", refuse)


def seed_readings(lake, days):
    """One meter's readings on 2026-06-<days> and its archive row, through Arrow (no Spark job)."""
    lake.write_arrow(AMI, pa.table({
        "meter_id": ["M1"] * len(days),
        "ts": pa.array([dt.datetime(2026, 6, d, 4, tzinfo=dt.timezone.utc) for d in days], pa.timestamp("us", "UTC")),
        "kwh": [0.5] * len(days), "date": [dt.date(2026, 6, d) for d in days]}), partition_by=["date"])
    lake.write_arrow(ARCHIVE, pa.table({"customer_id": ["C1"], "meter_id": ["M1"], "region": ["R1"],
                                        "customer_type": ["residential"]}))


def test_run_with_an_as_of_outside_the_data_fails_before_spark_and_writes_nothing(settings, lake, no_spark, capsys):
    seed_readings(lake, [1, 2, 3])
    root = ["--env", "test", "--set", f"lake.root={lake.root}"]
    tables = lake.list_tables()

    assert cli_main(root + ["run", "clean", "--as-of", "2030-01-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gridpersona run: error: clean: bronze.ami_interval has no rows in the window 2029-10-04 .. "
                   "2030-01-01 (90 days ending on --as-of 2030-01-01); its rows cover 2026-06-01 .. 2026-06-03. "
                   "Pick an --as-of inside that range, or pass --allow-empty to run on an empty window; "
                   "nothing was written")
    assert cli_main(root + ["run", "all", "--as-of", "2026-05-31", "--window-days", "7"]) == 2
    assert "window 2026-05-25 .. 2026-05-31" in capsys.readouterr().err
    assert cli_main(root + ["run", "shapes", "--as-of", "2026-06-03"]) == 2
    assert "silver.ami_clean does not exist in the lake" in capsys.readouterr().err
    assert lake.list_tables() == tables


@pytest.mark.e2e  # runs the whole clean stage (about 15-50 s here)
def test_run_allow_empty_runs_clean_on_an_empty_window(settings, lake, spark):
    seed_readings(lake, [1])
    with pytest.raises(EmptyWindowError):
        run_pipeline(settings, spark, lake, "clean", dt.date(2026, 7, 1), 3)
    results = dict(run_pipeline(settings, spark, lake, "clean", dt.date(2026, 7, 1), 3, allow_empty=True))
    assert results["clean"].rows_in == 0 and results["clean"].outputs["silver.ami_clean"] == 0


def test_unknown_stage_fails_before_spark_with_a_suggestion(tmp_path, no_spark, capsys):
    assert cli_main(["--env", "test", "--set", f"lake.root={tmp_path}", "run", "cleen", "--as-of", "2026-06-01"]) == 2
    err = capsys.readouterr().err
    assert err == ("gridpersona run: error: unknown stage 'cleen'; did you mean 'clean'? stages: clean, shapes, "
                   "alerts, anomalies, segment-train, segment-assign, advice, forecast, tags, campaigns, evaluate, "
                   "profile or all\n")


@pytest.mark.parametrize("error", [
    RuntimeError("An error occurred while calling o123.save.\n: java.lang.OutOfMemoryError: Java heap space\n\tat x"),
    Py4JNetworkError("Answer from Java side is empty"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_driver_out_of_memory_is_one_line_naming_the_setting(tmp_path, monkeypatch, capsys, error):
    def fail(settings, args):
        raise error

    monkeypatch.setitem(COMMANDS, "tables", fail)
    root = ["--env", "test", "--set", f"lake.root={tmp_path}", "--set", "spark.conf.spark.driver.memory=1g"]
    assert cli_main(root + ["tables"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gridpersona tables: error: the Spark driver ")
    assert "raise spark.conf.spark.driver.memory (now 1g), e.g. --set spark.conf.spark.driver.memory=8g" in err


def test_other_failures_are_not_called_out_of_memory():
    assert out_of_memory_message(RuntimeError("division by zero"), None) is None
