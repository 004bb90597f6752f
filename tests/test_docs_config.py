"""Config validation, the data dictionary and the CLI's error surface."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridpersona.app import cli
from gridpersona.config import ConfigError, load_settings
from gridpersona.contracts.dictionary import render

ROOT = Path(__file__).resolve().parents[1]


def test_data_dictionary_matches_the_contracts():
    committed = (ROOT / "docs" / "data_dictionary.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/data_dictionary.md is stale: run `make docs`"


def test_layers_merge_base_env_and_overrides():
    s = load_settings("test", ["lake.root=/data/x", "generate.meters=12", "spark.conf.spark.sql.shuffle.partitions=3"])
    assert s.lake.root == "/data/x"
    assert s.generate.meters == 12
    assert s.spark.master == "local[2]"  # from conf/test.yaml
    assert s.ami.time_zone == "Asia/Shanghai"  # from conf/base.yaml
    assert s.spark.conf["spark.sql.shuffle.partitions"] == 3
    assert s.spark.conf["spark.driver.memory"] == "2g"  # env layer keeps its sibling keys


def test_unknown_key_names_the_file_and_key(tmp_path):
    (tmp_path / "base.yaml").write_text("lake:\n  root: ./lake\n")
    (tmp_path / "prod.yaml").write_text("lake:\n  rooot: /data\n")
    with pytest.raises(ConfigError) as err:
        load_settings("prod", conf_dir=tmp_path)
    assert f"{tmp_path / 'prod.yaml'}: unknown key 'lake.rooot'" in str(err.value)


def test_wrong_type_names_the_override():
    with pytest.raises(ConfigError, match=r"--set generate.days=many: key 'generate.days'"):
        load_settings("test", ["generate.days=many"])


def test_missing_environment_file_is_named():
    with pytest.raises(ConfigError, match=r"conf/nowhere.yaml"):
        load_settings("nowhere")


def test_bad_values_are_refused_before_spark(tmp_path):
    with pytest.raises(ConfigError, match="ami.time_zone.*unknown time zone 'Mars/Olympus'"):
        load_settings("test", ["ami.time_zone=Mars/Olympus"])
    with pytest.raises(ConfigError, match="covered 2 times"):
        load_settings("test", ['tariff.flat=["07:00-12:00"]'])
    with pytest.raises(ConfigError, match="ami.interval_minutes"):
        load_settings("test", ["ami.interval_minutes=20"])
    with pytest.raises(ConfigError, match="unknown archetype"):
        load_settings("test", ["generate.archetype_mix={solar: 1.0}"])


def test_cli_reports_config_errors_without_traceback(capsys):
    code = cli.main(["--env", "test", "--set", "lake.nope=1", "tables"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown key 'lake.nope'" in err and "Traceback" not in err


def test_cli_tables_lists_versions_rows_and_sizes(capsys, spark, lake):
    import datetime as dt

    df = spark.createDataFrame([("m1", 1.0, dt.date(2026, 6, 1))], "meter_id string, kwh double, date date")
    lake.append(df, "bronze.x", partition_by=["date"])
    lake.append(df, "bronze.x")
    code = cli.main(["--env", "test", "--set", f"lake.root={lake.root}", "tables"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("bronze.x"))
    assert line.split()[:3] == ["bronze.x", "1", "2"]  # version 1, 2 rows
    assert "date" in line
