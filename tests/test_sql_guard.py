"""The read-only SQL surface: hostile statements through `run_query` are refused by the SQL guard (a Spark
check rule on the analysed plan) with one line and leave the lake byte-for-byte as it was; queries still work.

The small hand-made lake of test_analyst.py (its builder): gold tables and bronze.customer_archive with PII.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re

import pytest

from gridpersona.app.cli import main as cli_main
from gridpersona.config import load_settings
from gridpersona.lake import Lake
from gridpersona.contracts.bronze import BRONZE, INGEST_REJECTS
from gridpersona.analyst.sql import SqlError, run_query
from gridpersona.analyst.catalog import CATALOG_DIR, SNAPSHOT_DIR
from test_analyst import AS_OF, CUSTOMERS, PII_VALUES, build_analyst_lake

TAIL = "the SQL surface is read-only over the lake's tables"
# Spark's own analysis refuses writes into a view before the guard sees the plan; either refusal is one line.
NOT_A_TABLE = "INSERT writes data|expects a table but .* is a view"


@pytest.fixture(scope="module")
def guarded_lake(spark, tmp_path_factory):
    lake = build_analyst_lake(spark, tmp_path_factory.mktemp("guard") / "lake")
    # A reject of an archive row whose PII was kept at write (ingest.rejects_keep_pii): the analyst view masks it.
    row = ('{"customer_id":"C9","customer_name":"%s","NAME_SRC":"%s","region":"R1"}' % (PII_VALUES[0], PII_VALUES[0]))
    rejects = spark.createDataFrame([("i1", "bronze.customer_archive", "f.csv", "missing_required", row,
                                      dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc))], INGEST_REJECTS.schema)
    lake.append(rejects, INGEST_REJECTS.name)
    run_query(spark, lake, "SELECT 1")  # registers every table, so the snapshot folders exist before hashing
    return lake


@pytest.fixture(scope="module")
def side_files(spark, tmp_path_factory):
    """Well-formed files outside the lake, so a refused path query is the guard's doing, not a parse error."""
    folder = tmp_path_factory.mktemp("side")
    (folder / "x.csv").write_text("name,phone\nZhang Wei,13800138000\n")
    (folder / "x.json").write_text('{"name": "Zhang Wei"}\n')
    spark.range(1).write.orc(str(folder / "orc"))
    return str(folder)


def lake_state(lake) -> dict[str, str]:
    """Every file under the lake root (snapshot folders included) -> sha256, plus each table's Delta version.

    The catalog's folder (_sql_catalog: empty database folders and the Thrift server's Derby log) is no data.
    """
    state = {}
    for dirpath, _, names in os.walk(lake.root):
        if os.path.relpath(dirpath, lake.root).split(os.sep)[0] == CATALOG_DIR:
            continue
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                state[os.path.relpath(path, lake.root)] = hashlib.sha256(f.read()).hexdigest()
    state.update({f"version:{t}": str(lake.version(t)) for t in lake.list_tables()})
    return state


