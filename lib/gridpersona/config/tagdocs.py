"""Render docs/tags.md from conf/tags.yaml and the tag engine's contracts (lib/gridpersona/contracts/tags.py).

    python -m gridpersona.config.tagdocs > docs/tags.md      (make docs)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gridpersona.config import DEFAULT_CONF_DIR, TagsConfig
from gridpersona.contracts.dictionary import render_spec
from gridpersona.contracts.tags import CUSTOMER_TAGS_CONTEXT, FEATURE_VIEW, OUTPUT_SPECS, SOURCE_MARKERS

INTRO = """# Customer tags (用户画像标签)

Generated from `conf/tags.yaml` and `lib/gridpersona/contracts/tags.py` by `make docs`; a test keeps the three equal.

The tag system follows seed 000's Table 2 (level 1 -> level 2 -> tag values) plus the target groups of
its §2.3 and seed 002's churn analysis. Every tag is a **Spark SQL expression** in `conf/tags.yaml` over
the per-customer feature view below (and over tags defined above it in the file). The `tags` stage
builds the view for the as-of date, compiles **all tags into one select** over it and writes:

- `gold.customer_tags`: one row per customer of the archive per as-of, one column per tag (in file
  order), the context columns campaigns need, and `tag_catalog_version`;
- `gold.tag_catalog`: the definitions used, with `catalog_version`, a hash of every definition
  (taxonomy, feature parameters, tags): it changes when any of them changes; and each tag's
  `coverage` for the as-of, the share of customers with a known value (the stage log prints it too).

The `profile` stage then writes the group portraits (seed 000 §2.2): `gold.segment_tag_profile` (each
load segment's distribution over every categorical tag, against the whole population) and
`gold.consumption_price_quadrant` (consumption level x price sensitivity, §2.2.2). The portraits are a
companion table in long form (segment, tag, value, customers, share, population share, lift) rather
than a column of `gold.segment_profile`: its rows follow whatever tags `conf/tags.yaml` defines without
changing `gold.segment_profile`'s schema, and analysts filter, join and pivot it in plain SQL.

**Checks.** At config load, before Spark starts, every expression is parsed as Spark SQL (sqlglot's
Spark dialect, pure Python) and every column it names must be a feature-view column or an earlier
tag; aggregates, window functions, subqueries and aliases are refused; an error names the file and
the tag. When the stage starts, Spark's analyzer compiles the select on an empty frame of the view's
schema (a session, no job): unknown functions and a result type other than the declared `type` fail
naming the tag. While the job runs, a string tag yielding a value outside its `values` fails the job
(nothing is written), unless the tag declares `open_values: true` (`usage_pattern`: segment labels are
generated, so its `values` lists the known ones only). An array picked by a computed index
(`element_at(array(...), n)`, `get`, `arr[n]` with `n` not a literal) is refused at config load, in tag
and campaign expressions alike: in Spark a NULL index returns the array's *last* element, so an unknown
input would read as the top category; count signals with `CASE WHEN` instead.

**Unknown stays unknown.** `null` always means "not determinable" (reports show it as `unknown`, in
grey). A source with no data gives null features, never 0 / false: billing columns (`bills_12m`,
`has_arrears`, ...) are null when `bronze.billing_payment` is missing or empty or holds no bill for the
customer; interaction and campaign-history columns are null when their table is missing or empty (a
present table without rows for the customer means zero events: counts 0); `do_not_contact` null stays
null (campaigns never contact such a customer); `products_held` and `vip` are null when the archive
carries no value for anyone (a minimal archive). Each tag lists in `needs` the sources (through the
marker columns below) and the columns or earlier tags it cannot do without; where one is unknown for
a customer the tag is null whatever its expression says. Expressions are written in three-valued
logic (no `coalesce(..., false)` that turns an unknown signal into "no"): `green_eco` is true once one
signal is known true and unknown while the others are unknown.

**Changing tags.** Editing an expression changes values and the catalog version, nothing else. Adding,
removing or retyping a tag changes `gold.customer_tags`'s columns: the stage refuses to write into a
table with other columns (move the old table aside, or migrate it, and rerun the as-of dates you need).

Percentile tags use `kwh_pct_in_group`, computed once in the view by a window (`percent_rank` within
region and customer type), so tag expressions stay row-level.
"""


def load_tags(conf_dir: Path | None = None) -> TagsConfig:
    path = (conf_dir or DEFAULT_CONF_DIR) / "tags.yaml"
    return TagsConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(tags: TagsConfig | None = None) -> str:
    tags = tags or load_tags()
    out = [INTRO]
    out += ["## Taxonomy", "", "| level 1 | level 2 | tags |", "|---|---|---|"]
    for c1, l1 in tags.taxonomy.items():
        for c2, l2 in l1.level2.items():
            codes = [f"`{t.code}`" for t in tags.definitions if t.level1 == c1 and t.level2 == c2]
            out.append(f"| {l1.zh} {l1.en} (`{c1}`) | {l2.zh} {l2.en} (`{c2}`) | {', '.join(codes) or '-'} |")
    out += ["", "## Tags", "", "| # | tag | 中文 | English | level 1 / level 2 | values | needs | definition |",
            "|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(tags.definitions, start=1):
        values = ", ".join(f"`{v}`" for v in t.values) if t.values else t.type
        if t.open_values:
            values += ", ... (open)"
        needs = ", ".join(f"`{n}`" for n in t.needs) or "-"
        out.append(f"| {i} | `{t.code}` | {t.zh} | {t.en} | `{t.level1}` / `{t.level2}` | {values} | {needs} | "
                   f"{_cell(t.definition)} |")
    out += ["", "Sources a tag may need, and the view column that is null exactly where the source has no data "
            "for the customer:", "", "| source | marker column |", "|---|---|"]
    out += [f"| `{src}` | `{col}` |" for src, col in SOURCE_MARKERS.items()]
    out += ["", "### Expressions", ""]
    for t in tags.definitions:
        out += [f"`{t.code}` ({t.type}):", "", "```sql", t.expr.rstrip(), "```", ""]
    out += ["## Feature view parameters (`tags.features`)", "", "| key | value |", "|---|---|"]
    for key, value in tags.features.model_dump().items():
        out.append(f"| `{key}` | {value} |")
    out += ["", "## Feature view columns", ""]
    out.append(render_spec(FEATURE_VIEW).replace("## `view.customer_features`", "### `view.customer_features`", 1))
    out += ["## Output tables", "", "### `gold.customer_tags`", "",
            "One row per customer of the archive per as-of (partitioned by `as_of`). Context columns (the contract "
            "with the campaigns stage, from the view): " + ", ".join(f"`{c}`" for c in CUSTOMER_TAGS_CONTEXT)
            + "; then one column per tag above, in order; then `tag_catalog_version` (string), the "
            "`gold.tag_catalog` version the row was computed with. No PII.", ""]
    for spec in OUTPUT_SPECS:
        out.append(render_spec(spec).replace(f"## `{spec.name}`", f"### `{spec.name}`", 1))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
