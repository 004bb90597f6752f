"""kill -9 at chosen points of real `gridpersona run` processes, and concurrent writers, on a tiny synthetic lake.

Kill loop on clean, the stage with three output tables: one in-process run (the reference, and the state
a crash must leave readable), then `run clean` subprocesses that SIGKILL themselves at fixed points
(GRIDPERSONA_CRASH_AT) and one killed from outside at a seeded random moment inside the stage; after each
kill the outputs sit at the versions of the newest succeeded row and equal the reference, and the killed
stage is `crashed`. A rerun after each kill equals the reference and leaves no staging folder or orphan file.

Cost: each kill is a fresh process with its own JVM, so the loop kills once at each DISTINCT code point of a
stage's publication (between two table commits, inside a write with Spark's staging folder present, after
every commit but before the succeeded row) plus the random moment, on the smallest lake that has all three
of clean's tables (40 meters x 4 days, generated once per module). Each kill works on its own copy of the
cleaned reference lake, so the kills are independent of one another and run two at a time (the two cores
of the CI machine; a JVM's start-up is mostly one thread). The point where files are moved into a table but
not committed (`moved:`) is covered in-process by tests/test_atomic.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.lake import deltalog
from gridpersona.config import load_settings
from gridpersona.synthetic.generate import generate_lake
from gridpersona.lake import CHECKPOINT_HOOKS, Lake, WriteConflictError
from gridpersona.stages.pipeline import STAGES, run_pipeline
from gridpersona.stages.runner import stage_runs

pytestmark = pytest.mark.e2e

METERS, DAYS = 40, 4
START = dt.date(2026, 6, 1)
AS_OF = START + dt.timedelta(days=DAYS - 1)
REPO = Path(__file__).resolve().parents[1]
CLEAN_OUTPUTS = ("silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality", "silver.meter_day_readings")


def _overrides(root: Path) -> list[str]:
    return [f"lake.root={root}", f"pipeline.window_days={DAYS}", "segment.k=4"]


def _rows(lake: Lake, table: str) -> list[tuple]:
    df = lake.read(table)
    cols = [F.round(f.name, 9).alias(f.name) if isinstance(f.dataType, T.DoubleType) else F.col(f.name)
            for f in df.schema.fields if not isinstance(f.dataType, (T.ArrayType, T.MapType))]
    return sorted((tuple(r) for r in df.select(*cols).collect()), key=repr)


def _outputs(lake: Lake) -> list[str]:
    return [t for s in STAGES for t in s.outputs if lake.exists(t)]


def _cli(root: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    env.pop("GRIDPERSONA_CRASH_AT", None)
    if crash_at:
        env["GRIDPERSONA_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "gridpersona.app.cli", "--env", "test"]
    for item in _overrides(root):
        cmd += ["--set", item]
    # Its own session: the JVM child is found (and awaited) through the process group.
    return subprocess.Popen(cmd + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_group_gone(proc: subprocess.Popen) -> None:
    """The driver's JVM ends when its Python parent's pipe closes; wait for that before the next writer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


def _killed(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=600)
    _wait_group_gone(proc)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return err


def _check_consistent(lake: Lake) -> None:
    """Every stage's outputs are at the versions its newest succeeded row published."""
    runs = stage_runs(lake)
    for spec in STAGES:
        present = [t for t in spec.outputs if lake.exists(t)]
        if not present:
            continue
        newest = next(r for r in runs if r["stage"] == spec.name and r["status"] == "succeeded")
        assert {t: lake.version(t) for t in present} == {t: v for t, v in newest["versions_written"].items()
                                                          if t in present}, spec.name


