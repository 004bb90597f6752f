"""Incremental runs: the date planner (stages.incremental) on hand-made lakes, with stub stages that write one
row per planned date, so each test sees exactly which dates a run was given and what ops.job_runs recorded."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from gridpersona.contracts.bronze import AMI_INTERVAL
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.contracts.silver import AMI_CLEAN
from gridpersona.lake import deltalog
from gridpersona.stages.incremental import plan_dates
from gridpersona.stages.pipeline import stage_spec
from gridpersona.stages.runner import StageContext, StageResult, parse_compact_dates, run_stage
from gridpersona.synthetic.generate import arrow_schema

D = [dt.date(2026, 6, 1) + dt.timedelta(days=i) for i in range(12)]  # D[0] .. D[11]
LOOKBACK = 2  # clean's scale look-back: a changed day x reaches x-1 .. x+3
WINDOW = 6


@pytest.fixture
def settings(make_settings):
    return make_settings(f"clean.scale_lookback_days={LOOKBACK}", f"pipeline.window_days={WINDOW}")


def _bronze(days, meters=("m1",), hour=0) -> pa.Table:
    """One reading per meter and day at ``hour`` UTC (a different hour is another reading of the same day)."""
    rows = [{"meter_id": m, "ts": dt.datetime(d.year, d.month, d.day, hour, tzinfo=dt.timezone.utc), "kwh": 0.5,
             "date": d} for d in days for m in meters]
    return pa.Table.from_pylist(rows, schema=arrow_schema(AMI_INTERVAL))


def _land(lake, days, hour=0):
    lake.write_arrow(AMI_INTERVAL.name, _bronze(days, hour=hour), mode="append", partition_by=["date"])


def _stub(stage: str, calls: list):
    """A stage function writing one row per date it is given to the stage's date output."""
    output = stage_spec(stage).incremental_output

    def run(ctx: StageContext) -> StageResult:
        dates = ctx.process_dates
        calls.append(dates)
        df = ctx.spark.createDataFrame([(ctx.run_id, d) for d in dates], "run_id string, date date")
        return StageResult(outputs={output: ctx.lake.replace(df, output, where={"date": dates},
                                                             partition_by=["date"]).rows})

    return run


def _run(settings, spark, lake, stage, as_of, calls):
    """One incremental run of ``stage``'s stub through run_stage, planned as run_pipeline plans it."""
    spec = stage_spec(stage)
    ctx = StageContext(settings, spark, lake, as_of, WINDOW)
    run_stage(stage, _stub(stage, calls), ctx, outputs=spec.outputs, inputs=spec.inputs,
              plan=lambda c: plan_dates(c.lake, c.settings, stage_spec(stage), c.as_of, c.window_days))
    return calls[-1] if calls else None


def _last_row(lake, stage):
    rows = [r for r in lake.read_arrow(JOB_RUNS.name).to_pylist() if r["stage"] == stage and r["status"] != "running"]
    return max(rows, key=lambda r: r["started_at"])


def _window(as_of):
    return [as_of - dt.timedelta(days=i) for i in reversed(range(WINDOW))]


def test_first_run_plans_the_whole_window_and_records_its_dates(settings, spark, lake):
    _land(lake, D[0:6])
    plan = plan_dates(lake, settings, stage_spec("clean"), D[5], WINDOW)
    assert list(plan.dates) == _window(D[5])
    assert set(plan.reasons.values()) == {"first run"}

    calls = []
    assert _run(settings, spark, lake, "clean", D[5], calls) == _window(D[5])
    row = _last_row(lake, "clean")
    assert row["status"] == "succeeded"
    assert parse_compact_dates(row["dates"]) == _window(D[5])


def test_a_new_bronze_day_plans_that_day_and_the_days_it_reaches_inside_the_window(settings, spark, lake):
    _land(lake, D[0:6])
    _run(settings, spark, lake, "clean", D[5], [])
    _land(lake, [D[6]])
    plan = plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW)
    # D[6] is new; it reaches D[5] (its neighbour) and D[7]..D[9], which lie after the window.
    assert list(plan.dates) == [D[5], D[6]]
    assert plan.reasons[D[6]].startswith("new")
    assert plan.reasons[D[5]].startswith(f"reads {D[6]}")


