"""Analyst surfaces (issue 5 items 3-5): `sql`, `sql-server` + beeline, the portraits notebook, the HTML report.

One small hand-made lake (module fixture) holds the gold tables the analyst tools read,
including hand-made versions of the tags/campaigns tables (contract columns) so those
sections run, and a second as-of without them so "not computed" is exercised.
"""

from __future__ import annotations

import base64
import datetime as dt
import html.parser
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from pyspark.sql import types as T

from gridpersona.analyst import portraits as P
from gridpersona.app.cli import main as cli_main
from gridpersona.config import load_settings
from gridpersona.lake import Lake, check_schema
from gridpersona.analyst.report import build_report, write_report
from gridpersona.contracts.bronze import BRONZE
from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CAMPAIGN_TARGETS
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.contracts.segments import CUSTOMER_SEGMENTS, SEGMENT_PROFILE
from gridpersona.analyst.sql import QueryResult, SqlError, format_result, referenced_tables, run_query
from gridpersona.transform.campaign_outcomes import campaign_evaluation, family_intervals, \
    newcombe_interval

AS_OF = dt.date(2026, 6, 30)  # every table
BARE_AS_OF = dt.date(2026, 5, 31)  # segments only: tags and campaigns "not computed"
PII_VALUES = ("Zhang Wei", "13800138000", "88 Secret Road")
SLOTS = 24


def _shape(peak_hour: int) -> list[float]:
    day = [1.0 + (4.0 if h == peak_hour else 0.0) for h in range(SLOTS)]
    total = sum(day)
    return [x / total for x in day] * 2  # weekday then weekend


SEGMENTS = [  # id, label, zh, en, meters, kwh, peak, flat, valley, load factor, weekend ratio, peak hour
    (1, "evening_peak", "高峰型", "Evening peak", 3, 9.5, 0.6, 0.25, 0.15, 0.2, 1.1, 20),
    (2, "night", "低谷型", "Night / valley", 2, 11.0, 0.1, 0.1, 0.8, 0.3, 1.0, 2),
    (3, "commercial_day", "日间商业型", "Commercial daytime", 1, 210.0, 0.3, 0.55, 0.15, 0.4, 0.5, 12),
]
CUSTOMERS = [("C1", "M1", 1), ("C2", "M2", 1), ("C3", "M3", 1), ("C4", "M4", 2), ("C5", "M5", 2), ("C6", "M6", 3)]


def _profile_rows(as_of: dt.date, scale: float = 1.0) -> list[tuple]:
    total = sum(s[4] for s in SEGMENTS)
    return [(as_of, "20260630", sid, label, zh, en, meters, meters / total, kwh * scale, peak, flat, valley, lf, wr, 0.1,
             _shape(hour)) for sid, label, zh, en, meters, kwh, peak, flat, valley, lf, wr, hour in SEGMENTS]


TAGS_SCHEMA = T.StructType([T.StructField(n, t) for n, t in [
    ("as_of", T.DateType()), ("customer_id", T.StringType()), ("meter_id", T.StringType()), ("region", T.StringType()),
    ("customer_type", T.StringType()), ("segment_id", T.IntegerType()), ("segment_label", T.StringType()),
    ("vip", T.BooleanType()), ("do_not_contact", T.BooleanType()), ("consumption_level", T.StringType()),
    ("price_sensitivity", T.StringType()), ("credit_rating", T.StringType()), ("payment_channel_pref", T.StringType()),
    ("ev_owner", T.BooleanType()), ("vacancy", T.BooleanType()), ("green_eco", T.BooleanType()),
    ("churn_risk", T.StringType())]])
# Campaign responses of the hand-made cycle: (campaign, customer, responded).
RESPONSES = [("tou_ev", "C4", True), ("tou_ev", "C5", False),
             ("green_power", "C1", True), ("green_power", "C3", False), ("green_power", "C5", False)]


