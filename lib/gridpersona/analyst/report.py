"""`gridpersona report`: one self-contained HTML file with the run's pictures and key figures.

Pictures are PNGs inlined as base64 data URIs (no external files, opens offline,
mails as one attachment). Content, for one as-of: the run's stages (timings, rows,
status from ops.job_runs), data quality (reconciliation, quarantine reasons), the
segment table, centroid load curves, the segment radar, tag distributions, the trend
forecast's backtest and chart (gold.segment_forecast) and the campaign funnel — the same
loaders and plots as notebooks/segment_portraits.ipynb (:mod:`gridpersona.analyst.portraits`).
By default no customer-level rows and no PII: only aggregates. A customer page (``--customer ID``,
:mod:`gridpersona.analyst.customer_page`) is added only for the ids asked for: the customer's numbers
from gold.customer_portrait, a radar of their percentiles among peers and their load curve (customer_id
only, still no PII).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

from gridpersona import __version__
from gridpersona.analyst import customer_page as CP
from gridpersona.analyst import portraits as P
from gridpersona.contracts.forecast import SEGMENT_FORECAST
from gridpersona.contracts.tags import TAG_ASSOCIATION_RULES

log = logging.getLogger("gridpersona")


@dataclass
class Report:
    as_of: dt.date
    html: str
    images: list[str] = field(default_factory=list)  # titles of the embedded pictures
    missing: list[str] = field(default_factory=list)  # sections not computed for the as-of
    customers: list[str] = field(default_factory=list)  # customer pages included (--customer)


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{_esc(v)}</td>' for i, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _interval(low, high) -> str:
    return "-" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"


def _num(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,"Noto Sans CJK SC",sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.missing{color:#a60;font-style:italic}.ok{color:#080}.bad{color:#b00}.meta{color:#666;font-size:.85em}
"""


def _model_structure(lake, versions: set[str]) -> list[str]:
    """One line per segment model version: the fitted model's silhouette and stability, and whether the
    segments are natural groups or a partition of a continuum (gold.segment_model.weak_structure)."""
    if not versions or not lake.exists("gold.segment_model"):
        return []
    lines = []
    heads = {}
    for r in lake.read_arrow("gold.segment_model").to_pylist():
        if r["model_version"] in versions:
            heads.setdefault(r["model_version"], r)
    for version, r in sorted(heads.items()):
        sil, stab = r.get("silhouette"), r.get("stability")
        text = (f"Model {version}: k={r['k']}, silhouette {_num(sil, 3)}, stability "
                f"{_pct(stab)} (meters keeping their segment when it is started from half of the meters).")
        if r.get("weak_structure"):
            text += (" Weak structure: the segments are a partition of a continuum, not natural groups; "
                     "read them as bands of similar load curves.")
        lines.append(text)
    return lines


class _Builder:
    def __init__(self):
        self.parts: list[str] = []
        self.images: list[str] = []
        self.missing: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, title: str, fig, caption: str = "") -> None:
        uri = P.png_data_uri(P.figure_png(fig))
        self.images.append(title)
        self.add(f'<figure><img alt="{_esc(title)}" title="{_esc(title)}" src="{uri}">'
                 f"<figcaption>{_esc(caption or title)}</figcaption></figure>")

    def not_computed(self, section: str, table: str) -> None:
        self.missing.append(section)
        self.add(f'<p class="missing">{_esc(section)}: {P.NOT_COMPUTED} ({_esc(table)} has no rows for it).</p>')


