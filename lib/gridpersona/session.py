"""SparkSession factory built from configuration."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from gridpersona.config import Settings

# Settings every gridpersona session needs, whatever the environment; config may override.
_BASE_CONF = {
    # Delta stores timestamps as INT64 micros; Spark's INT96 default is not Delta-compatible.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
}


def build_spark(settings: Settings, app_name: str | None = None, extra_conf: dict | None = None) -> SparkSession:
    """Return a SparkSession for ``settings`` (reusing an active one if present).

    ``spark.master`` null leaves the master to spark-submit / the cluster. The
    session time zone defaults to ``ami.time_zone`` so local dates read naturally.
    """
    # Driver and workers must run this interpreter, not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or settings.spark.app_name)
    if settings.spark.master:
        builder = builder.master(settings.spark.master)
    conf = {**_BASE_CONF, "spark.sql.session.timeZone": settings.ami.time_zone}
    conf["spark.ui.showConsoleProgress"] = str(settings.spark.show_progress).lower()
    if settings.lake.backend == "delta-spark":
        conf["spark.sql.extensions"] = "io.delta.sql.DeltaSparkSessionExtension"
        conf["spark.sql.catalog.spark_catalog"] = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    conf.update({k: str(v) for k, v in settings.spark.conf.items()})
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark
