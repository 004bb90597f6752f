"""End to end on a small synthetic lake: every stage, twice, checked against the ground truth."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.synthetic.truth_checks import fault_detection, segment_agreement, tag_accuracy
from gridpersona.lake import Lake
from gridpersona.stages.pipeline import STAGE_ORDER, run_pipeline
from gridpersona.contracts import pii_columns

pytestmark = pytest.mark.e2e

# The session's shared synthetic lake (tests/conftest.py): 150 meters x 14 days, every fault planted, k=7.
from conftest import SYNTHETIC_DAYS as DAYS, SYNTHETIC_METERS as METERS, SYNTHETIC_START as START  # noqa: E402

AS_OF = START + dt.timedelta(days=DAYS - 1)
OUTPUTS = ("silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality", "silver.meter_day_readings",
           "silver.daily_load_shape",
           "gold.segment_model", "gold.customer_segments", "gold.segment_profile", "gold.customer_tags",
           "gold.tag_catalog", "gold.segment_tag_profile", "gold.consumption_price_quadrant",
           "gold.campaign_targets", "gold.campaign_evaluation")


def _snapshot(lake: Lake, table: str) -> list[tuple]:
    """The table's rows, sorted; config_hash left out (a copy of the lake has another lake.root, so another hash)."""
    df = lake.read(table).drop("config_hash")

    def stable(f: T.StructField):
        # Doubles rounded to 9 decimals: summation order may differ between runs.
        if isinstance(f.dataType, T.DoubleType):
            return F.round(f.name, 9).alias(f.name)
        if isinstance(f.dataType, T.ArrayType) and isinstance(f.dataType.elementType, T.DoubleType):
            return F.transform(f.name, lambda x: F.round(x, 9)).alias(f.name)
        return F.col(f.name)

    # repr as sort key: rows may hold nulls, which do not compare with values.
    return sorted((tuple(r) for r in df.select(*[stable(f) for f in df.schema.fields]).collect()), key=repr)


@pytest.fixture(scope="module")
def pipeline_lake(synthetic_lake, tmp_path_factory):
    """The shared lake after one `run all`, and a copy of it after a second `run all` for the same as-of.

    The rerun writes to the copy: the shared lake stays as every other module expects it.
    """
    settings, lake, first = synthetic_lake.settings, synthetic_lake.lake, synthetic_lake.results
    snapshots = {t: _snapshot(lake, t) for t in OUTPUTS}
    rerun_settings, rerun = synthetic_lake.copy(tmp_path_factory.mktemp("rerun") / "lake")
    second = run_pipeline(rerun_settings, synthetic_lake.spark, rerun, "all", AS_OF)
    return settings, lake, first, (second, rerun), snapshots


def test_every_raw_row_is_clean_or_quarantined(pipeline_lake):
    _, lake, first, _, _ = pipeline_lake
    raw = lake.read("bronze.ami_interval").filter(F.col("date").between(START, AS_OF)).count()
    clean = lake.read("silver.ami_clean").filter(F.col("quality").isin("measured", "outlier_replaced")).count()
    quarantine = lake.read("silver.ami_quarantine").count()
    assert raw == clean + quarantine
    assert dict(first)["clean"].rows_in == raw


def test_every_planted_fault_category_is_caught(pipeline_lake):
    settings, lake, _, _, _ = pipeline_lake
    scores = {s.category: s for s in fault_detection(lake, START, AS_OF, settings.ami.interval_minutes)}
    assert set(scores) == {"duplicate", "negative", "null_value", "unknown_meter", "spike", "short_gap", "long_gap"}
    for s in scores.values():
        assert s.planted > 0, s
        assert s.precision >= 0.95 and s.recall >= 0.95, s


def test_segments_recover_the_planted_archetypes(pipeline_lake):
    _, lake, _, _, _ = pipeline_lake
    agree = segment_agreement(lake, AS_OF)
    assert agree["meters"] == METERS
    assert agree["ari_segment_label"] >= 0.85
    # Each day-time pattern keeps its own name (a qualifier may tell two of its segments apart). This lake is
    # 14 mild June days: EV charging on some nights and electric heating/cooling every night share one
    # night-load segment here; their separation is measured on the default 90-day lake (truth-check).
    night_load = {"ev_night", "electric_heating"}
    for archetype, (label, _) in agree["majority_label"].items():
        if archetype in night_load:
            assert label in night_load or "night" in label, (archetype, label)
        else:
            assert label == archetype or label.startswith(archetype + "_"), (archetype, label)