def build_report(lake, as_of: dt.date | None = None, window_days: int | None = None,
                 customers: Sequence[str] = ()) -> Report:
    """Assemble the report for ``as_of`` (default: the newest as-of in gold.segment_profile); with
    ``customers``, a portrait page per customer id after the aggregates (ValueError first, before any section
    is built, when an id has no gold.customer_portrait row for the as-of)."""
    as_of = as_of or P.latest_as_of(lake)
    if as_of is None:
        raise ValueError("report: gold.segment_profile has no as-of yet; run `gridpersona run all --as-of DATE` first")
    lake.spark  # column expressions below need an active session
    portraits_asked = CP.load_customer_portraits(lake, as_of, customers) if customers else []
    b = _Builder()
    runs = P.load_job_runs(lake, as_of)
    if window_days is None:
        window_days = next((r["window_days"] for r in runs or [] if r["stage"] == "clean" and r["window_days"]),
                           lake.settings.pipeline.window_days)
    b.add(f"<h1>gridpersona report — as of {as_of}</h1>")
    b.add(f'<p class="meta">lake {_esc(lake.root)} · window {window_days} days ending {as_of} · generated '
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by gridpersona {__version__}</p>")

    b.add("<h2>Run</h2>")
    if runs:
        total = sum(r["duration_s"] or 0 for r in runs)
        b.add(_table(["stage", "status", "seconds", "rows in", "rows out", "run id", "started (UTC)"],
                     [[r["stage"], r["status"], _num(r["duration_s"], 1), f"{r['rows_in'] or 0:,}", f"{r['rows_out'] or 0:,}",
                       r["run_id"], f"{r['started_at']:%Y-%m-%d %H:%M:%S}" if r["started_at"] else ""] for r in runs]
                     + [["total", "", _num(total, 1), "", "", "", ""]], numeric={2, 3, 4}))
        b.add(f'<p class="meta">config hash {_esc(runs[-1]["config_hash"])} · code {_esc(runs[-1]["code_version"])}</p>')
        b.figure("Stage timings", P.plot_stage_timings(runs), "Seconds per stage (latest run of each stage for the as-of), rows in -> out")
    else:
        b.not_computed("Run log", P.JOB_RUNS.name)

    b.add("<h2>Data quality</h2>")
    quality = P.load_data_quality(lake, as_of, window_days)
    if quality:
        ok = '<span class="ok">reconciled</span>' if quality["reconciled"] else '<span class="bad">NOT reconciled</span>'
        b.add(f"<p>Local days {quality['first']} .. {quality['last']}: raw readings {quality['raw_rows']:,} = clean "
              f"{quality['kept_rows']:,} + quarantined {quality['quarantined_rows']:,} — {ok}. "
              f"Interpolated readings in short gaps: {quality['clean_by_quality'].get('interpolated', 0):,}. "
              f"Meter-days complete: {quality['complete_meter_days']:,} of {quality['meter_days']:,} "
              f"({quality['missing_intervals']:,} intervals left missing).</p>")
        rows = [["clean", q, f"{n:,}"] for q, n in sorted(quality["clean_by_quality"].items())]
        rows += [["quarantine", reason, f"{n:,}"] for reason, n in sorted(quality["quarantine_by_reason"].items())]
        b.add(_table(["table", "quality / reason", "readings"], rows, numeric={2}))
    else:
        b.not_computed("Data quality", "silver.ami_clean")

    b.add("<h2>Segments</h2>")
    portraits = P.load_segment_portraits(lake, as_of)
    if portraits:
        b.add(_table(["segment", "label", "中文", "English", "meters", "share", "kWh/day", "peak", "flat", "valley",
                      "load factor", "weekend ratio"],
                     [[r["segment_id"], r["segment_label"], r["segment_name_zh"], r["segment_name_en"], f"{r['meters']:,}",
                       _pct(r["share"]), _num(r.get("mean_daily_kwh"), 1), _pct(r.get("peak_share")), _pct(r.get("flat_share")),
                       _pct(r.get("valley_share")), _num(r.get("load_factor")), _num(r.get("weekend_ratio"))]
                      for r in portraits], numeric={0, 4, 5, 6, 7, 8, 9, 10, 11}))
        for line in _model_structure(lake, {r["model_version"] for r in portraits}):
            b.add(f"<p>{_esc(line)}</p>")
        b.figure("Centroid load curves", P.plot_centroid_curves(portraits),
                 "Typical daily load curve of each segment (model centroid), weekday and weekend")
        b.figure("Segment radar", P.plot_segment_radar(portraits),
                 "Key features per segment, each axis min-max scaled across segments (seed 003 §4.1)")
    else:
        b.not_computed("Segments", P.SEGMENT_PROFILE.name)

    b.add("<h2>Tags</h2>")
    dist = P.load_tag_distributions(lake, as_of)
    if dist:
        coverage = P.load_tag_coverage(lake, as_of) or {}
        if coverage:
            b.add(_table(["tag", "coverage (known)"], [[t, _pct(c)] for t, c in coverage.items()], numeric={1}))
        b.figure("Tag distributions", P.plot_tag_distributions(dist, coverage),
                 f"Share of customers per tag value; {P.UNKNOWN} (grey): not determinable from the data at hand")
        by_seg = P.load_boolean_tags_by_segment(lake, as_of) or []
        flags = [t for t in P.BOOLEAN_TAGS if by_seg and t in by_seg[0]]
        if by_seg and flags:
            b.add(_table(["segment", "customers"] + flags,
                         [[r["segment_label"], f"{r['customers']:,}"] + [_pct(r[t]) for t in flags] for r in by_seg],
                         numeric=set(range(1, 2 + len(flags)))))
    else:
        b.not_computed("Tag distributions", P.CUSTOMER_TAGS.name)
    if dist:  # rules are mined from the tags: without them the section above already says so
        _tag_rules_section(b, lake, as_of)

    _forecast_section(b, lake, as_of)

    b.add("<h2>Campaigns</h2>")
    funnel = P.load_campaign_funnel(lake, as_of)
    if funnel:
        b.figure("Campaign funnel", P.plot_campaign_funnel(funnel), "Targeted customers per campaign, treatment vs control, responses")
        level = next((r["confidence"] for r in funnel if r.get("confidence") is not None), None)
        family = next((r for r in funnel if r.get("family_confidence") is not None), None)
        ci_head = f"{level:.0%} CI" if level is not None else "CI"
        headers = ["campaign", "targeted", "treatment", "control", "response (treatment)", "response (control)", "uplift",
                   ci_head, "family CI"]
        b.add(_table(headers, [[r["campaign_id"], f"{r.get('targeted') or 0:,}", f"{r.get('treatment') or 0:,}",
                                f"{r.get('control') or 0:,}", _pct(r.get("rate_treatment")), _pct(r.get("rate_control")),
                                _pct(r.get("uplift")), _interval(r.get("uplift_ci_low"), r.get("uplift_ci_high")),
                                _interval(r.get("uplift_family_low"), r.get("uplift_family_high"))]
                               for r in funnel], numeric={1, 2, 3, 4, 5, 6}))
        if family is not None:
            b.add(f'<p class="meta">{ci_head}: each campaign\'s own Newcombe interval. Family CI: simultaneous '
                  f"(Bonferroni) intervals over the cycle's {family['family_size']} evaluated campaigns, each at "
                  f"{family['family_confidence']:.2%}: all of them cover their true uplifts together with probability "
                  f"&ge; {family['confidence']:.0%}.</p>")
        if not funnel[0]["evaluated"]:
            b.not_computed("Campaign evaluation", P.CAMPAIGN_EVALUATION.name)
    else:
        b.not_computed("Campaign funnel", P.CAMPAIGN_TARGETS.name)

    for customer in portraits_asked:
        _customer_page(b, lake, as_of, customer)

    doc = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>gridpersona report {as_of}</title><style>{_CSS}</style></head><body>"
           + "\n".join(b.parts) + "</body></html>")
    return Report(as_of, doc, b.images, b.missing, [c["customer_id"] for c in portraits_asked])


