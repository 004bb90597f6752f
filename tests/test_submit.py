"""scripts/submit.sh: real spark-submit runs (pyspark's own) on a small lake, and the commands it builds."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from gridpersona.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
SUBMIT = ROOT / "scripts" / "submit.sh"
# clean and shapes over the last DAYS days of the shared synthetic lake's bronze (tests/conftest.py).
DAYS = 4
# Short-lived test JVMs: C1 only. C2's compilations cost more CPU than they save on a small lake
# (clean on 100 meters x 7 days: 94 s -> 52 s of CPU, measured on this 2-core machine).
QUICK_JVM = "-XX:TieredStopAtLevel=1"


def submit(*args: str, build_dir: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRIDPERSONA_PYTHON": sys.executable, "JAVA_TOOL_OPTIONS": QUICK_JVM}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    proc = subprocess.run(["bash", str(SUBMIT), *args, "--build-dir", str(build_dir)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"submit.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-6000:]}")
    return proc


def shown_command(proc: subprocess.CompletedProcess) -> str:
    """The spark-submit command line submit.sh printed (its last [submit] line)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[submit] ") and "spark-submit" in ln]
    assert lines, proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def small_lake(synthetic_lake, tmp_path_factory):
    """A lake holding a copy of the shared lake's bronze tables only: the submitted stages write silver there."""
    root = tmp_path_factory.mktemp("submit") / "lake"
    bronze = [t for t in synthetic_lake.lake.list_tables() if t.startswith("bronze.")]
    settings, _ = synthetic_lake.copy(root, bronze, f"pipeline.window_days={DAYS}")
    sets = [*synthetic_lake.overrides, f"lake.root={root}", f"pipeline.window_days={DAYS}"]
    return settings, sets, synthetic_lake.as_of


@pytest.mark.e2e
def test_spark_submit_runs_clean_then_shapes_and_writes_the_tables(small_lake, spark, tmp_path):
    settings, sets, as_of = small_lake
    start = as_of - dt.timedelta(days=DAYS - 1)
    set_args = [a for s in sets for a in ("--set", s)]
    runs = [submit(stage, "--as-of", as_of.isoformat(), "--env", "test", *set_args, build_dir=tmp_path / "build")
            for stage in ("clean", "shapes")]

    # The job printed its stage with timings and row counts, including progress lines per write
    # (spark-submit sends the Python driver's stderr to its stdout).
    clean_out = runs[0].stdout + runs[0].stderr
    assert re.search(r"\[clean\] done in [\d.]+ s: [\d,]+ rows in -> silver\.ami_clean", clean_out)
    assert re.search(r"\[clean\] replace silver\.ami_quarantine: [\d,]+ rows, version \d+", clean_out)
    assert "--master local[2]" in shown_command(runs[0]).replace("\\", "")

    lake = Lake(settings, spark)
    raw = lake.read("bronze.ami_interval").filter(F.col("date").between(start, as_of)).count()
    kept = lake.read("silver.ami_clean").filter(F.col("quality").isin("measured", "outlier_replaced")).count()
    assert raw == kept + lake.read("silver.ami_quarantine").count()
    shapes = lake.read("silver.daily_load_shape")
    assert shapes.count() == shapes.select("meter_id", "date").distinct().count() > 0
    assert {r["date"] for r in shapes.select("date").distinct().collect()} <= {start + dt.timedelta(days=i) for i in range(DAYS)}

    # The run log: one succeeded row per submission, with the config hash submit.sh validated
    # and the code version it baked into the shipped artifact.
    runs_log = {r["stage"]: r for r in lake.read("ops.job_runs").filter(F.col("status") != "running").collect()}
    assert set(runs_log) == {"clean", "shapes"}
    hashes = set(re.findall(r"config hash (\w+)", runs[0].stderr + runs[1].stderr))
    with zipfile.ZipFile(tmp_path / "build" / "gridpersona.zip") as zf:
        baked = re.search(r"CODE_VERSION = '([^']+)'", zf.read("gridpersona/_build_info.py").decode())[1]
    for row in runs_log.values():
        assert row["status"] == "succeeded" and row["as_of"] == as_of and row["rows_out"] > 0
        assert {row["config_hash"]} == hashes == {settings.config_hash()}
        assert row["code_version"] == baked


def test_bad_config_fails_before_anything_is_submitted(tmp_path):
    proc = submit("clean", "--as-of", "2026-06-07", "--set", "lake.rot=/x", build_dir=tmp_path / "b", check=False)
    assert proc.returncode == 2
    assert "unknown key 'lake.rot'" in proc.stderr
    assert "spark-submit" not in proc.stderr


def test_unknown_stage_names_the_known_ones(tmp_path):
    proc = submit("cleanse", "--as-of", "2026-06-07", build_dir=tmp_path / "b", check=False)
    assert proc.returncode == 2
    assert "no job for stage 'cleanse'" in proc.stderr and "shapes" in proc.stderr and "profile" in proc.stderr