def _leftovers(lake: Lake) -> list[str]:
    """Staging folders and data files no Delta version references, in every table folder."""
    found = []
    for table in lake.list_tables():
        root = lake.path(table)
        referenced = deltalog.added_paths(root, -1)
        for dirpath, dirs, files in os.walk(root):
            rel_dir = os.path.normpath(os.path.relpath(dirpath, root))
            if rel_dir.split(os.sep)[0] in ("_delta_log", "_sql_snapshot"):
                continue
            found += [os.path.normpath(os.path.join(table, rel_dir, d)) for d in dirs if d == "_staging"]
            found += [os.path.join(table, rel_dir, f) for f in files
                      if f.endswith(".parquet") and os.path.normpath(os.path.join(rel_dir, f)) not in referenced]
    return found


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory, spark) -> Path:
    """The module's one generated lake (bronze only); tests take copies of it."""
    root = tmp_path_factory.mktemp("crash-generated") / "lake"
    settings = load_settings("test", _overrides(root))
    generate_lake(settings, Lake(settings, spark), meters=METERS, days=DAYS, start=START)
    return root


@pytest.fixture(scope="module")
def crash_lake(generated_root, tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("crash") / "lake"
    shutil.copytree(generated_root, root)
    settings = load_settings("test", _overrides(root))
    lake = Lake(settings, spark)
    run_pipeline(settings, spark, lake, "clean", AS_OF)
    reference = {t: _rows(lake, t) for t in _outputs(lake)}
    assert sorted(reference) == sorted(CLEAN_OUTPUTS)
    return root, settings, reference


def _kill_inside_the_stage(root: Path, settings, spark, delay: float) -> subprocess.Popen:
    """`run clean`, SIGKILLed ``delay`` seconds after its running row appears (JVM start-up varies too much
    on a shared machine for a delay from the process start to land inside the stage)."""
    proc = _cli(root, "run", "clean", "--as-of", str(AS_OF))
    seen = {r["run_id"] for r in stage_runs(Lake(settings, spark))}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["status"] == "running" and r["run_id"] not in seen for r in stage_runs(Lake(settings, spark))):
            break
        time.sleep(0.1)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc


KILL_POINTS = [
    "clean:committed:silver.ami_quarantine",  # between the stage's table commits
    # (Files moved into a table but never committed, the journaled orphans, are covered in-process by
    # tests/test_atomic.py: one subprocess less here.)
    "clean:staged:silver.meter_day_quality",  # inside a write: Spark's staging folder present
    "clean:before-publish",  # every table committed, the succeeded row not written
]


def _kill(point: str, root: Path, spark) -> tuple[float, str]:
    """Runs `run clean` on the lake at ``root`` until it is SIGKILLed at ``point``: (start time, its stderr)."""
    started = time.time()
    if point == "random":
        settings = load_settings("test", _overrides(root))
        proc = _kill_inside_the_stage(root, settings, spark, random.Random(7).uniform(0.0, 3.0))
    else:
        proc = _cli(root, "run", "clean", "--as-of", str(AS_OF), crash_at=point)
    return started, _killed(proc)


def test_kill_loop_leaves_whole_stages_and_the_rerun_equals_an_uninterrupted_run(crash_lake, spark, capsys, tmp_path):
    from gridpersona.app.cli import cmd_runs

    root, _, reference = crash_lake
    points = KILL_POINTS + ["random"]
    roots = {point: tmp_path / f"kill-{i}" / "lake" for i, point in enumerate(points)}
    for copy in roots.values():
        shutil.copytree(root, copy)
    with ThreadPoolExecutor(max_workers=2) as pool:
        killed = dict(zip(points, pool.map(lambda p: _kill(p, roots[p], spark), points)))

    results = []
    for point in points:
        started, _ = killed[point]
        settings = load_settings("test", _overrides(roots[point]))
        lake = Lake(settings, spark)
        _check_consistent(lake)
        assert {t: _rows(lake, t) for t in _outputs(lake)} == reference, point
        (run,) = [r for r in stage_runs(lake) if r["started_at"].timestamp() >= started]
        assert (run["stage"], run["status"]) == ("clean", "crashed"), point
        assert cmd_runs(settings, argparse.Namespace(as_of=None, limit=3)) == 0
        assert "crashed" in capsys.readouterr().out
        left = _leftovers(lake)

        run_pipeline(settings, spark, lake, "clean", AS_OF)
        lake = Lake(settings, spark)
        _check_consistent(lake)
        assert {t: _rows(lake, t) for t in _outputs(lake)} == reference, point
        assert _leftovers(lake) == [], point
        results.append((point, left))
    print("kill loop (point, leftovers before the rerun):", results, file=sys.stderr)