TAG_RULES = TAG_ASSOCIATION_RULES.name


def _tag_rules_section(b: _Builder, lake, as_of: dt.date) -> None:
    """The strongest association rules between tag values of the as-of (gold.tag_association_rules, by lift):
    ``association_rules.report_rules`` of them, with support, confidence and the customer counts."""
    limit = lake.settings.association_rules.report_rules
    if not limit:
        return
    b.add("<h3>Tag association rules</h3>")
    rules = _as_of_rows(b, lake, TAG_RULES, as_of, "Tag association rules", "profile")
    if not rules:
        return
    rules.sort(key=lambda r: r["rule_rank"])
    b.add(_table(["#", "customers with", "also have", "support", "confidence", "lift", "customers (rule / with)"],
                 [[r["rule_rank"], ", ".join(r["antecedent"]), ", ".join(r["consequent"]), _pct(r["support"]),
                   _pct(r["confidence"]), _num(r["lift"]), f"{r['rule_count']:,} / {r['antecedent_count']:,}"]
                  for r in rules[:limit]], numeric={0, 3, 4, 5, 6}))
    bands = f" Bands: {_esc(rules[0]['item_bands'])}." if rules[0].get("item_bands") else ""
    b.add(f'<p class="meta">The {min(limit, len(rules))} strongest of {len(rules):,} rules by lift over '
          f"{rules[0]['n_customers']:,} customers (FPGrowth; an unknown tag value is no item). Support: share of all "
          f"customers holding every item; confidence: share of the left-hand customers that also have the right-hand "
          f"item; lift: confidence / the right-hand item's share of all customers.{bands}</p>")