def hostile(lake, files: str) -> list[tuple[str, str]]:
    """(statement, pattern the one-line refusal must match); ``files``: a folder of readable CSV/JSON/ORC files."""
    root = lake.root
    gold = os.path.join(root, "gold", "segment_profile")
    snap = os.path.join(root, "bronze", "customer_archive", SNAPSHOT_DIR)
    archive = os.path.join(root, "bronze", "customer_archive")
    return [
        (f"INSERT OVERWRITE DIRECTORY '{gold}' USING parquet SELECT 1", "INSERT OVERWRITE DIRECTORY writes files"),
        ("INSERT INTO gold.customer_segments SELECT * FROM gold.customer_segments", NOT_A_TABLE),
        ("INSERT OVERWRITE gold.segment_profile SELECT * FROM gold.segment_profile", NOT_A_TABLE),
        (f"INSERT INTO parquet.`{gold}` SELECT 1", "TABLE_OR_VIEW_NOT_FOUND"),
        # No physical snapshot table exists to write into (they were a PII side door and a tampering target).
        ("INSERT INTO gridpersona_snapshots.gold__customer_segments__v0 SELECT * FROM gold.customer_segments",
         "TABLE_OR_VIEW_NOT_FOUND"),
        ("CREATE TABLE gold.x USING parquet AS SELECT * FROM gold.customer_segments", "CREATE TABLE AS SELECT writes data"),
        (f"CREATE TABLE x2 USING parquet LOCATION '{gold}' AS SELECT 1 AS a", "CREATE TABLE AS SELECT writes data"),
        (f"CREATE TABLE x3 (a INT) USING parquet LOCATION '{gold}'", "changes the catalog"),
        ("DROP VIEW gold.customer_segments", "changes the catalog"),
        ("DROP DATABASE gold CASCADE", "changes the catalog"),
        ("ALTER VIEW gold.customer_segments AS SELECT 1 AS a", "changes the catalog"),
        ("CREATE OR REPLACE VIEW gold.customer_segments AS SELECT * FROM pii.customer_archive", "changes the catalog"),
        ("CACHE TABLE gold.customer_segments", "CACHE"),
        ("CACHE TABLE c AS SELECT * FROM gold.customer_segments", "CACHE"),
        ("UNCACHE TABLE gold.customer_segments", "CACHE"),
        ("SET spark.sql.runSQLOnFiles=true", "SET/RESET"),
        ("SET spark.gridpersona.sqlguard.server=false", "SET/RESET"),
        ("RESET", "SET/RESET"),
        ("ADD JAR /tmp/evil.jar", "ADD JAR"),
        ("ADD FILE /etc/hostname", "ADD JAR"),
        ("CREATE FUNCTION evil AS 'java.lang.Runtime'", "FUNCTION"),
        ("CREATE TEMPORARY FUNCTION evil AS 'java.lang.Runtime'", "FUNCTION"),
        ("SELECT reflect('java.lang.System', 'getProperty', 'user.home')", "reflect/java_method"),
        ("SELECT java_method('java.lang.System', 'getenv', 'HOME')", "reflect/java_method"),
        ("SELECT try_reflect('java.lang.System', 'getProperty', 'user.home')", "reflect/java_method"),
        ("SELECT meter_id FROM gold.customer_segments WHERE reflect('java.lang.Thread', 'currentThread') IS NOT NULL",
         "reflect/java_method"),
        ("SELECT TRANSFORM(meter_id) USING 'cat' AS (m) FROM gold.customer_segments", "TRANSFORM ... USING"),
        (f"SELECT * FROM parquet.`{archive}`", "reading files or tables directly"),
        (f"SELECT customer_name, phone, address FROM parquet.`{snap}/v0`", "reading files or tables directly"),
        ("SELECT * FROM text.`/etc/passwd`", "reading files or tables directly"),
        # Spark 4.2 cannot plan csv./json. path queries here at all; refused either way.
        (f"SELECT * FROM csv.`{files}/x.csv`", "reading files or tables directly|FAILED_TO_CREATE_PLAN"),
        (f"SELECT * FROM json.`{files}/x.json`", "reading files or tables directly|FAILED_TO_CREATE_PLAN"),
        (f"SELECT * FROM orc.`{files}/orc`", "reading files or tables directly"),
        ("SELECT * FROM binaryFile.`/etc/hostname`", "reading files or tables directly"),
        (f"SELECT * FROM read_files('{archive}', format => 'parquet')", "read_files"),
        (f"CREATE TEMP VIEW v USING parquet OPTIONS (path '{archive}')", "changes the catalog"),
        (f"CREATE TEMPORARY VIEW v2 AS SELECT * FROM parquet.`{archive}`", "changes the catalog"),
        ("SELECT * FROM pii.customer_archive", "holds customer PII"),
        ("SELECT customer_name FROM pii.customer_archive", "holds customer PII"),
        ("SELECT customer_name FROM bronze.customer_archive", "customer PII, never in the layer.table views"),
        ("SELECT customer_id FROM gold.customer_segments WHERE customer_id IN "
         "(SELECT customer_id FROM pii.customer_archive WHERE phone LIKE '138%')", "holds customer PII"),
        ("SELECT (SELECT max(address) FROM pii.customer_archive)", "holds customer PII"),
        ("SELECT 1 WHERE EXISTS (SELECT 1 FROM parquet.`" + archive + "`)", "reading files or tables directly"),
        ("WITH p AS (SELECT * FROM pii.customer_archive) SELECT customer_name FROM p", "holds customer PII"),
        ("SELECT customer_id FROM gold.customer_segments UNION ALL SELECT phone FROM pii.customer_archive",
         "holds customer PII"),
        ("SELECT * FROM gold.customer_segments s JOIN pii.customer_archive a USING (customer_id)", "holds customer PII"),
        ("EXPLAIN SELECT * FROM gold.customer_segments", "EXPLAIN"),
        ("EXPLAIN EXTENDED SELECT * FROM pii.customer_archive", "EXPLAIN"),
        ("EXECUTE IMMEDIATE 'SELECT * FROM pii.customer_archive'", "holds customer PII"),
        ("EXECUTE IMMEDIATE 'ADD JAR /tmp/evil.jar'", "ADD JAR"),
        ("DECLARE VARIABLE v INT DEFAULT 1", "SET/RESET"),
        ("TRUNCATE TABLE gold.customer_segments", "writes data|expects a table but"),
        ("DELETE FROM gold.customer_segments WHERE true", "DELETE writes data"),
        ("LOAD DATA LOCAL INPATH '/etc/hostname' INTO TABLE gold.customer_segments", "LOAD"),
        ("REFRESH TABLE gold.customer_segments", "changes the catalog"),
        ("SHOW CREATE TABLE pii.customer_archive", "is not a query"),
        ("MSCK REPAIR TABLE gold.customer_segments", "MSCK"),
    ]