def test_master_deploy_mode_and_confs_pass_through_unchanged(tmp_path):
    for master in ("yarn", "k8s://https://10.0.0.1:6443", "spark://head:7077"):
        proc = submit("all", "--as-of", "2026-06-07", "--master", master, "--conf", "spark.executor.memory=8g",
                      "--set", "spark.conf.spark.sql.shuffle.partitions=64", "--dry-run", build_dir=tmp_path / "b")
        cmd = shown_command(proc).replace("\\", "")
        assert f"--master {master} --deploy-mode client" in cmd
        assert "jobs/all.py --as-of 2026-06-07 --env local" in cmd
        assert "--conf spark.executor.memory=8g" in cmd
        # Config's spark.conf reaches spark-submit, where launch-time settings take effect.
        assert "--conf spark.sql.shuffle.partitions=64" in cmd
        assert "log4j2.configurationFile" not in cmd  # clusters keep their own logging
        assert "--packages" not in cmd and "DeltaSparkSessionExtension" not in cmd


def test_incremental_reaches_the_job_and_excludes_window_days(tmp_path):
    proc = submit("clean", "--as-of", "2026-06-07", "--incremental", "--dry-run", build_dir=tmp_path / "b")
    cmd = shown_command(proc).replace("\\", "")
    assert "jobs/clean.py --as-of 2026-06-07" in cmd and cmd.endswith(" --incremental")
    both = submit("clean", "--as-of", "2026-06-07", "--incremental", "--window-days", "3", "--dry-run",
                  build_dir=tmp_path / "c", check=False)
    assert both.returncode == 2 and "--incremental and --window-days exclude each other" in both.stderr


def test_cluster_mode_ships_the_config_as_an_archive(tmp_path):
    proc = submit("clean", "--as-of", "2026-06-07", "--master", "yarn", "--deploy-mode", "cluster", "--dry-run",
                  build_dir=tmp_path / "b")
    cmd = shown_command(proc).replace("\\", "")
    assert f"--archives {tmp_path / 'b' / 'conf.zip'}#gridpersona_conf" in cmd
    assert "--conf-dir gridpersona_conf" in cmd
    with zipfile.ZipFile(tmp_path / "b" / "conf.zip") as zf:
        assert {"base.yaml", "local.yaml", "cluster.yaml"} <= set(zf.namelist())
    # A cluster-mode driver must not be told to run this machine's python.
    assert re.search(r"PYSPARK_DRIVER_PYTHON=$", proc.stderr, flags=re.M)


def test_delta_spark_backend_adds_the_delta_packages_and_conf(tmp_path):
    proc = submit("shapes", "--as-of", "2026-06-07", "--env", "cluster", "--master", "yarn", "--dry-run",
                  build_dir=tmp_path / "b")
    cmd = shown_command(proc).replace("\\", "")
    assert "--packages io.delta:delta-spark_4.2_2.13:4.4.1" in cmd
    assert "--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in cmd
    assert "--conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog" in cmd
    assert "--env cluster" in cmd


def test_venv_archive_is_shipped_for_the_executors(tmp_path):
    env_archive = tmp_path / "env.tar.gz"
    env_archive.write_bytes(b"")
    proc = submit("clean", "--as-of", "2026-06-07", "--master", "yarn", "--venv-archive", str(env_archive), "--dry-run",
                  build_dir=tmp_path / "b")
    assert f"{env_archive}#environment" in shown_command(proc).replace("\\", "")
    assert "PYSPARK_PYTHON=./environment/bin/python" in proc.stderr


def test_help_documents_every_option():
    script = SUBMIT.read_text()
    parsed = set(re.findall(r"^\s+(--[a-z-]+)(?:\|--[a-z-]+)?\)", script, flags=re.M))
    parsed |= set(re.findall(r"\|(--[a-z-]+)\)", script))
    assert {"--as-of", "--master", "--conf", "--env", "--set", "--pack-venv"} <= parsed
    helptext = subprocess.run(["bash", str(SUBMIT), "--help"], capture_output=True, text=True, check=True).stdout
    for option in parsed:
        assert re.search(rf"^\s+(-\w, )?{option}\b", helptext, flags=re.M), option


def test_no_job_script_shadows_a_standard_library_module():
    # Python puts jobs/ first on sys.path, so jobs/profile.py would break pyspark's own imports.
    names = {p.stem for p in (ROOT / "jobs").glob("*.py")}
    assert not names & set(sys.stdlib_module_names)


def test_artifact_is_the_package_with_its_version_and_is_byte_stable(tmp_path):
    from gridpersona.app.submit import build_package_zip

    a = build_package_zip(tmp_path / "a.zip", "9.9.9+abc")
    b = build_package_zip(tmp_path / "b.zip", "9.9.9+abc")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = set(zf.namelist())
    assert {"gridpersona/__init__.py", "gridpersona/app/jobs.py", "gridpersona/_build_info.py", "gridpersona/log4j2.properties"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