FORECAST = SEGMENT_FORECAST.name


def _as_of_rows(b: _Builder, lake, table: str, as_of: dt.date, title: str, stage: str) -> list[dict] | None:
    """The rows of ``table`` for ``as_of``, or None after saying why there are none: a lake written before
    ``stage`` existed gets a note (not counted as a missing section), an as-of it did not run for is counted."""
    if not lake.exists(table):
        b.add(f'<p class="meta">No {_esc(table)} in this lake yet: `gridpersona run {stage}` writes it.</p>')
        return None
    rows = [r for r in lake.read_arrow(table).to_pylist() if r["as_of"] == as_of]
    if not rows:
        b.not_computed(title, table)
        return None
    return rows


def _forecast_section(b: _Builder, lake, as_of: dt.date) -> None:
    """The trend forecast of the as-of (gold.segment_forecast): the backtest against seasonal-naive per level,
    per segment, and a chart of everyone's monthly kWh with the backtest and the forecast."""
    b.add("<h2>Forecast</h2>")
    rows = _as_of_rows(b, lake, FORECAST, as_of, "Forecast", "forecast")
    if not rows:
        return
    overall = [r for r in rows if r["kind"] == "overall"]
    held = max((sum(1 for x in rows if x["kind"] == "backtest" and x["level"] == r["level"]
                    and x["segment_id"] == r["segment_id"] and x["region"] == r["region"])
                for r in rows if r["kind"] == "summary"), default=0)
    b.add(_table(["level", "groups compared", "MAPE model", "MAPE seasonal-naive", "MAPE model, realised weather"],
                 [[r["level"], r["n_groups"], _num(r["mape_model_pct"], 1), _num(r["mape_naive_pct"], 1),
                   _num(r["mape_expost_pct"], 1)] for r in overall], numeric={1, 2, 3, 4}))
    b.add(f'<p class="meta">Backtest: the last {held} bill months held out and forecast from the months before '
          f"(mean absolute percentage error per group, %, averaged over the level's groups). The model's forecast "
          f"takes the climatological degree-days; 'realised weather' gives it the months' actual degree-days, "
          f"what is left is the model's own error (docs/forecast.md).</p>")
    by_segment = sorted((r for r in rows if r["kind"] == "summary" and r["level"] == "segment"),
                        key=lambda r: r["segment_id"])
    nxt = {r["segment_id"]: r for r in sorted((r for r in rows if r["kind"] == "forecast" and r["level"] == "segment"),
                                               key=lambda r: r["month"], reverse=True)}
    if by_segment:
        b.add(_table(["segment", "label", "customers", "method", "MAPE model", "MAPE naive", "next month", "kWh",
                      "interval"],
                     [[r["segment_id"], r["segment_label"], f"{r['n_customers'] or 0:,}", r["method"] or r["reason"],
                       _num(r["mape_model_pct"], 1), _num(r["mape_naive_pct"], 1),
                       f"{nxt[r['segment_id']]['month']:%Y-%m}" if r["segment_id"] in nxt else "",
                       _num(nxt.get(r["segment_id"], {}).get("forecast_kwh"), 0),
                       _interval_kwh(nxt.get(r["segment_id"], {}))] for r in by_segment],
                     numeric={0, 2, 4, 5, 7}))
    everyone = [r for r in rows if r["level"] == "all" and r["month"] is not None]
    if everyone:
        b.figure("Forecast", _plot_forecast(everyone),
                 "Everyone's billed kWh per month, the backtest (model and seasonal-naive) and the forecast with its "
                 "interval")


def _interval_kwh(r: dict) -> str:
    if r.get("lower_kwh") is None or r.get("upper_kwh") is None:
        return ""
    return f"{r['lower_kwh']:,.0f} – {r['upper_kwh']:,.0f}"