def build_analyst_lake(spark, root) -> Lake:
    settings = load_settings("test", [f"lake.root={root}", "pipeline.window_days=30"])
    lake = Lake(settings, spark)
    # An older version of the profile whose rows a snapshot read must not return.
    lake.replace(spark.createDataFrame(_profile_rows(AS_OF, scale=100.0), SEGMENT_PROFILE.schema), "gold.segment_profile",
                 where={"as_of": [AS_OF]}, partition_by=["as_of"])
    lake.replace(spark.createDataFrame(_profile_rows(AS_OF), SEGMENT_PROFILE.schema), "gold.segment_profile",
                 where={"as_of": [AS_OF]})
    lake.replace(spark.createDataFrame(_profile_rows(BARE_AS_OF), SEGMENT_PROFILE.schema), "gold.segment_profile",
                 where={"as_of": [BARE_AS_OF]})
    labels = {s[0]: s[1:4] for s in SEGMENTS}
    lake.replace(spark.createDataFrame([(AS_OF, c, m, sid, *labels[sid], 0.1, "20260630", None, None) for c, m, sid in CUSTOMERS],
                                       CUSTOMER_SEGMENTS.schema), "gold.customer_segments", where={"as_of": [AS_OF]},
                 partition_by=["as_of"])
    archive = BRONZE["bronze.customer_archive"].schema
    lake.overwrite(spark.createDataFrame(
        [(c, m, PII_VALUES[0], PII_VALUES[1], PII_VALUES[2], "R1", "residential", "tou", "35-49", 3, "apartment", 8.0,
          "tou", False, False, dt.date(2020, 1, 1), None) for c, m, _ in CUSTOMERS], archive), "bronze.customer_archive")
    started = dt.datetime(2026, 7, 1, 2, 0, tzinfo=dt.timezone.utc)
    runs = [("run1", stage, AS_OF, 30, started + dt.timedelta(minutes=i), 10.0 + i, "succeeded", 1000 // (i + 1), 10 * (i + 1),
             "{}", None, "cfg123", "0.1.0+test", "test", None, None, None, None, None)
            for i, stage in enumerate(["clean", "shapes", "segment-train", "segment-assign", "profile"])]
    lake.append(spark.createDataFrame(runs, JOB_RUNS.schema), "ops.job_runs")
    tag_rows = [(AS_OF, c, m, "R1", "residential", sid, labels[sid][0], False, c == "C6",
                 ["high", "medium", "low"][i % 3], ["low", "high"][i % 2], "good", "online", sid == 2, False, i % 2 == 0,
                 None if i % 3 == 0 else "low") for i, (c, m, sid) in enumerate(CUSTOMERS)]
    lake.replace(spark.createDataFrame(tag_rows, TAGS_SCHEMA), "gold.customer_tags", where={"as_of": [AS_OF]},
                 partition_by=["as_of"])
    # Campaign tables in their real schemas: targets as the campaigns stage writes them, the evaluation computed
    # from them and hand-made responses by the evaluate stage's own transformation.
    seg_of = {c: sid for c, _, sid in CUSTOMERS}
    targets = [(AS_OF, "tou_ev", c, "control" if c == "C5" else "treatment", "app", 1, 0.9, ["ev_owner"], "TOU-EV",
                seg_of[c], labels[seg_of[c]][0]) for c in ("C4", "C5")]
    targets += [(AS_OF, "green_power", c, "control" if c == "C3" else "treatment", "sms", 2, 0.5, ["green_eco"], "GREEN",
                 seg_of[c], labels[seg_of[c]][0]) for c in ("C1", "C3", "C5")]
    targets_df = spark.createDataFrame(targets, CAMPAIGN_TARGETS.schema)
    lake.replace(targets_df, "gold.campaign_targets", where={"as_of": [AS_OF]}, partition_by=["as_of"])
    responses = spark.createDataFrame(
        [(cid, AS_OF, c, yes, dt.datetime(2026, 7, 3, tzinfo=dt.timezone.utc) if yes else None)
         for cid, c, yes in RESPONSES], BRONZE["bronze.campaign_response"].schema)
    evaluation = campaign_evaluation(targets_df, responses, confidence=0.95)
    check_schema("gold.campaign_evaluation", CAMPAIGN_EVALUATION.schema, evaluation.schema)
    lake.replace(evaluation, "gold.campaign_evaluation", where={"as_of": [AS_OF]}, partition_by=["as_of"])
    return lake


@pytest.fixture(scope="module")
def analyst_lake(spark, tmp_path_factory):
    return build_analyst_lake(spark, tmp_path_factory.mktemp("analyst") / "lake")


