"""`gridpersona sql-server`: Spark's Hive Thrift (JDBC/ODBC) server over the lake.

The server runs inside this Python driver: the lake's tables are registered in
the session's catalog (:mod:`gridpersona.analyst.catalog`) and
``HiveThriftServer2.startWithContext`` serves that same catalog, so beeline and BI
tools see ``gold.customer_segments`` and every other table by name. (Started with
``spark-submit --class ...HiveThriftServer2`` instead, the server would hold an
empty catalog: nothing registers the lake's tables there.) The driver re-registers
a table when its Delta version moves, so new pipeline runs show up without a
restart.

The server is read-only and authenticated (see README "Querying the lake"):

- the SQL guard (:mod:`gridpersona.analyst.guard`) runs in server mode, a SparkConf fixed at JVM start that no
  client can change: every statement of every Thrift session is checked on its analysed plan; only this
  driver's own thread (registering and refreshing the views) is trusted;
- with a users file (``sql_server.users_file``, managed by ``gridpersona sql-user``) clients log in with a
  user name and password (Hive ``CUSTOM`` authentication, PLAIN SASL); the user's role (analyst or pii)
  decides whether the ``pii.*`` views are readable. Without a users file the server starts only on a
  loopback address, unauthenticated, everyone an analyst;
- the Spark UI (query text) is off unless ``sql_server.ui``, and the driver's own ports listen on loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import threading
import time

from gridpersona.config import Settings
from gridpersona.lake import Lake, LakeError, spark_conf

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def thrift_conf(host: str, port: int, users_file: str | None) -> dict[str, str]:
    """Spark conf the Thrift server reads its address and authentication from (hadoop conf -> HiveConf),
    and the SQL guard's server mode (SparkConf: fixed for the JVM's life)."""
    from gridpersona.analyst.guard import AUTHENTICATOR_CLASS, SERVER_MODE_CONF, USERS_FILE_CONF

    conf = {
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.transport.mode": "binary",
        SERVER_MODE_CONF: "true",
        USERS_FILE_CONF: users_file or "",
    }
    if users_file:
        conf["spark.hadoop.hive.server2.authentication"] = "CUSTOM"
        conf["spark.hadoop.hive.server2.custom.authentication.class"] = AUTHENTICATOR_CLASS
    else:
        conf["spark.hadoop.hive.server2.authentication"] = "NONE"
    return conf


def users_file_for(settings: Settings, host: str) -> str | None:
    """The users file to authenticate against, None for an unauthenticated loopback server; LakeError otherwise."""
    from gridpersona.analyst.users import check_mode, read_users

    path = os.path.abspath(os.path.expanduser(settings.sql_server.users_file))
    if os.path.exists(path):
        check_mode(path)
        if not read_users(path):
            log.warning("sql-server: users file %s lists no user: nobody can log in "
                        "(gridpersona sql-user add NAME --role analyst)", path)
        return path
    if not is_loopback(host):
        raise LakeError(f"sql-server: --host {host} is reachable from other machines and there is no users file at "
                        f"{path}; add users first (gridpersona sql-user add NAME --role analyst) or bind 127.0.0.1")
    log.warning("sql-server: no authentication: loopback development only; any local user name is an analyst "
                "(add users with `gridpersona sql-user add` to require passwords; users file %s)", path)
    return None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 10000, refresh_seconds: float = 60.0,
          stop_event: threading.Event | None = None, ready=None) -> int:
    """Register the lake, start the Thrift server on host:port and serve until SIGINT/SIGTERM or ``stop_event``.

    ``ready(url, tables)`` is called once the server accepts connections.
    """
    from gridpersona.session import build_spark
    from gridpersona.analyst.catalog import CATALOG_DIR, refresh_lake, register_lake
    from gridpersona.analyst.guard import build_jar, require_loaded, trust_this_thread

    if not port_is_free(host, port):
        raise LakeError(f"sql-server: {host}:{port} is already in use; choose another --port")
    lake_root = os.path.realpath(os.path.expanduser(settings.lake.root))
    if not os.path.isdir(lake_root):
        raise LakeError(f"sql-server: no lake at {lake_root} (run `gridpersona generate` or `gridpersona demo`)")
    users_file = users_file_for(settings, host)
    build_jar()  # before the JVM starts: the guard must be on its class path
    spark = build_spark(settings, app_name=f"{settings.spark.app_name}-sql-server",
                        extra_conf=thrift_conf(host, port, users_file), sql_surface=True, ui=settings.sql_server.ui,
                        lake_conf=spark_conf(settings))
    require_loaded(spark)
    trust_this_thread(spark)
    lake = Lake(settings, spark)
    jvm = spark._jvm
    # The Thrift server's own embedded Hive client boots Derby; keep its log beside the catalog, not in the cwd.
    os.makedirs(os.path.join(lake.root, CATALOG_DIR), exist_ok=True)
    jvm.java.lang.System.setProperty("derby.stream.error.file", os.path.join(lake.root, CATALOG_DIR, "derby.log"))
    if users_file:
        # Hive's CustomAuthenticationProviderImpl reads its class from a fresh HiveConf, which takes hive.* keys
        # from JVM system properties (not from the server's conf).
        from gridpersona.analyst.guard import AUTHENTICATOR_CLASS

        jvm.java.lang.System.setProperty("hive.server2.custom.authentication.class", AUTHENTICATOR_CLASS)
    registered = register_lake(spark, lake)
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
        log.info("sql-server: %d tables, listening on %s, %s (Ctrl-C stops)", len(known), url,
                 f"users from {users_file}" if users_file else "no authentication")
        if ready:
            ready(url, sorted(known))
        last = time.monotonic()
        while not stop.wait(0.5):
            if refresh_seconds and time.monotonic() - last >= refresh_seconds:
                last = time.monotonic()
                try:
                    for reg in refresh_lake(spark, lake, known):
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
