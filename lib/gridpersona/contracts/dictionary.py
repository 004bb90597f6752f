"""Render the data dictionary (docs/data_dictionary.md) from the table contracts, every layer.

    python -m gridpersona.contracts.dictionary > docs/data_dictionary.md
"""

from __future__ import annotations

from gridpersona.contracts import LAYERS, layer_specs
from gridpersona.contracts.base import TableSpec

INTRO = """# Data dictionary: every table of the lake

Generated from the table contracts in `lib/gridpersona/contracts/` (one module per layer) by
`make docs`; a test keeps the two equal.

Conventions:
- Tables are Delta tables at `<lake.root>/<layer>/<table>`.
- `timestamp` columns are instants, stored in UTC (Delta `timestamp`, never `timestamp_ntz`).
- `date` columns are local calendar dates in `ami.time_zone` (default Asia/Shanghai).
- **required** columns are never null.
- Columns marked **PII** stay in bronze: they never reach silver or gold tables, logs or errors.
- A stage replaces exactly its run's partitions (a window's dates, an as-of, a model version), so a
  rerun with the same inputs and configuration writes the same rows.
"""

LAYER_INTROS = {
    "bronze": """# Bronze (inputs)

These are the schemas that data from a meter-data-management (MDM) or customer system must
match to be landed in the lake (`gridpersona ingest TABLE PATH...`). Every bronze read checks
them: a missing column or a wrong type fails naming the table and the column.

- Zone-less timestamps in landed files are read as wall-clock time in `ingest.source_time_zone`
  (default: `ami.time_zone`).
- A landed row without a **required** column goes to `bronze.ingest_rejects`.
  A column marked **in every file** (the reading itself) may be null in a row but not absent from a
  file. Floating-point values must be finite; `>= 0` and `<= ingest.<setting>` bound a value;
  keys and the columns that refer to other tables are at most `ingest.max_key_chars` long. Rows
  breaking these go to `bronze.ingest_rejects` with the reason (README, Input contract).
- Only `bronze.ami_interval` and `bronze.customer_archive` (its required columns) must exist. The
  other bronze tables are optional: an absent one reads as empty, and an absent nullable column as
  null (unknown); each run names them once in one log line.
""",
    "silver": """# Silver (cleaned readings and daily shapes)

Written by the stages `clean` and `shapes` for the run's window (its local dates' partitions).
""",
    "gold": """# Gold (segments, tags, campaigns)

Written by the stages `segment-train`, `segment-assign`, `tags`, `campaigns`, `evaluate` and
`profile`, each for its as-of date (gold.segment_model: for its model version). The tag tables
are described with the tags themselves in [docs/tags.md](tags.md).
""",
    "ops": """# Ops (run log)
""",
    "truth": """# Ground truth (synthetic lake only; never read by the pipeline)
""",
}


def render_spec(spec: TableSpec) -> str:
    lines = [f"## `{spec.name}`", "", spec.description, ""]
    if spec.source:
        lines += [f"Source: {spec.source}", ""]
    facts = []
    if spec.keys:
        facts.append("key: " + ", ".join(f"`{k}`" for k in spec.keys))
    if spec.foreign_keys:
        facts.append("refers to other tables by: " + ", ".join(f"`{k}`" for k in spec.foreign_keys))
    if spec.unique_keys:
        facts.append("one row per key (a repeat is rejected as `duplicate_key`, or replaces the stored row "
                     "with `ingest.on_duplicate_key: latest`)")
    if spec.partition_by:
        facts.append("partitioned by: " + ", ".join(f"`{k}`" for k in spec.partition_by))
    if facts:
        lines += ["; ".join(facts).capitalize() + ".", ""]
    if spec.configured_columns:
        lines += [f"Configured columns: {spec.configured_columns}", ""]
    lines += ["| column | type | unit | checks | meaning |", "|---|---|---|---|---|"]
    for c in spec.columns:
        flags = ", ".join(f for f in [
            "required" if not c.nullable else "",
            "in every file" if c.measure else "",
            ">= 0" if c.non_negative else "",
            f"<= `ingest.{c.upper_bound_setting}`" if c.upper_bound_setting else "",
        ] if f)
        meaning = c.description + (" **PII**" if c.pii else "")
        lines.append(f"| `{c.name}` | {c.dtype.simpleString()} | {c.unit} | {flags} | {meaning} |")
    lines.append("")
    return "\n".join(lines)


def render() -> str:
    parts = [INTRO]
    for layer in LAYERS:
        parts += [LAYER_INTROS[layer]]
        parts += [render_spec(s) for s in layer_specs(layer)]
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