def test_shapes_plans_exactly_the_dates_clean_rewrote_with_no_look_back(settings, spark, lake):
    day = {"meter_id": "m1", "ts": dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), "interval_kwh": 1.0}
    schema = pa.schema([("meter_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("interval_kwh", pa.float64()), ("date", pa.date32())])
    lake.write_arrow(AMI_CLEAN.name, pa.Table.from_pylist([{**day, "date": d} for d in D[0:6]], schema=schema),
                     mode="append", partition_by=["date"])
    _run(settings, spark, lake, "shapes", D[5], [])
    lake.write_arrow(AMI_CLEAN.name, pa.Table.from_pylist([{**day, "date": d} for d in (D[2], D[3])], schema=schema),
                     mode="append", partition_by=["date"])
    plan = plan_dates(lake, settings, stage_spec("shapes"), D[5], WINDOW)
    assert list(plan.dates) == [D[2], D[3]]


def test_a_late_reading_appended_to_an_old_day_plans_that_day_and_its_reach(settings, spark, lake):
    _land(lake, D[0:8])
    _run(settings, spark, lake, "clean", D[7], [])
    _land(lake, [D[3]], hour=5)  # a late reading of D[3] landing after its day was cleaned
    calls = []
    assert _run(settings, spark, lake, "clean", D[7], calls) == [D[2], D[3], D[4], D[5], D[6]]
    assert parse_compact_dates(_last_row(lake, "clean")["dates"]) == [D[2], D[3], D[4], D[5], D[6]]


def test_a_change_before_the_window_plans_the_window_days_it_reaches(settings, spark, lake):
    _land(lake, D[0:10])
    _run(settings, spark, lake, "clean", D[9], [])  # window D[4] .. D[9]
    _land(lake, [D[2]], hour=5)  # before the window; its look-back reach ends at D[5]
    assert list(plan_dates(lake, settings, stage_spec("clean"), D[9], WINDOW).dates) == [D[4], D[5]]


def test_a_rewritten_bronze_partition_is_detected(settings, spark, lake):
    _land(lake, D[0:8])
    _run(settings, spark, lake, "clean", D[7], [])
    df = spark.createDataFrame(_bronze([D[4]], meters=("m1", "m2")).to_pylist(), AMI_INTERVAL.schema)
    lake.replace(df, AMI_INTERVAL.name, where={"date": [D[4]]})
    plan = plan_dates(lake, settings, stage_spec("clean"), D[7], WINDOW)
    assert list(plan.dates) == [D[3], D[4], D[5], D[6], D[7]]
    assert "changed" in plan.reasons[D[4]]


def test_nothing_new_runs_no_stage_code_writes_nothing_and_still_logs_a_succeeded_run(settings, spark, lake, caplog):
    _land(lake, D[0:6])
    calls = []
    _run(settings, spark, lake, "clean", D[5], calls)
    output = stage_spec("clean").incremental_output
    version = lake.version(output)
    with caplog.at_level("INFO", logger="gridpersona"):
        _run(settings, spark, lake, "clean", D[5], calls)
    assert len(calls) == 1  # the stub ran for the first run only
    assert lake.version(output) == version
    row = _last_row(lake, "clean")
    assert row["status"] == "succeeded" and row["dates"] == ""
    assert "nothing new" in caplog.text
    # The next plan starts from the version the empty run pinned: a new day is all it sees.
    _land(lake, [D[6]])
    assert list(plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW).dates) == [D[5], D[6]]


def test_a_failed_run_does_not_move_the_plan_forward(settings, spark, lake):
    _land(lake, D[0:6])
    _run(settings, spark, lake, "clean", D[5], [])
    _land(lake, [D[6]])
    spec = stage_spec("clean")

    def broken(ctx):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage("clean", broken, StageContext(settings, spark, lake, D[6], WINDOW), outputs=spec.outputs,
                  inputs=spec.inputs, plan=lambda c: plan_dates(c.lake, c.settings, spec, c.as_of, c.window_days))
    assert list(plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW).dates) == [D[5], D[6]]


def test_a_commit_gone_from_the_log_plans_the_whole_window_and_says_why(settings, spark, lake):
    _land(lake, D[0:6])
    _run(settings, spark, lake, "clean", D[5], [])
    _land(lake, [D[6]])
    _land(lake, [D[6]], hour=5)
    path = lake.path(AMI_INTERVAL.name)
    # As Delta's log cleanup does: a checkpoint of the newest version, then the older commit files go.
    DeltaTable(path).create_checkpoint()
    for version in deltalog.commit_versions(path)[:-1]:
        os.remove(os.path.join(deltalog.log_dir(path), f"{version:020d}.json"))
    plan = plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW)
    assert list(plan.dates) == _window(D[6])
    assert "no longer in its Delta log" in plan.reasons[D[6]]


# ------------------------------------------------------------------ end to end: nightly runs = one window run

E2E_METERS, E2E_DAYS = 6, 4
SILVER = ("silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality", "silver.meter_day_readings",
          "silver.daily_load_shape")


def _landing_batches(readings: pa.Table, first: dt.date) -> dict[int, pa.Table]:
    """{landing day index: readings}: most readings land on their own day; every 17th lands a day late,
    every 29th two days late, and one reading of the first day is delivered again on the third."""
    rows = sorted(readings.to_pylist(), key=lambda r: (r["date"], r["meter_id"], r["ts"]))
    batches: dict[int, list[dict]] = {}
    for i, row in enumerate(rows):
        late = 1 if i % 17 == 5 else 2 if i % 29 == 7 else 0
        batches.setdefault((row["date"] - first).days + late, []).append(row)
    batches.setdefault(2, []).append(dict(rows[0]))  # a duplicate, landing late
    return {k: pa.Table.from_pylist(v, schema=readings.schema) for k, v in sorted(batches.items())}