def test_hostile_statements_are_refused_in_one_line_and_leave_the_lake_unchanged(guarded_lake, side_files, spark):
    before = lake_state(guarded_lake)
    before_conf = spark.conf.get("spark.sql.shuffle.partitions")
    wrong = []
    for statement, expected in hostile(guarded_lake, side_files):
        try:
            run_query(spark, guarded_lake, statement)
            wrong.append((statement, "ran"))
        except SqlError as err:
            message = str(err)
            if "\n" in message or "at org.apache" in message or not re.search(expected, message, re.I):
                wrong.append((statement, message))
    assert not wrong, "\n".join(f"{s}  ->  {m}" for s, m in wrong)
    assert lake_state(guarded_lake) == before
    assert spark.conf.get("spark.sql.shuffle.partitions") == before_conf
    assert not spark.catalog.tableExists("x2") and "evil" not in [f.name for f in spark.catalog.listFunctions()]


def test_queries_show_describe_and_use_still_work_for_analysts(guarded_lake, spark):
    def q(sql, **kw):
        return run_query(spark, guarded_lake, sql, **kw)

    # The replaced version's rows (kWh x 100) are not in the snapshot.
    assert q(f"SELECT segment_id, mean_daily_kwh FROM gold.segment_profile WHERE as_of = DATE'{AS_OF}' "
             "ORDER BY 1").rows == [(1, 9.5), (2, 11.0), (3, 210.0)]
    joined = q("WITH s AS (SELECT * FROM gold.customer_segments) SELECT p.segment_label, count(*) AS n, "
               "rank() OVER (ORDER BY count(*) DESC) AS r FROM s JOIN gold.segment_profile p USING (segment_id, as_of) "
               "WHERE s.customer_id IN (SELECT customer_id FROM bronze.customer_archive) GROUP BY 1 ORDER BY 2 DESC, 1")
    assert joined.rows == [("evening_peak", 3, 1), ("night", 2, 2), ("commercial_day", 1, 3)]
    # A subset: the suite's one session also holds the views of other tests' lakes.
    assert {"customer_segments", "segment_profile"} <= {r[1] for r in q("SHOW TABLES IN gold").rows}
    described = {r[0]: r[1] for r in q("DESCRIBE gold.customer_segments").rows}
    assert described["as_of"] == "date" and described["segment_id"] == "int"  # contract types, not inferred ones
    assert q("USE gold").rows == []
    assert "gold" in {r[0] for r in q("SHOW DATABASES").rows}
    archive = q("SELECT * FROM bronze.customer_archive")
    assert not {"customer_name", "phone", "address"} & set(archive.columns)
    assert not any(v in PII_VALUES for row in archive.rows for v in row)


def test_pii_role_reads_pii_views_and_rejects_row_json_is_masked_for_analysts(guarded_lake, spark):
    shown = run_query(spark, guarded_lake, "SELECT customer_name, phone, address FROM pii.customer_archive LIMIT 1",
                      allow_pii=True)
    assert shown.rows == [PII_VALUES]
    row_json = run_query(spark, guarded_lake, "SELECT row_json FROM bronze.ingest_rejects").rows[0][0]
    assert PII_VALUES[0] not in row_json and '"customer_id":"C9"' in row_json and '"region":"R1"' in row_json
    whole = run_query(spark, guarded_lake, "SELECT row_json FROM pii.ingest_rejects", allow_pii=True).rows[0][0]
    assert PII_VALUES[0] in whole
    with pytest.raises(SqlError, match="holds customer PII"):
        run_query(spark, guarded_lake, "SELECT row_json FROM pii.ingest_rejects")


