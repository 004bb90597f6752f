"""Hostile SQL through `run_query` on a scratch copy of the hand-made analyst lake: what each statement did.

Run it against any checkout (PYTHONPATH picks the code) on a lake you do not care about, e.g.
    PYTHONPATH=/work/main/lib python bench/sql_hostile_probe.py /tmp/probe-lake   # builds the lake if absent
Prints JSON: statement, outcome (rows or the error line), whether lake files changed.
"""
import glob
import hashlib
import inspect
import json
import os
import sys

from gridpersona.config import load_settings
from gridpersona.lake import Lake
from gridpersona.session import build_spark
from gridpersona.analyst.sql import SqlError, run_query

root = sys.argv[1]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
def state():
    out = {}
    for d, _, names in os.walk(root):
        if "_sql_catalog" in d or "_sql_snapshot" in d:
            continue
        for n in names:
            p = os.path.join(d, n)
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out
settings = load_settings("test", [f"lake.root={root}"])
# Older code has no sql_surface argument.
kw = {"sql_surface": True} if "sql_surface" in inspect.signature(build_spark).parameters else {}
spark = build_spark(settings, **kw)
if not os.path.isdir(root):
    from test_analyst import build_analyst_lake

    build_analyst_lake(spark, root)
lake = Lake(settings, spark)
jar = sorted(glob.glob(os.path.join(os.path.dirname(__import__("pyspark").__file__), "jars", "scala-xml*.jar")))[0]
seg = os.path.join(root, "gold", "segment_profile")
arch = os.path.join(root, "bronze", "customer_archive")
stmts = [
 f"INSERT OVERWRITE DIRECTORY '{seg}' USING parquet SELECT 1",
 f"CREATE TABLE gold.x USING parquet LOCATION '{root}/gold/x' AS SELECT 1 AS a",
 "INSERT INTO gridpersona_snapshots.gold__customer_segments__v0 SELECT * FROM gridpersona_snapshots.gold__customer_segments__v0",
 "DROP VIEW gold.campaign_targets",
 "CACHE TABLE gold.customer_segments",
 "SET spark.sql.shuffle.partitions=3",
 f"ADD JAR {jar}",
 "SELECT reflect('java.lang.System', 'getProperty', 'user.name')",
 "SELECT TRANSFORM(customer_id) USING 'cat' AS (c) FROM gold.customer_segments",
 f"SELECT customer_name, phone, address FROM parquet.`{arch}`",
 "SELECT customer_name, phone FROM gridpersona_snapshots.bronze__customer_archive__v0",
 "SELECT customer_name, phone FROM pii.customer_archive",
 "SELECT * FROM text.`/etc/hostname`",
 "EXPLAIN SELECT * FROM gold.customer_segments",
]
run_query(spark, lake, "SELECT count(*) FROM gold.customer_segments")
results = []
for st in stmts:
    before = state()
    try:
        r = run_query(spark, lake, st)
        what = f"ran: {len(r.rows)} row(s)" + (f", first {str(r.rows[0])[:60]}" if r.rows else "")
    except SqlError as e:
        what = "error: " + str(e)[:200]
    changed = state() != before
    results.append({"statement": st.replace(root, "<lake>"), "outcome": what.replace(root, "<lake>"), "lake_changed": changed})
n = run_query(spark, lake, "SELECT count(*) FROM gold.customer_segments").rows[0][0]
results.append({"statement": "SELECT count(*) FROM gold.customer_segments (after all)", "outcome": f"{n}", "lake_changed": None})
print(json.dumps(results, indent=1))