@pytest.mark.e2e
def test_nightly_incremental_runs_with_late_readings_equal_one_window_run(make_settings, spark, tmp_path):
    """N nightly `clean, shapes --incremental` runs, each after that day's landing (late readings of older
    days included), leave the silver tables holding, for the window's dates, the rows one window run over
    the final bronze writes. Holds once clean's output for a day depends only on its readings, neighbours
    and bounded look-back (not on the run's window)."""
    from chispa import assert_df_equality
    from pyspark.sql import functions as F

    from gridpersona.config import load_settings
    from gridpersona.contracts.bronze import CUSTOMER_ARCHIVE
    from gridpersona.lake import Lake
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.synthetic.generate import generate_lake

    first = D[0]
    last = first + dt.timedelta(days=E2E_DAYS - 1)
    faults = ("generate.faults.duplicate_reading_share=0.01", "generate.faults.negative_reading_share=0.005",
              "generate.faults.spike_reading_share=0.005", "generate.faults.short_gap_meter_share=0.5")

    def lake_at(name: str) -> tuple:
        s = load_settings("test", [f"lake.root={tmp_path / name}", f"pipeline.window_days={E2E_DAYS}", *faults])
        return s, Lake(s, spark)

    source_settings, source = lake_at("source")
    generate_lake(source_settings, source, meters=E2E_METERS, days=E2E_DAYS, start=first)
    archive = source.read_arrow(CUSTOMER_ARCHIVE.name)
    batches = _landing_batches(source.read_arrow(AMI_INTERVAL.name), first)

    nightly_settings, nightly = lake_at("nightly")
    nightly.write_arrow(CUSTOMER_ARCHIVE.name, archive)
    plans = {}
    for day, batch in batches.items():
        nightly.write_arrow(AMI_INTERVAL.name, batch, mode="append", partition_by=["date"])
        as_of = min(first + dt.timedelta(days=day), last)
        for stage in ("clean", "shapes"):
            run_pipeline(nightly_settings, spark, nightly, stage, as_of, incremental=True)
            plans[(day, stage)] = _last_row(nightly, stage)["dates"]
    # The late readings did reach older days: a nightly run after the first rewrote days before its as-of.
    assert any(min(parse_compact_dates(plans[(day, "clean")])) < first + dt.timedelta(days=day) - dt.timedelta(days=1)
               for day in batches if day and plans[(day, "clean")])

    window_settings, window = lake_at("window")
    window.write_arrow(CUSTOMER_ARCHIVE.name, archive)
    window.write_arrow(AMI_INTERVAL.name, pa.concat_tables(batches.values()), mode="append", partition_by=["date"])
    for stage in ("clean", "shapes"):
        run_pipeline(window_settings, spark, window, stage, last, E2E_DAYS)

    for table in SILVER:
        got = nightly.read(table)
        in_window = F.col("date").between(first, last)
        assert_df_equality(got.filter(in_window), window.read(table), ignore_row_order=True,
                           ignore_nullable=True)
        # Outside the final window only the first run's days before the readings began: no reading there.
        before = got.filter(~in_window)
        if table == "silver.meter_day_quality":
            assert before.filter("measured_intervals + outlier_intervals + interpolated_intervals > 0").count() == 0
        else:
            assert before.count() == 0


def test_cli_refuses_incremental_with_window_days_and_for_a_whole_window_stage(tmp_path, capsys):
    from gridpersona.app.cli import main

    lake_root = f"lake.root={tmp_path / 'lake'}"
    with pytest.raises(SystemExit) as exit_info:
        main(["--env", "test", "--set", lake_root, "run", "clean", "--as-of", "2026-06-07", "--incremental",
              "--window-days", "3"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["--env", "test", "--set", lake_root, "run", "segment-train", "--as-of", "2026-06-07",
                 "--incremental"]) == 2
    err = capsys.readouterr().err
    assert "--incremental applies to clean, shapes" in err and len(err.strip().splitlines()) == 1


def test_a_window_day_without_readings_is_new_to_clean_once_and_never_to_shapes(settings, spark, lake):
    _land(lake, D[0:6])
    _run(settings, spark, lake, "clean", D[5], [])
    # D[6] ends with no reading landed: clean writes it (all missing, as a window run would), once.
    plan = plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW)
    assert list(plan.dates) == [D[6]] and plan.reasons[D[6]].startswith("new")
    _run(settings, spark, lake, "clean", D[6], [])
    assert plan_dates(lake, settings, stage_spec("clean"), D[6], WINDOW).dates == ()

    schema = pa.schema([("meter_id", pa.string()), ("date", pa.date32())])
    lake.write_arrow(AMI_CLEAN.name, pa.Table.from_pylist([{"meter_id": "m1", "date": d} for d in D[0:6]],
                                                          schema=schema), mode="append", partition_by=["date"])
    _run(settings, spark, lake, "shapes", D[5], [])
    assert plan_dates(lake, settings, stage_spec("shapes"), D[6], WINDOW).dates == ()
