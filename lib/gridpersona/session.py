"""SparkSession factory built from configuration."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from typing import Mapping

from pyspark.sql import SparkSession

from gridpersona import guardjar
from gridpersona.config import Settings

# Settings every gridpersona session needs, whatever the environment; config may override.
_BASE_CONF = {
    # Delta stores timestamps as INT64 micros; Spark's INT96 default is not Delta-compatible.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    # Landed CSV files may come in any Java charset (ingest.csv_encoding: gb18030 is common for
    # Chinese utility exports), not only the UTF/ISO-8859-1 set Spark 4 allows by default.
    "spark.sql.legacy.javaCharsets": "true",
}


def build_spark(settings: Settings, app_name: str | None = None, extra_conf: dict | None = None,
                sql_surface: bool = False, ui: bool = False, lake_conf: Mapping[str, str] | None = None) -> SparkSession:
    """Return a SparkSession for ``settings`` (reusing an active one if present).

    ``spark.master`` null leaves the master to spark-submit / the cluster. The
    session time zone defaults to ``ami.time_zone`` so local dates read naturally.
    ``lake_conf``: what the lake's backend needs of a session (:func:`gridpersona.lake.spark_conf`;
    the config's ``spark.conf`` and ``extra_conf`` may override it). A session this process launches
    carries the SQL guard (:mod:`gridpersona.analyst.guard`, inert outside the SQL surface; the jar is
    :mod:`gridpersona.guardjar`) when its jar is cached or javac can build it. ``sql_surface``
    (``gridpersona sql`` / ``sql-server``): the Spark UI, which shows query text, is off unless
    ``ui``, and a local driver listens on loopback only.
    """
    # Driver and workers must run this interpreter, not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or settings.spark.app_name)
    # Under spark-submit the JVM is already up with the submitted --master: keep it.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if settings.spark.master and not submitted:
        builder = builder.master(settings.spark.master)
    conf = {**_BASE_CONF, "spark.sql.session.timeZone": settings.ami.time_zone}
    conf["spark.ui.showConsoleProgress"] = str(settings.spark.show_progress).lower()
    conf.update(lake_conf or {})
    if (settings.spark.master or "").startswith("local") and not submitted:
        # Only for sessions this process launches; clusters keep their own logging.
        log4j = os.path.join(os.path.dirname(__file__), "log4j2.properties")
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{log4j}"
    conf = with_configured_conf(conf, {k: str(v) for k, v in settings.spark.conf.items()})
    conf.update(extra_conf or {})
    local = (settings.spark.master or "").startswith("local") and not submitted
    if sql_surface:
        conf["spark.ui.enabled"] = str(ui).lower()
        if local:
            # Driver RPC and block manager ports (and the UI, which binds to SPARK_LOCAL_IP) on loopback only.
            conf["spark.driver.bindAddress"] = conf["spark.driver.host"] = "127.0.0.1"
            os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    if not submitted:
        jar = guardjar.available_jar()
        if jar is not None:
            conf = guardjar.session_conf(jar, conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark


def with_configured_conf(launch: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    """The session conf: ``configured`` (the config's ``spark.conf``) over ``launch``, except that JVM
    options the config gives (``spark.driver.extraJavaOptions``, e.g. conf/local.yaml's GC settings) come
    after the launch's own (the local logging option) instead of replacing them."""
    key = "spark.driver.extraJavaOptions"
    merged = {**launch, **configured}
    if key in launch and key in configured:
        merged[key] = f"{launch[key]} {configured[key]}"
    return merged


def delta_jars_on_classpath() -> list[str]:
    """Delta Lake jars visible to a local Spark: in $SPARK_HOME/jars or listed in GRIDPERSONA_DELTA_JARS.

    GRIDPERSONA_DELTA_JARS is a comma-separated list of jar paths (delta-spark and
    delta-storage) for machines that have the jars but not in SPARK_HOME.
    """
    listed = [j for j in os.environ.get("GRIDPERSONA_DELTA_JARS", "").split(",") if j.strip()]
    if listed:
        return [j for j in listed if os.path.isfile(j)]
    import pyspark

    home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return sorted(glob.glob(os.path.join(home, "jars", "delta-spark_*.jar")))


# What a driver out of memory looks like from Python: the JVM's own error, or the py4j gateway
# gone after the JVM died of it.
_OOM_SIGNS = ("java.lang.OutOfMemoryError", "Java heap space", "GC overhead limit exceeded")
_DEAD_GATEWAY_SIGNS = ("Answer from Java side is empty", "Error while receiving", "Error while sending",
                       "Connection refused", "Py4JNetworkError")


def out_of_memory_message(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for a Spark driver that ran out of memory (or whose JVM died), naming the setting to
    raise and its current value; None for any other failure."""
    text = f"{type(exc).__name__}: {exc}"
    if any(sign in text for sign in _OOM_SIGNS):
        what = "the Spark driver ran out of memory (java.lang.OutOfMemoryError)"
    elif any(sign in text for sign in _DEAD_GATEWAY_SIGNS) or isinstance(exc, ConnectionError):
        what = "the Spark driver JVM stopped answering (most often it ran out of memory)"
    else:
        return None
    current = settings.spark.conf.get("spark.driver.memory") if settings else None
    now = f"now {current}" if current else "now Spark's default of 1g"
    return (f"{what}: raise spark.conf.spark.driver.memory ({now}), e.g. --set spark.conf.spark.driver.memory=8g "
            f"or in conf/<env>.yaml; under spark-submit pass --driver-memory")


@contextlib.contextmanager
def session_conf(spark: SparkSession, conf: Mapping[str, str]):
    """Set ``conf`` on the session for the block, then put back what was there (unset what was unset)."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
