"""The SQL guard: a Spark session extension (Java, ``jvm/src/``) that keeps the SQL surface read-only.

The guard is a check rule on Spark's analysed plan (see ``jvm/src/gridpersona/sqlguard/Guard.java``):
only query operators, SHOW/DESCRIBE/USE, and data through the lake's registered ``layer.table`` views;
no writes, DDL, SET, ADD JAR, UDFs, reflection or file paths. It is compiled with ``javac`` against
Spark's own jars on first use and cached by source hash and Spark version (no Scala compiler, no
download; the jar itself is :mod:`gridpersona.guardjar`). Every session
:func:`gridpersona.session.build_spark` launches carries it, inert: it only
enforces on a thread put into :func:`analyst_scope` (``gridpersona sql``) and, in a JVM started with
:data:`SERVER_MODE_CONF` (``gridpersona sql-server``), on every thread except the one Python marks
trusted with :func:`trust_this_thread` for its own view registration.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from gridpersona.guardjar import (EXTENSION_CLASS, SOURCE_DIR, GuardUnavailable, available_jar, build_jar, jar_path,
                                  session_conf)

log = logging.getLogger("gridpersona")

AUTHENTICATOR_CLASS = "gridpersona.sqlguard.Authenticator"
SERVER_MODE_CONF = "spark.gridpersona.sqlguard.server"
USERS_FILE_CONF = "spark.gridpersona.sql.usersFile"
ROLES = ("analyst", "pii")

__all__ = [
    "AUTHENTICATOR_CLASS", "ROLES", "SERVER_MODE_CONF", "USERS_FILE_CONF", "allow_view", "analyst_scope",
    "require_loaded", "trust_this_thread",
    # The jar (gridpersona.guardjar, beside the session factory), re-exported for the SQL commands.
    "EXTENSION_CLASS", "SOURCE_DIR", "GuardUnavailable", "available_jar", "build_jar", "jar_path", "session_conf",
]


def _guard(spark):
    return spark._jvm.gridpersona.sqlguard.Guard


def require_loaded(spark) -> None:
    """Raise GuardUnavailable unless this session enforces the guard (its extension is loaded)."""
    exts = spark.sparkContext.getConf().get("spark.sql.extensions", "") or ""
    loaded = False
    if EXTENSION_CLASS in exts.split(","):
        try:
            spark._jvm.java.lang.Class.forName("gridpersona.sqlguard.Guard")
            loaded = True
        except Exception:  # py4j: class not on the driver's class path
            loaded = False
    if not loaded:
        raise GuardUnavailable("this Spark session was started without the SQL guard (spark.sql.extensions="
                               f"{EXTENSION_CLASS} with its jar on spark.driver.extraClassPath); "
                               "start it with gridpersona.session.build_spark")


@contextlib.contextmanager
def analyst_scope(spark, role: str) -> Iterator[None]:
    """Enforce the guard with ``role`` on this thread (one JVM thread per Python thread: pinned-thread mode)."""
    if role not in ROLES:
        raise ValueError(f"unknown SQL role {role!r} (choose from {', '.join(ROLES)})")
    guard = _guard(spark)
    guard.enterAnalyst(role)
    try:
        yield
    finally:
        guard.exitAnalyst()


def trust_this_thread(spark) -> None:
    """Server mode: this thread registers and refreshes the lake's views, which the guard would refuse."""
    _guard(spark).trustThisThread()


def allow_view(spark, name: str, pii_only: bool) -> None:
    """Let analysts read view ``name`` (``layer.table``); ``pii_only``: only the pii role."""
    _guard(spark).allowView(name, pii_only)
