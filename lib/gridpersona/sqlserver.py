"""`gridpersona sql-server`: Spark's Hive Thrift (JDBC/ODBC) server over the lake.

The server runs inside this Python driver: the lake's tables are registered in
the session's catalog (:mod:`gridpersona.sqlcatalog`) and
``HiveThriftServer2.startWithContext`` serves that same catalog, so beeline and BI
tools see ``gold.customer_segments`` and every other table by name. (Started with
``spark-submit --class ...HiveThriftServer2`` instead, the server would hold an
empty catalog: nothing registers the lake's tables there.) The driver re-registers
a table when its Delta version moves, so new pipeline runs show up without a
restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from gridpersona.config import Settings
from gridpersona.lake import Lake, LakeError

log = logging.getLogger("gridpersona")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def thrift_conf(host: str, port: int) -> dict[str, str]:
    """Spark conf that the Thrift server reads its listening address from (hadoop conf -> HiveConf)."""
    return {
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.transport.mode": "binary",
        # No Hive authentication on a loopback port; clusters put the server behind Kerberos/LDAP.
        "spark.hadoop.hive.server2.authentication": "NONE",
    }


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 10000, allow_pii: bool = False,
          refresh_seconds: float = 60.0, stop_event: threading.Event | None = None, ready=None) -> int:
    """Register the lake, start the Thrift server on host:port and serve until SIGINT/SIGTERM or ``stop_event``.

    ``ready(url, tables)`` is called once the server accepts connections.
    """
    from gridpersona.session import build_spark
    from gridpersona.sqlcatalog import CATALOG_DIR, refresh_lake, register_lake

    if not port_is_free(host, port):
        raise LakeError(f"sql-server: {host}:{port} is already in use; choose another --port")
    lake_root = os.path.realpath(os.path.expanduser(settings.lake.root))
    if not os.path.isdir(lake_root):
        raise LakeError(f"sql-server: no lake at {lake_root} (run `gridpersona generate` or `gridpersona demo`)")
    spark = build_spark(settings, app_name=f"{settings.spark.app_name}-sql-server", extra_conf=thrift_conf(host, port))
    lake = Lake(settings, spark)
    jvm = spark._jvm
    # The Thrift server's own embedded Hive client boots Derby; keep its log beside the catalog, not in the cwd.
    os.makedirs(os.path.join(lake.root, CATALOG_DIR), exist_ok=True)
    jvm.java.lang.System.setProperty("derby.stream.error.file", os.path.join(lake.root, CATALOG_DIR, "derby.log"))
    registered = register_lake(spark, lake, allow_pii=allow_pii)
    known = {r.name: r.version for r in registered}
    server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
        spark._jsparkSession.sqlContext())
    stop = stop_event or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        _wait_listening(host, port, timeout=60)
        url = f"jdbc:hive2://{host}:{port}"
        log.info("sql-server: %d tables, listening on %s (Ctrl-C stops)", len(known), url)
        if ready:
            ready(url, sorted(known))
        last = time.monotonic()
        while not stop.wait(0.5):
            if refresh_seconds and time.monotonic() - last >= refresh_seconds:
                last = time.monotonic()
                try:
                    for reg in refresh_lake(spark, lake, known, allow_pii=allow_pii):
                        log.info("sql-server: %s now at Delta version %d", reg.name, reg.version)
                except Exception as exc:  # a table mid-write must not stop the server
                    log.warning("sql-server: refresh failed: %s", exc)
    finally:
        log.info("sql-server: stopping")
        server.stop()
        spark.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _wait_listening(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise LakeError(f"sql-server: the Thrift server did not start listening on {host}:{port} within {timeout:.0f} s")
