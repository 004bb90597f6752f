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

from gridpersona.ingest import IngestError, ingest_files
from gridpersona.lake import Lake

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
