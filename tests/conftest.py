"""Shared fixtures: one local SparkSession for the whole suite, a fresh lake per test, and one synthetic lake
built once per session and shared read-only (copies for tests that write)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pytest

from gridpersona.config import Settings, load_settings
from gridpersona.lake import Lake
from gridpersona.session import build_spark, delta_jars_on_classpath

DELTA_JARS = delta_jars_on_classpath()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    settings = load_settings("test", [f"lake.root={tmp_path_factory.mktemp('lake-unused')}"])
    extra = {}
    if DELTA_JARS:
        # Lets the delta-spark backend tests share the suite's one session.
        extra = {"spark.jars": ",".join(DELTA_JARS) if os.environ.get("GRIDPERSONA_DELTA_JARS") else "",
                 "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                 "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}
        extra = {k: v for k, v in extra.items() if v}
    session = build_spark(settings, app_name="gridpersona-tests", extra_conf=extra)
    yield session
    session.stop()


@pytest.fixture
def make_settings(tmp_path):
    """make_settings(**dotted_overrides) -> Settings on the test env with a fresh lake root."""

    def make(*overrides: str, **kw):
        items = [f"lake.root={tmp_path / 'lake'}", *overrides]
        items += [f"{k.replace('__', '.')}={v}" for k, v in kw.items()]
        return load_settings("test", items)

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
def lake(settings, spark):
    return Lake(settings, spark)


# ------------------------------------------------------------------ the shared synthetic lake

@dataclass(frozen=True)
class SyntheticLake:
    """The suite's one generated lake after one `run all`: READ-ONLY for every test that takes it.

    A test that writes (a rerun, a spark-submit, an Airflow run) works on ``copy(...)`` of it, so no test
    depends on another's order.
    """

    spark: object
    settings: Settings
    lake: Lake
    results: list  # run_pipeline's [(stage, StageResult)] of the one `run all`
    meters: int
    days: int
    start: dt.date
    overrides: tuple[str, ...]

    @property
    def as_of(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def root(self) -> Path:
        return Path(self.settings.lake.root)

    def copy(self, dest: Path, tables: Iterable[str] | None = None, *overrides: str) -> tuple[Settings, Lake]:
        """(settings, lake) over a copy of the lake's folders at ``dest`` (all tables, or only ``tables``),
        the shared overrides plus ``overrides`` (later wins). Copying costs far less than regenerating."""
        dest = Path(dest)
        if tables is None:
            shutil.copytree(self.root, dest)
        else:
            for table in tables:
                shutil.copytree(self.lake.path(table), dest / Path(self.lake.path(table)).relative_to(self.root))
        settings = load_settings("test", [*self.overrides, f"lake.root={dest}", *overrides])
        return settings, Lake(settings, self.spark)


SYNTHETIC_METERS, SYNTHETIC_DAYS, SYNTHETIC_START = 150, 14, dt.date(2026, 6, 1)
SYNTHETIC_OVERRIDES = (
    f"pipeline.window_days={SYNTHETIC_DAYS}",
    # More faults than the default so a small lake has every kind several times.
    "generate.faults.spike_reading_share=0.002", "generate.faults.negative_reading_share=0.002",
    "generate.faults.null_reading_share=0.002", "generate.faults.duplicate_reading_share=0.003",
    "generate.faults.short_gap_meter_share=0.3", "generate.faults.long_gap_meter_share=0.15",
    "generate.faults.unknown_meter_share=0.03",
    # Seven non-vacant archetypes; k chosen by silhouette and stability is measured on the default lake.
    "segment.k=7",
)


@pytest.fixture(scope="session")
def synthetic_lake(spark, tmp_path_factory) -> SyntheticLake:
    """150 meters x 14 days with every fault planted, generated with the test config and `run all` once."""
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.synthetic.generate import generate_lake

    root = tmp_path_factory.mktemp("synthetic") / "lake"
    settings = load_settings("test", [*SYNTHETIC_OVERRIDES, f"lake.root={root}"])
    lake = Lake(settings, spark)
    generate_lake(settings, lake, meters=SYNTHETIC_METERS, days=SYNTHETIC_DAYS, start=SYNTHETIC_START)
    shared = SyntheticLake(spark, settings, lake, [], SYNTHETIC_METERS, SYNTHETIC_DAYS, SYNTHETIC_START, SYNTHETIC_OVERRIDES)
    shared.results.extend(run_pipeline(settings, spark, lake, "all", shared.as_of))
    versions = {t: lake.version(t) for t in lake.list_tables()}
    yield shared
    # Read-only means read-only: a test that wrote here would make others depend on the order they run in.
    after = Lake(settings, spark)
    assert {t: after.version(t) for t in after.list_tables()} == versions, "a test wrote to the shared synthetic lake"
