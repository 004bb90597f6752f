"""Deterministic A/B holdout assignment, identical in Spark SQL and in Python.

A customer is in the **control** group of a campaign when

    int(first 8 hex digits of sha256("<customer_id>|<campaign_id>"), 16) / 2**32  <  holdout_share

and in **treatment** otherwise. The bucket depends on nothing but the two ids:
not on the cycle, the score, the model, the run or the partitioning. So a
rerun, a retrain or another as-of keeps every customer in the same group of a
campaign, and the generator (which plants responses with the Python twin)
agrees with the pipeline (which uses the Spark column) about who is treated.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column
from pyspark.sql import functions as F

_SCALE = float(2**32)


def holdout_bucket(customer_id: str, campaign_id: str) -> float:
    """The customer's bucket for a campaign, uniform in [0, 1): Python twin of :func:`holdout_bucket_col`."""
    digest = hashlib.sha256(f"{customer_id}|{campaign_id}".encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / _SCALE


def is_control(customer_id: str, campaign_id: str, holdout_share: float) -> bool:
    """True when the customer is in the campaign's holdout (control) group."""
    return holdout_bucket(customer_id, campaign_id) < holdout_share


def holdout_bucket_col(customer_id: Column | str, campaign_id: Column | str) -> Column:
    """Spark column: the bucket in [0, 1) of (customer, campaign); equal to :func:`holdout_bucket`."""
    cust = F.col(customer_id) if isinstance(customer_id, str) else customer_id
    camp = F.col(campaign_id) if isinstance(campaign_id, str) else campaign_id
    digest = F.sha2(F.concat_ws("|", cust, camp), 256)
    # 8 hex digits fit in a long: conv() to base 10, then an exact division by 2^32.
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("long") / F.lit(_SCALE)


def ab_group_col(customer_id: Column | str, campaign_id: Column | str, holdout_share: Column | float) -> Column:
    """Spark column: ``'control'`` when the bucket is below ``holdout_share``, else ``'treatment'``."""
    share = holdout_share if isinstance(holdout_share, Column) else F.lit(float(holdout_share))
    return F.when(holdout_bucket_col(customer_id, campaign_id) < share, F.lit("control")).otherwise(F.lit("treatment"))