def test_rerun_for_the_same_as_of_leaves_identical_tables(pipeline_lake):
    _, _, _, (_, rerun), before = pipeline_lake
    for table in OUTPUTS:
        assert _snapshot(rerun, table) == before[table], table
        if "config_hash" in rerun.read(table).columns:  # the rerun's rows carry the rerun's config
            hashes = {r[0] for r in rerun.read(table).select("config_hash").distinct().collect()}
            assert hashes == {rerun.settings.config_hash()}, table


def test_each_stage_run_is_logged(pipeline_lake):
    _, lake, first, (second, rerun), _ = pipeline_lake
    assert [name for name, _ in first] == [name for name, _ in second] == list(STAGE_ORDER)
    for log, n_runs in ((lake, 1), (rerun, 2)):  # the copy holds the first run's rows, then the rerun's
        rows = log.read("ops.job_runs").collect()
        runs = [r for r in rows if r["status"] != "running"]
        assert len(runs) == n_runs * len(STAGE_ORDER) == len(rows) - len(runs)  # each stage run: a running row, an end row
        assert {r["status"] for r in runs} == {"succeeded"}
        assert sorted(r["stage"] for r in runs) == sorted(list(STAGE_ORDER) * n_runs)
        assert all(r["as_of"] == AS_OF and r["config_hash"] and r["duration_s"] > 0 for r in runs)


