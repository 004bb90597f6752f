"""Shared fixtures: one local SparkSession for the whole suite, a fresh lake per test."""

from __future__ import annotations

import os

import pytest

from gridpersona.config import load_settings
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