def test_a_tampered_snapshot_folder_is_rebuilt_from_the_delta_log(guarded_lake, spark):
    count = "SELECT count(*) FROM gold.customer_segments"
    assert run_query(spark, guarded_lake, count).rows == [(len(CUSTOMERS),)]
    folder = os.path.join(guarded_lake.path("gold.customer_segments"), SNAPSHOT_DIR,
                          f"v{guarded_lake.version('gold.customer_segments')}")
    data = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".parquet")]
    extra = os.path.join(os.path.dirname(data[0]), "part-extra.parquet")
    with open(data[0], "rb") as src, open(extra, "wb") as dst:  # a second copy: twice the rows if it were read
        dst.write(src.read())
    assert run_query(spark, guarded_lake, count).rows == [(len(CUSTOMERS),)]
    assert not os.path.exists(extra)


def test_a_table_without_data_files_reads_as_its_columns_and_no_rows(spark, tmp_path):
    from gridpersona.stages.inputs import create_empty_bronze

    lake = Lake(load_settings("test", [f"lake.root={tmp_path / 'lake'}"]), spark)
    create_empty_bronze(lake, "bronze.contact_history")  # an input no campaign has filled yet
    result = run_query(spark, lake, "SELECT * FROM bronze.contact_history")
    assert result.rows == [] and result.columns == BRONZE["bronze.contact_history"].column_names
    assert run_query(spark, lake, "SELECT count(*) FROM bronze.contact_history").rows == [(0,)]


def test_sql_command_prints_one_refusal_line_and_exits_2(guarded_lake, capsys):
    root = ["--env", "test", "--set", f"lake.root={guarded_lake.root}"]
    target = os.path.join(guarded_lake.root, "gold", "segment_profile")
    assert cli_main(root + ["sql", f"INSERT OVERWRITE DIRECTORY '{target}' USING parquet SELECT 1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "gridpersona sql: error: refused: INSERT OVERWRITE DIRECTORY writes files; " + TAIL]
    assert cli_main(root + ["sql", "--allow-pii", "SELECT phone FROM pii.customer_archive LIMIT 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["phone", PII_VALUES[1]]


# ------------------------------------------------------------------ users, binding, the guard's build (no Spark)


def test_sql_user_adds_lists_and_removes_users_in_a_0600_file(tmp_path, capsys, monkeypatch):
    import io

    from gridpersona.analyst.users import read_users, verify_password

    users = tmp_path / "cfg" / "sql-users"
    root = ["--env", "test", "--set", f"sql_server.users_file={users}"]
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    assert cli_main(root + ["sql-user", "add", "ana", "--role", "analyst", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("other-pass-9\n"))
    assert cli_main(root + ["sql-user", "add", "pia", "--role", "pii", "--password-stdin"]) == 0
    assert os.stat(users).st_mode & 0o777 == 0o600
    role, encoded = read_users(str(users))["ana"]
    assert role == "analyst" and verify_password("s3cret-pass", encoded) and not verify_password("s3cret-pasS", encoded)
    assert "s3cret-pass" not in users.read_text()
    capsys.readouterr()
    assert cli_main(root + ["sql-user", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ana\s+analyst", out) and re.search(r"pia\s+pii", out)
    assert cli_main(root + ["sql-user", "remove", "ana"]) == 0
    assert set(read_users(str(users))) == {"pia"}
    os.chmod(users, 0o644)
    assert cli_main(root + ["sql-user", "list"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"users file {users} has mode 0644: others may read the password hashes; "
                                f"run chmod 600 {users}")


def test_sql_server_refuses_a_non_loopback_bind_without_users(tmp_path, caplog):
    from gridpersona.lake import LakeError
    from gridpersona.analyst.server import users_file_for

    settings = load_settings("test", [f"sql_server.users_file={tmp_path / 'absent'}"])
    with pytest.raises(LakeError, match=r"--host 0\.0\.0\.0 is reachable from other machines and there is no users file"):
        users_file_for(settings, "0.0.0.0")
    with caplog.at_level("WARNING", logger="gridpersona"):
        assert users_file_for(settings, "127.0.0.1") is None
    assert "no authentication: loopback development only" in caplog.text


def test_the_guard_needs_javac_once_and_says_so(tmp_path, monkeypatch):
    import shutil

    from gridpersona.analyst import guard as sqlguard

    monkeypatch.setenv("GRIDPERSONA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(sqlguard.GuardUnavailable, match=r"needs a Java compiler once \(javac"):
        sqlguard.build_jar()
    assert sqlguard.available_jar() is None  # the pipeline's sessions start without it