def test_failed_stage_is_recorded_with_its_error(pipeline_lake, spark):
    settings, lake, _, _, _ = pipeline_lake
    broken = Lake(settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": str(lake.root) + "-missing"})}), spark)
    # allow_empty skips the pre-flight window check, so the stage itself starts and fails on its input.
    with pytest.raises(Exception):
        run_pipeline(broken.settings, spark, broken, "clean", AS_OF, allow_empty=True)
    failed = broken.read("ops.job_runs").filter(F.col("status") == "failed").collect()
    assert len(failed) == 1 and failed[0]["stage"] == "clean" and "bronze.ami_interval" in failed[0]["error"]


def test_no_pii_reaches_gold(pipeline_lake):
    _, lake, _, _, _ = pipeline_lake
    pii = pii_columns()
    for table in [t for t in lake.list_tables() if t.startswith(("gold.", "silver."))]:
        assert not set(lake.read(table).columns) & pii, table


def test_tags_match_the_planted_truth(pipeline_lake):
    from gridpersona.app.cli import TAG_ACCURACY_BARS, truth_report

    settings, lake, first, _, _ = pipeline_lake
    scores = {s.category: s for s in tag_accuracy(lake, AS_OF)}
    for tag, bar in TAG_ACCURACY_BARS.items():
        planted = [s for name, s in scores.items() if name.startswith(tag + "=")]
        assert planted and sum(s.planted for s in planted) > 0, tag
        # 12 EV homes charging on 30-70 % of 13 nights: one error moves precision or recall by 0.08, so this
        # small lake holds ev_owner to 0.8; the 0.90 is measured on the default lake (truth-check).
        tag_bar = 0.8 if tag == "ev_owner" else bar
        for s in planted:
            assert s.precision >= tag_bar and s.recall >= tag_bar, s
    assert "ev_owner=true" in truth_report(lake, START, AS_OF, settings.ami.interval_minutes)


def test_customer_tags_hold_one_row_per_customer_with_the_catalog_version(pipeline_lake):
    settings, lake, first, _, _ = pipeline_lake
    tags = lake.read("gold.customer_tags").filter(F.col("as_of") == AS_OF)
    archive = lake.read("bronze.customer_archive")
    assert tags.count() == archive.count() == tags.select("customer_id").distinct().count()
    catalog = lake.read("gold.tag_catalog").filter(F.col("as_of") == AS_OF).collect()
    assert [r["code"] for r in sorted(catalog, key=lambda r: r["position"])] == [t.code for t in settings.tags.definitions]
    versions = {r["tag_catalog_version"] for r in tags.select("tag_catalog_version").distinct().collect()}
    assert versions == {catalog[0]["catalog_version"]}
    assert dict(first)["tags"].outputs["gold.customer_tags"] == METERS


def test_group_portraits_cover_every_segment_and_the_quadrants(pipeline_lake):
    _, lake, first, _, _ = pipeline_lake
    profile = lake.read("gold.segment_tag_profile").filter(F.col("as_of") == AS_OF)
    segments = {r["segment_id"] for r in lake.read("gold.segment_profile").filter(F.col("as_of") == AS_OF).collect()}
    assert {r["segment_id"] for r in profile.select("segment_id").distinct().collect()} >= segments | {-1}
    ev = {r["segment_label"]: r["share"] for r in profile.filter((F.col("tag") == "ev_owner") & (F.col("value") == "true"))
          .collect()}
    assert ev["ev_night"] > 0.8 and ev.get("flat", 0.0) < 0.1
    quadrant = lake.read("gold.consumption_price_quadrant").filter(F.col("as_of") == AS_OF).collect()
    assert sum(r["customers"] for r in quadrant) == METERS
    assert {r["quadrant"] for r in quadrant if r["customer_type"] == "residential"} >= {"high_use_low_sensitivity",
                                                                                        "low_use_low_sensitivity"}


MINIMAL_WINDOW_DAYS = 7
ABSENT_NOTE = ("optional inputs absent, read as empty: bronze.billing_payment, bronze.service_interaction, "
               "bronze.contact_history, bronze.campaign_response, bronze.weather; bronze.holiday_calendar absent: the "
               "built-in calendar of calendar.country=cn applies")


@pytest.fixture(scope="module")
def minimal_lake(synthetic_lake, spark, tmp_path_factory):
    """Meter readings and an archive of the required columns only, landed as a user would; no other input."""
    import logging
    import shutil

    from gridpersona.config import load_settings
    from gridpersona.stages.ingest import ingest_files

    full = synthetic_lake.lake
    root = tmp_path_factory.mktemp("minimal") / "lake"
    small = load_settings("test", [f"lake.root={root}", "segment.k=6"])
    lake = Lake(small, spark)
    shutil.copytree(full.path("bronze.ami_interval"), lake.path("bronze.ami_interval"))
    csv = root.parent / "archive.csv"
    rows = full.read("bronze.customer_archive").select("customer_id", "meter_id", "region", "customer_type").collect()
    csv.write_text("customer_id,meter_id,region,customer_type\n" + "".join(",".join(r) + "\n" for r in rows))
    ingest_files(spark, lake, small, "bronze.customer_archive", [str(csv)])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("gridpersona")
    logger.addHandler(handler)
    try:
        results = dict(run_pipeline(small, spark, lake, "all", AS_OF, MINIMAL_WINDOW_DAYS))
    finally:
        logger.removeHandler(handler)
    return lake, results, [r.getMessage() for r in records]


def test_minimal_inputs_run_every_stage_and_say_once_what_is_absent(minimal_lake):
    lake, results, warnings = minimal_lake
    assert list(results) == list(STAGE_ORDER)
    runs = lake.read("ops.job_runs").filter(F.col("status") != "running").collect()
    assert sorted(r["stage"] for r in runs) == sorted(STAGE_ORDER) and {r["status"] for r in runs} == {"succeeded"}
    assert [w for w in warnings if "absent" in w] == [ABSENT_NOTE]
    assert lake.read("gold.segment_profile").filter(F.col("as_of") == AS_OF).count() > 0


def test_minimal_inputs_claim_nothing_from_absent_tables(minimal_lake):
    lake, results, _ = minimal_lake
    tags = lake.read("gold.customer_tags").filter(F.col("as_of") == AS_OF)
    assert tags.count() == METERS
    # From bills, payments, service contacts or absent archive attributes: unknown, not a default.
    for code in ("age_band", "household_size", "housing_type", "credit_rating", "payment_channel_pref",
                 "interaction_channel_pref", "campaign_participation", "bill_shock_risk", "price_sensitivity",
                 "green_eco", "smart_tech", "churn_risk", "electrification_potential"):
        assert tags.filter(F.col(code).isNotNull()).count() == 0, code
    # The archive says nothing of opt-out: nobody may be contacted, so targeting runs and excludes everyone
    # for unknown opt-out (no contact history: nobody counts as recently contacted).
    assert results["campaigns"].outputs["gold.campaign_targets"] == 0
    assert any("do_not_contact" in n for n in results["campaigns"].notes)
    assert not any("recently_contacted" in n for n in results["campaigns"].notes)
    # No targets and no responses: nothing is evaluated, so no rate (not even 0 %) is written.
    assert results["evaluate"].outputs["gold.campaign_evaluation"] == 0
    assert any("no targets for cycle" in n for n in results["evaluate"].notes)
    assert lake.read("gold.campaign_evaluation").filter(F.col("as_of") == AS_OF).count() == 0
