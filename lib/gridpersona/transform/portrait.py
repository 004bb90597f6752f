"""Portrait fields as numbers (seed 003 §4.1, Table 1): view.customer_features -> gold.customer_portrait.

A pure select (plus one join for the channel-preference tags): every figure is a
feature view column or arithmetic on one, so the portrait agrees with the tags
computed from the same view. No I/O, no session. Columns and meanings are the
contract :data:`gridpersona.contracts.tags.CUSTOMER_PORTRAIT`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gridpersona.contracts.tags import CUSTOMER_PORTRAIT, DAYS_PER_MONTH

# The channel-preference tags the portrait carries, each with its value -> the view column counting that
# channel (the counts the tag's expression in conf/tags.yaml compares).
CHANNEL_PREFS: dict[str, dict[str, str]] = {
    "payment_channel_pref": {"online": "payments_online", "offline": "payments_offline",
                             "auto_debit": "payments_auto_debit"},
    "interaction_channel_pref": {"app": "interactions_app", "hotline": "interactions_hotline",
                                 "service_hall": "interactions_service_hall"},
}
_SHARE_COLUMN = {"payment_channel_pref": "payment_channel_share",
                 "interaction_channel_pref": "interaction_channel_share"}


def _preferred_share(pref: str, counts: dict[str, str]) -> Column:
    """Share of the counted contacts (or payments) made through the preferred channel; null when the preference
    is null or names a value without a count, or when there are no counted events."""
    total = sum((F.col(c) for c in counts.values()), F.lit(0))
    chosen = F.lit(None).cast("int")
    for value, column in counts.items():
        chosen = F.when(F.col(pref) == F.lit(value), F.col(column)).otherwise(chosen)
    return F.when(total > 0, chosen / total)


def customer_portrait(view: DataFrame, tags: DataFrame) -> DataFrame:
    """view.customer_features rows of one as-of + gold.customer_tags rows of that as-of -> gold.customer_portrait.

    ``view``: the feature view (one row per customer; columns of ``FEATURE_VIEW``). ``tags``: at least
    ``customer_id``; its ``payment_channel_pref`` / ``interaction_channel_pref`` columns are carried when
    present (a tag not configured in conf/tags.yaml gives null). Returns one row per view row, columns
    and types of ``CUSTOMER_PORTRAIT``. ``days_used`` is the view's ``complete_days``; the load figures are
    the view's, null where it has them null (no complete day).
    """
    prefs = [F.col(c) if c in tags.columns else F.lit(None).cast("string").alias(c) for c in CHANNEL_PREFS]
    df = view.join(tags.select("customer_id", *prefs), "customer_id", "left")
    derived = {
        "days_used": F.col("complete_days"),
        "monthly_mean_kwh": F.col("mean_daily_kwh") * F.lit(DAYS_PER_MONTH),
        **{_SHARE_COLUMN[pref]: _preferred_share(pref, counts) for pref, counts in CHANNEL_PREFS.items()},
    }
    return df.select(*[derived.get(c.name, F.col(c.name)).cast(c.dtype).alias(c.name)
                       for c in CUSTOMER_PORTRAIT.columns])