# ------------------------------------------------------------------ sql


def test_referenced_tables_finds_layer_table_names_in_any_quoting():
    known = ["gold.customer_segments", "gold.segment_profile", "bronze.customer_archive"]
    sql = ("SELECT * FROM gold.customer_segments s JOIN `gold`.`segment_profile` p USING (segment_id) "
           "WHERE s.meter_id IN (SELECT meter_id FROM GOLD.customer_segments) AND x.y = 1")
    assert referenced_tables(sql, known) == ["gold.customer_segments", "gold.segment_profile"]


def test_format_result_renders_table_csv_and_json_lines():
    result = QueryResult(["label", "meters", "day", "shape"], [T.StringType(), T.LongType(), T.DateType(), T.ArrayType(T.DoubleType())],
                         [("flat", 27, dt.date(2026, 6, 14), [0.5, 0.25]), ("night, late", None, None, None)], False)
    table = format_result(result, "table").splitlines()
    assert table[0].split() == ["label", "meters", "day", "shape"]
    assert table[2].split()[:3] == ["flat", "27", "2026-06-14"] and "NULL" in table[3]
    assert format_result(result, "csv").splitlines() == [
        "label,meters,day,shape", 'flat,27,2026-06-14,"[0.5, 0.25]"', '"night, late",,,']
    rows = [json.loads(line) for line in format_result(result, "json").splitlines()]
    assert rows == [{"label": "flat", "meters": 27, "day": "2026-06-14", "shape": [0.5, 0.25]},
                    {"label": "night, late", "meters": None, "day": None, "shape": None}]


def test_sql_reads_the_latest_snapshot_by_layer_table_name(analyst_lake, spark):
    res = run_query(spark, analyst_lake, "SELECT as_of, segment_label, mean_daily_kwh FROM gold.segment_profile "
                                         f"WHERE as_of = DATE'{AS_OF}' ORDER BY segment_id")
    assert res.columns == ["as_of", "segment_label", "mean_daily_kwh"]
    # The replaced version's rows (kWh x 100) are still on disk for time travel but not in the snapshot.
    assert res.rows == [(AS_OF, "evening_peak", 9.5), (AS_OF, "night", 11.0), (AS_OF, "commercial_day", 210.0)]
    joined = run_query(spark, analyst_lake, "SELECT s.segment_label, count(*) AS n FROM gold.customer_segments s "
                                            "JOIN gold.customer_tags t USING (customer_id) GROUP BY 1 ORDER BY 1")
    assert joined.rows == [("commercial_day", 1), ("evening_peak", 3), ("night", 2)]


def test_sql_sees_a_new_version_on_the_next_query(analyst_lake, spark):
    before = run_query(spark, analyst_lake, "SELECT count(*) FROM ops.job_runs").rows[0][0]
    row = ("run2", "report-check", AS_OF, 30, dt.datetime(2026, 7, 2, tzinfo=dt.timezone.utc), 1.0, "failed", None, None,
           None, "boom", "cfg123", "0.1.0+test", "test", None, None, None, None, None)
    analyst_lake.append(spark.createDataFrame([row], JOB_RUNS.schema), "ops.job_runs")
    assert run_query(spark, analyst_lake, "SELECT count(*) FROM ops.job_runs").rows[0][0] == before + 1


def test_sql_hides_pii_columns_unless_allowed(analyst_lake, spark):
    hidden = run_query(spark, analyst_lake, "SELECT * FROM bronze.customer_archive")
    assert not {"customer_name", "phone", "address"} & set(hidden.columns)
    assert not any(v in PII_VALUES for row in hidden.rows for v in row)
    with pytest.raises(SqlError, match="customer PII.*pii.<table> has it for the pii role"):
        run_query(spark, analyst_lake, "SELECT phone FROM bronze.customer_archive")
    with pytest.raises(SqlError, match="refused: pii.customer_archive holds customer PII"):
        run_query(spark, analyst_lake, "SELECT phone FROM pii.customer_archive")
    shown = run_query(spark, analyst_lake, "SELECT customer_name, phone FROM pii.customer_archive LIMIT 1", allow_pii=True)
    assert shown.rows == [(PII_VALUES[0], PII_VALUES[1])]
    # The role is per statement: the next one without the flag is refused again, and the table view never has PII.
    with pytest.raises(SqlError, match="holds customer PII"):
        run_query(spark, analyst_lake, "SELECT phone FROM pii.customer_archive")
    assert "phone" not in run_query(spark, analyst_lake, "SELECT * FROM bronze.customer_archive", allow_pii=True).columns