@pytest.fixture
def busy_lake(generated_root, tmp_path, spark):
    root = tmp_path / "lake"
    shutil.copytree(generated_root, root)
    settings = load_settings("test", _overrides(root))
    return settings, Lake(settings, spark)


def _hook(point: str, action):
    def hook(name: str) -> None:
        if name == point and not hook.fired:
            hook.fired = True
            action()

    hook.fired = False
    return hook


def test_an_ingest_during_clean_is_in_the_next_run_and_nothing_is_lost(busy_lake, spark, tmp_path):
    from gridpersona.stages.ingest import ingest_files

    settings, lake = busy_lake
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    bronze = lake.read_arrow("bronze.ami_interval")
    late = bronze.filter(pc.equal(bronze["date"], AS_OF)).slice(0, 25)
    # Readings sent again, later (zone-aware timestamps as stored): duplicates clean must account for.
    late_file = tmp_path / "late.parquet"
    pq.write_table(late.drop_columns(["date"]), late_file)
    before = lake.version("bronze.ami_interval")

    def ingest() -> None:
        ingest_files(spark, Lake(settings, spark), settings, "bronze.ami_interval", [str(late_file)])

    hook = _hook("clean:committed:silver.ami_quarantine", ingest)
    CHECKPOINT_HOOKS.append(hook)
    try:
        (first,) = run_pipeline(settings, spark, lake, "clean", AS_OF)
    finally:
        CHECKPOINT_HOOKS.remove(hook)
    assert hook.fired
    after = Lake(settings, spark)
    assert after.version("bronze.ami_interval") == before + 1
    (run,) = [r for r in stage_runs(after) if r["stage"] == "clean"]
    assert run["status"] == "succeeded" and run["versions_read"]["bronze.ami_interval"] == before
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    assert first[1].rows_in == after.partition_rows("bronze.ami_interval", "date", dates, version=before)

    (second,) = run_pipeline(settings, spark, after, "clean", AS_OF)
    raw = after.partition_rows("bronze.ami_interval", "date", dates)
    assert second[1].rows_in == raw == first[1].rows_in + len(late)
    kept = after.read("silver.ami_clean").filter(F.col("quality").isin("measured", "outlier_replaced")).count()
    assert kept + after.read("silver.ami_quarantine").count() == raw


def test_two_cleans_racing_on_a_fresh_lake_the_loser_fails_in_one_line_and_writes_nothing(busy_lake, spark):
    settings, lake = busy_lake
    loser: dict = {}

    def second_clean() -> None:
        other = Lake(settings, spark)
        try:
            run_pipeline(settings, spark, other, "clean", AS_OF)
        except WriteConflictError as exc:
            loser["error"] = str(exc)
        loser["tables"] = [t for t in CLEAN_OUTPUTS if other._exists_physical(t)]

    hook = _hook("clean:staged:silver.ami_quarantine", second_clean)
    CHECKPOINT_HOOKS.append(hook)
    try:
        run_pipeline(settings, spark, lake, "clean", AS_OF)
    finally:
        CHECKPOINT_HOOKS.remove(hook)
    assert loser["error"].startswith("silver.ami_clean is being written by run ")
    assert "(stage clean, pid" in loser["error"] and "\n" not in loser["error"]
    assert loser["tables"] == []  # the loser created nothing (the winner had not committed yet)
    statuses = sorted(r["status"] for r in stage_runs(Lake(settings, spark)))
    assert statuses == ["failed", "succeeded"]
    assert _leftovers(Lake(settings, spark)) == []


def test_the_cli_reports_a_conflict_in_one_line_with_exit_2(busy_lake, spark):
    settings, lake = busy_lake
    holder = Lake(settings, spark)
    holder.begin_stage("holder000001", "clean", CLEAN_OUTPUTS)
    try:
        proc = _cli(Path(settings.lake.root), "run", "clean", "--as-of", str(AS_OF))
        out, err = proc.communicate(timeout=600)
        _wait_group_gone(proc)
    finally:
        holder.end_stage()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("gridpersona run: error: silver.ami_clean is being written by run holder000001 "
                           f"(stage clean, pid {os.getpid()}, since ")