def _plot_forecast(rows: list[dict]):
    """Monthly kWh (history), the backtest's model and naive forecasts, and the forecast with its interval."""
    plt = P._plt()
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    hist = sorted((r for r in rows if r["kind"] == "history"), key=lambda r: r["month"])
    bt = sorted((r for r in rows if r["kind"] == "backtest"), key=lambda r: r["month"])
    fc = sorted((r for r in rows if r["kind"] == "forecast" and r["forecast_kwh"] is not None),
                key=lambda r: r["month"])
    mwh = lambda v: None if v is None else v / 1000  # noqa: E731
    ax.plot([r["month"] for r in hist], [mwh(r["actual_kwh"]) for r in hist], color="black", marker="o", ms=3,
            lw=1.2, label="billed")
    ax.plot([r["month"] for r in bt], [mwh(r["forecast_kwh"]) for r in bt], color="tab:blue", marker="s", ms=3,
            lw=1, ls="--", label="backtest: model")
    ax.plot([r["month"] for r in bt], [mwh(r["naive_kwh"]) for r in bt], color="tab:orange", marker="^", ms=3,
            lw=1, ls=":", label="backtest: seasonal-naive")
    if fc:
        ax.plot([r["month"] for r in fc], [mwh(r["forecast_kwh"]) for r in fc], color="tab:blue", marker="o", ms=3,
                lw=1.5, label="forecast")
        if all(r["lower_kwh"] is not None for r in fc):
            ax.fill_between([r["month"] for r in fc], [mwh(r["lower_kwh"]) for r in fc],
                            [mwh(r["upper_kwh"]) for r in fc], color="tab:blue", alpha=0.15, label="interval")
    ax.set_ylabel("MWh per month", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax.set_title("Monthly kWh, all customers: backtest and forecast", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _customer_page(b: _Builder, lake, as_of: dt.date, customer: dict) -> None:
    """One customer's section: context, the portrait numbers with their peer percentile, radar and curves."""
    cid = customer["customer_id"]
    b.add(f'<h2 id="customer-{_esc(cid)}">Customer {_esc(cid)}</h2>')
    segment = customer.get("segment_label") or "no segment"
    b.add(f'<p class="meta">{_esc(customer["customer_type"])} · region {_esc(customer["region"])} · segment '
          f"{_esc(segment)} · figures over {customer['days_used']} complete days of {customer['days_observed']} "
          f"observed in the window · payment channel {_esc(customer.get('payment_channel_pref') or 'unknown')} "
          f"({_pct(customer.get('payment_channel_share'))}) · interaction channel "
          f"{_esc(customer.get('interaction_channel_pref') or 'unknown')} "
          f"({_pct(customer.get('interaction_channel_share'))})</p>")
    if not customer["days_used"]:
        b.missing.append(f"Customer {cid}")
        b.add(f'<p class="missing">No complete day in the window ({customer["days_observed"]} observed): its load '
              f"figures are unknown, so there is no radar or curve.</p>")
        return
    peers = CP.load_peer_figures(lake, as_of, customer)
    rows = [[label, _num(customer.get(key), 3), _pct(peers["percentile"][key]), _num(peers["median"][key], 3),
             f"{peers['known'][key]:,}"] for key, label in CP.PORTRAIT_AXES]
    rows += [["peak demand kW", _num(customer.get("peak_demand_kw")), "", "", ""],
             ["kWh percentile in region and type", _pct(customer.get("kwh_pct_in_group")), "", "", ""]]
    b.add(_table(["figure", "value", "percentile among peers", "peer median", "peers with a value"], rows,
                 numeric={1, 2, 3, 4}))
    b.add(f'<p class="meta">Peers: the {peers["peers"]:,} {_esc(customer["customer_type"])} customers of the '
          f"as-of; percentile = share of peers with a lower value, ties counted half.</p>")
    b.figure(f"Portrait radar {cid}", CP.plot_customer_radar(cid, peers["percentile"]),
             f"{cid}: percentile among {customer['customer_type']} customers per portrait figure (seed 003 §4.1); "
             f"dashed ring: the peer median")
    centroid = CP.segment_centroid(lake, as_of, customer.get("segment_id"))
    b.figure(f"Load curve {cid}", CP.plot_customer_curves(customer, peers, centroid),
             f"{cid}: mean kWh per slot on complete weekdays and weekend days, against the peers' mean"
             + (" and the segment centroid scaled to the customer's daily kWh" if centroid else ""))


def write_report(lake, out: str | None = None, as_of: dt.date | None = None,
                 customers: Sequence[str] = ()) -> tuple[str, Report]:
    """Build the report (with a portrait page per id of ``customers``) and write it to ``out`` (default
    <lake root>/_reports/report-<as_of>.html); returns (path, report)."""
    report = build_report(lake, as_of, customers=customers)
    path = out or os.path.join(lake.root, "_reports", f"report-{report.as_of}.html")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(report.html)
    log.info("report: %s (%d pictures, %.0f KiB)", path, len(report.images), len(report.html) / 1024)
    return path, report