def test_sql_limit_bounds_the_rows_and_says_so(analyst_lake, spark):
    res = run_query(spark, analyst_lake, "SELECT * FROM gold.customer_segments", limit=2)
    assert len(res.rows) == 2 and res.truncated
    res = run_query(spark, analyst_lake, "SELECT * FROM gold.customer_segments", limit=None)
    assert len(res.rows) == len(CUSTOMERS) and not res.truncated


def test_sql_command_prints_table_csv_json_and_fails_cleanly(analyst_lake, capsys):
    root = ["--env", "test", "--set", f"lake.root={analyst_lake.root}"]
    assert cli_main(root + ["sql", "SELECT segment_id, segment_label FROM gold.segment_profile "
                                   f"WHERE as_of = DATE'{AS_OF}' ORDER BY 1", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["segment_id,segment_label", "1,evening_peak", "2,night", "3,commercial_day"]
    assert cli_main(root + ["sql", "SELECT count(*) AS n FROM gold.customer_segments", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": len(CUSTOMERS)}
    assert cli_main(root + ["sql", "SHOW TABLES IN gold"]) == 0
    out = capsys.readouterr().out
    assert "segment_profile" in out and "campaign_targets" in out

    assert cli_main(root + ["sql", "SELECT * FROM gold.no_such_table"]) == 2
    err = capsys.readouterr().err
    assert "TABLE_OR_VIEW_NOT_FOUND" in err and "lake tables: " in err and "gold.segment_profile" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "at org.apache" not in err
    assert cli_main(root + ["sql", "SELECT segment_id FROM gold.segment_profile WHERE nope = 1"]) == 2
    err = capsys.readouterr().err
    assert "UNRESOLVED_COLUMN" in err and "`nope`" in err and len(err.strip().splitlines()) == 1
    assert cli_main(root + ["sql", "SELEC 1 FROM gold.segment_profile"]) == 2
    err = capsys.readouterr().err
    assert "PARSE_SYNTAX_ERROR" in err and "(line 1, position 0)" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ portraits and report


def test_radar_values_are_min_max_scaled_per_axis():
    rows = [{"mean_daily_kwh": 1.0, "peak_share": 0.2}, {"mean_daily_kwh": 100.0, "peak_share": 0.6},
            {"mean_daily_kwh": 10.0, "peak_share": None}]
    values = P.radar_values(rows, (("mean_daily_kwh", "kWh"), ("peak_share", "peak")))
    assert values[0] == [0.0, 0.0] and values[1] == [1.0, 1.0]
    assert values[2][0] == pytest.approx(0.5)  # log scale: 10 lies halfway between 1 and 100
    assert values[2][1] == 0.0  # unknown


def test_portrait_loaders_aggregate_the_as_of(analyst_lake):
    portraits = P.load_segment_portraits(analyst_lake, AS_OF)
    assert [r["segment_label"] for r in portraits] == ["evening_peak", "night", "commercial_day"]
    assert portraits[0]["peak_to_mean"] == pytest.approx(5.0 / (28.0 / 24))
    dist = P.load_tag_distributions(analyst_lake, AS_OF)
    assert dist["consumption_level"] == {"high": 2, "medium": 2, "low": 2}
    assert dist["price_sensitivity"] == {"high": 3, "low": 3}
    assert P.load_tag_distributions(analyst_lake, BARE_AS_OF) is None
    assert P.load_campaign_funnel(analyst_lake, BARE_AS_OF) is None


def test_unknown_tag_values_are_counted_last_drawn_grey_and_give_the_coverage(analyst_lake):
    dist = P.load_tag_distributions(analyst_lake, AS_OF)
    assert dist["churn_risk"] == {"low": 4, P.UNKNOWN: 2} and list(dist["churn_risk"])[-1] == P.UNKNOWN
    assert dist["ev_owner"] == {"false": 4, "true": 2}  # boolean tags are distributions too
    coverage = P.load_tag_coverage(analyst_lake, AS_OF)  # no gold.tag_catalog here: from the tags themselves
    assert coverage["churn_risk"] == pytest.approx(4 / 6) and coverage["consumption_level"] == 1.0
    fig = P.plot_tag_distributions(dist, coverage)
    import matplotlib.colors as mcolors

    # One bar segment per (tag, value), drawn in that order.
    drawn = [value for tag in dist for value in dist[tag]]
    colors = [mcolors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches]
    assert len(colors) == len(drawn)
    grey = mcolors.to_hex(P.UNKNOWN_COLOR)
    assert [c == grey for c in colors] == [v == P.UNKNOWN for v in drawn]  # grey is unknown, and unknown only
    assert "churn_risk (67% known)" in [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_campaign_funnel_reads_the_real_target_and_evaluation_columns(analyst_lake):
    funnel = {r["campaign_id"]: r for r in P.load_campaign_funnel(analyst_lake, AS_OF)}
    green, tou = funnel["green_power"], funnel["tou_ev"]
    # From gold.campaign_targets, by ab_group.
    assert (green["targeted"], green["treatment"], green["control"]) == (3, 2, 1)
    assert (tou["targeted"], tou["treatment"], tou["control"]) == (2, 1, 1)
    # From the campaign rows of gold.campaign_evaluation, under the table's own column names.
    assert set(P.FUNNEL_EVALUATION_COLUMNS) <= set(green) and set(P.FUNNEL_EVALUATION_COLUMNS) <= set(CAMPAIGN_EVALUATION.schema.names)
    assert (green["n_treatment"], green["responders_treatment"], green["n_control"], green["responders_control"]) == (2, 1, 1, 0)
    assert (green["rate_treatment"], green["rate_control"], green["uplift"]) == (0.5, 0.0, 0.5)
    assert (tou["rate_treatment"], tou["uplift"]) == (1.0, 1.0)
    assert (green["uplift_ci_low"], green["uplift_ci_high"]) == pytest.approx(newcombe_interval(1, 2, 0, 1, 0.95))
    family = family_intervals([(1, 2, 0, 1), (1, 1, 0, 1)], 0.95)  # green_power, tou_ev: the cycle's two campaigns
    assert green["family_size"] == 2 and green["family_confidence"] == pytest.approx(0.975)
    assert (green["uplift_family_low"], green["uplift_family_high"]) == pytest.approx(family[0], abs=1e-9)
    assert (tou["uplift_family_low"], tou["uplift_family_high"]) == pytest.approx(family[1], abs=1e-9)
    assert all(r["evaluated"] for r in funnel.values())


def test_campaign_funnel_refuses_tables_without_the_contract_columns(spark, tmp_path):
    lake = Lake(load_settings("test", [f"lake.root={tmp_path / 'lake'}"]), spark)
    guessed = spark.createDataFrame([(AS_OF, "tou_ev", "C1", "treatment")],
                                    "as_of date, campaign_id string, customer_id string, `group` string")
    lake.replace(guessed, "gold.campaign_targets", where={"as_of": [AS_OF]}, partition_by=["as_of"])
    with pytest.raises(ValueError, match=r"gold.campaign_targets lacks column\(s\) \['ab_group'\]"):
        P.load_campaign_funnel(lake, AS_OF)


def test_sql_describes_the_evaluation_columns_from_the_contract(analyst_lake, spark):
    rows = {r[0]: r[2] for r in run_query(spark, analyst_lake, "DESCRIBE gold.campaign_evaluation").rows}
    assert list(rows)[:len(CAMPAIGN_EVALUATION.schema)] == CAMPAIGN_EVALUATION.schema.names
    assert "Bonferroni" in rows["family_confidence"]
    assert "together with probability >= confidence" in rows["uplift_family_low"]


class _Html(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[tuple[str, bytes]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            assert a["src"].startswith("data:image/png;base64,"), a["src"][:40]
            self.images.append((a["alt"], base64.b64decode(a["src"].split(",", 1)[1])))
        for name in ("src", "href"):
            if tag != "img" and a.get(name):
                raise AssertionError(f"external reference {tag} {name}={a[name]}")

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_with_pictures_and_figures_and_no_pii(analyst_lake, tmp_path):
    path, report = write_report(analyst_lake, out=str(tmp_path / "r.html"), as_of=AS_OF)
    parser = _Html()
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    parser.feed(doc)
    assert [alt for alt, _ in parser.images] == ["Stage timings", "Centroid load curves", "Segment radar",
                                                 "Tag distributions", "Campaign funnel"]
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000 for _, png in parser.images)
    text = " ".join(parser.text)
    for figure in ("segment-train", "succeeded", "cfg123", "evening_peak", "高峰型", "commercial_day", "210.0",
                   "green_power", "tou_ev", "100.0%"):
        assert figure in text, figure
    assert report.missing == ["Data quality"]  # no silver tables in this lake
    for value in PII_VALUES:
        assert value not in doc


def test_report_says_not_computed_for_missing_sections(analyst_lake):
    report = build_report(analyst_lake, BARE_AS_OF)
    assert report.images == ["Centroid load curves", "Segment radar"]
    assert set(report.missing) == {"Run log", "Data quality", "Tag distributions", "Campaign funnel"}
    assert report.html.count(P.NOT_COMPUTED) == 4


# ------------------------------------------------------------------ real clients: notebook kernel, beeline


NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "segment_portraits.ipynb")


@pytest.mark.e2e
def test_portraits_notebook_executes_headless(analyst_lake):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = f"lake_root = {str(analyst_lake.root)!r}\nenv = 'test'\nas_of = '{AS_OF}'"
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(pngs) == 4  # centroid curves, radar, tag distributions, campaign funnel
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "evening_peak" in text and "green_power" in text and P.NOT_COMPUTED not in text


def _spark_home() -> str:
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the process and its children (the JVM)."""
    import psutil

    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    # The JVM listens on IPv4-mapped IPv6 addresses (::ffff:127.0.0.1).
    return sorted({(c.laddr.ip.removeprefix("::ffff:"), c.laddr.port) for p in procs
                   for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})


def _rows(stdout: str) -> list[str]:
    """beeline's csv2 lines, without the "null" placeholders its script mode prints around statements."""
    return [ln.strip() for ln in re.sub(r"null\s*", "", stdout).splitlines() if ln.strip()]


def _beeline(url: str, user: str, password: str, script: str, tmp_path) -> subprocess.CompletedProcess:
    """One beeline JVM running every statement of ``script`` (--force: on past errors)."""
    path = tmp_path / f"{user}-{abs(hash(script))}.sql"
    path.write_text(script)
    return subprocess.run(
        [os.path.join(_spark_home(), "bin", "beeline"), "-u", url, "-n", user, "-p", password, "--outputformat=csv2",
         "--silent=true", "--force=true", "--showWarnings=false", "-f", str(path)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "SPARK_HOME": _spark_home()})


@pytest.mark.e2e
def test_sql_server_authenticates_serves_read_only_and_listens_on_loopback(analyst_lake, tmp_path):
    from gridpersona.analyst.server import free_port
    from gridpersona.analyst.users import add_user
    from test_sql_guard import lake_state

    users = str(tmp_path / "sql-users")
    add_user(users, "ana", "analyst", "analyst-pass-1")
    add_user(users, "pia", "pii", "pii-pass-123")
    port = free_port()
    url = f"jdbc:hive2://127.0.0.1:{port}/default"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.path.join(os.path.dirname(__file__), "..", "lib"),
                                                                     os.environ.get("PYTHONPATH", "")] if p)}
    before = None
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "gridpersona.app.cli", "--env", "test", "--set",
                                   f"lake.root={analyst_lake.root}", "--set", f"sql_server.users_file={users}",
                                   "sql-server", "--port", str(port)],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "listening on" not in log_path.read_text():
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "sql-server did not start: " + log_path.read_text()[-3000:]
            time.sleep(1)
        before = lake_state(analyst_lake)
        # Every listening socket is on loopback (Thrift on its configured host 127.0.0.1; UI off; driver RPC,
        # block manager and py4j on 127.0.0.1), so nothing is reachable on the machine's other addresses.
        sockets = _listening(server.pid)
        assert ("127.0.0.1", port) in sockets
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in sockets), sockets

        wrong = _beeline(url, "ana", "not-the-password", "SELECT 1;\n", tmp_path)
        assert "1" not in wrong.stdout.split() and re.search(r"wrong user name or password|Could not open client",
                                                             wrong.stderr + wrong.stdout), wrong.stderr[-2000:]
        nobody = _beeline(url, "mallory", "analyst-pass-1", "SELECT 1;\n", tmp_path)
        assert "Could not open client" in nobody.stderr + nobody.stdout

        gold = os.path.join(analyst_lake.root, "gold", "segment_profile")
        archive = os.path.join(analyst_lake.root, "bronze", "customer_archive")
        hostile = [f"INSERT OVERWRITE DIRECTORY '{gold}' USING parquet SELECT 1",
                   "CREATE TABLE gold.x USING parquet AS SELECT * FROM gold.customer_segments",
                   "DROP VIEW gold.customer_segments", "SET spark.sql.runSQLOnFiles=true", "ADD JAR /tmp/evil.jar",
                   "SELECT reflect('java.lang.System', 'getProperty', 'user.home')",
                   f"SELECT customer_name, phone FROM parquet.`{archive}`", "SELECT * FROM text.`/etc/passwd`",
                   "SELECT customer_name, phone, address FROM pii.customer_archive",
                   "SELECT customer_id FROM gold.customer_segments WHERE customer_id IN "
                   "(SELECT customer_id FROM pii.customer_archive WHERE phone IS NOT NULL)",
                   "CACHE TABLE gold.customer_segments", "EXPLAIN SELECT * FROM pii.customer_archive"]
        script = (f"SELECT segment_label, count(*) AS customers FROM gold.customer_segments WHERE as_of = DATE'{AS_OF}' "
                  "GROUP BY segment_label ORDER BY segment_label;\n"
                  + "".join(h + ";\n" for h in hostile)
                  + "SELECT count(*) AS n FROM bronze.customer_archive;\n")
        analyst = _beeline(url, "ana", "analyst-pass-1", script, tmp_path)
        out = analyst.stdout + analyst.stderr
        lines = _rows(analyst.stdout)
        assert lines[:4] == ["segment_label,customers", "commercial_day,1", "evening_peak,3", "night,2"], out[-3000:]
        assert lines[-2:] == ["n", str(len(CUSTOMERS))], out[-3000:]
        # One "Error: ... refused: <why>" per hostile statement (the Thrift server appends Spark's stack to any error).
        refusals = [ln for ln in out.splitlines() if ln.startswith("Error: ") and "refused: " in ln]
        assert len(refusals) == len(hostile), out[-5000:]
        assert not any(v in out for v in PII_VALUES)

        # Settings sent in the JDBC URL (?hiveconf / #hivevar) reach the session before any statement; a catalog
        # plugin among them would load during analysis, before the plan check. Such a session does not open.
        evil = ("org.apache.spark.sql.execution.datasources.v2.jdbc.JDBCTableCatalog;"
                "spark.sql.catalog.evil.url=jdbc:derby:memory:evil")
        tampered = _beeline(f"{url}?spark.sql.catalog.evil={evil}#spark.sql.runSQLOnFiles=true", "ana",
                            "analyst-pass-1", "SELECT 1 AS one;\nSELECT * FROM evil.x;\n", tmp_path)
        out = tampered.stdout + tampered.stderr
        refused = [ln for ln in out.splitlines() if ln.startswith("Error: ") and "refused: this connection set session "
                   "settings (spark.sql.catalog.evil, spark.sql.catalog.evil.url, spark.sql.runSQLOnFiles)" in ln]
        assert len(refused) == 1 and "Failed to open new session" in refused[0], out[-3000:]
        assert _rows(tampered.stdout) == [] and "No current connection" in out, out[-3000:]

        pii = _beeline(url, "pia", "pii-pass-123", "SELECT customer_name, phone FROM pii.customer_archive LIMIT 1;\n",
                       tmp_path)
        assert _rows(pii.stdout) == ["customer_name,phone",
                                                                         f"{PII_VALUES[0]},{PII_VALUES[1]}"], pii.stderr[-2000:]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, log_path.read_text()[-3000:]
    assert "sql-server: stopping" in log_path.read_text()
    assert before is not None and lake_state(analyst_lake) == before
