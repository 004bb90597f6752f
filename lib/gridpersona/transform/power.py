"""Statistical power of campaign holdouts: minimum detectable effects, Welch intervals, holdout sizing.

Pure Python and numpy over per-arm sizes and sums (no Spark, no scipy), so the
``campaigns`` stage can print and store, at targeting time, the smallest effect
each campaign's holdout can detect, and the ``evaluate`` stage can put Welch
intervals on differences of means.

**Proportions (response, churn, ...).** The evaluate stage calls an uplift
significant when its Newcombe hybrid score interval (Newcombe 1998, method 10;
:mod:`gridpersona.transform.campaign_outcomes`) excludes 0. The minimum
detectable effect (MDE) here is the smallest absolute uplift delta at which
that rule fires with probability ``power`` when the control rate is p0, found
by bisection on delta with the power computed **exactly**: enumerate every
outcome (x_c, x_t) of Bin(n_c, p0) x Bin(n_t, p0 + delta), mark those whose
interval excludes 0 (the rejection region does not depend on delta, so it is
built once), and sum their probabilities. The normal approximation

    delta = (z_{1-alpha/2} + z_{power}) * sqrt(pbar (1 - pbar) (1/n_t + 1/n_c)),  pbar = p0 + delta/2

is stored beside it: it is badly optimistic for control groups of 12-60
customers and rates of a few percent, where campaign holdouts live.

**Means (kWh change, ARPU, ...).** Welch's interval
``d +- t_{nu, 1-alpha/2} sqrt(s_t^2/n_t + s_c^2/n_c)`` with the
Welch-Satterthwaite nu, and its MDE ``(t_{nu,1-alpha/2} + t_{nu,power})
sigma sqrt(1/n_t + 1/n_c)``. The t quantile inverts the t distribution
function, written through the regularized incomplete beta function
(continued fraction, Numerical Recipes 6.4).

**Holdout sizing.** With N targets split h : 1 - h, the normal-approximation
MDE is (z_a + z_b) sigma / sqrt(N h (1 - h)). Asking for a target effect d
gives h (1 - h) >= 1/K with K = N d^2 / ((z_{1-alpha/2} + z_power)^2 sigma^2),
whose smaller root is h = (1 - sqrt(1 - 4/K)) / 2. K < 4 means that no split
of N detects d (h (1 - h) <= 1/4): infeasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Method names stored in gold.campaign_power.mde_method.
MDE_EXACT = "exact_newcombe"
MDE_NORMAL = "normal_approx"
MDE_WELCH = "welch_t"


def z_quantile(p: float) -> float:
    """Standard normal quantile of p in (0, 1)."""
    return NormalDist().inv_cdf(p)


# ------------------------------------------------------------------ binomial


def _log_factorials(n: int) -> np.ndarray:
    """log(k!) for k = 0..n."""
    return np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))))


def binom_pmf(n: int, p: float) -> np.ndarray:
    """Probabilities of 0..n successes of Bin(n, p) (length n + 1); exact at p = 0 and p = 1."""
    k = np.arange(n + 1)
    if p <= 0.0:
        return (k == 0).astype(float)
    if p >= 1.0:
        return (k == n).astype(float)
    lf = _log_factorials(n)
    return np.exp(lf[n] - lf[k] - lf[n - k] + k * math.log(p) + (n - k) * math.log1p(-p))


def _wilson_bounds(n: int, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rates x/n and Wilson score bounds (low, high) for x = 0..n."""
    x = np.arange(n + 1, dtype=float)
    p = x / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, center - half, center + half


def newcombe_rejection_region(n_t: int, n_c: int, confidence: float = 0.95) -> np.ndarray:
    """Boolean matrix [x_c, x_t] (shape (n_c + 1, n_t + 1)): True where the Newcombe interval of
    x_t/n_t - x_c/n_c at ``confidence`` excludes 0 (the evaluate stage's ``significant``).

    The same interval as :func:`gridpersona.transform.campaign_outcomes.newcombe_interval`, for every
    outcome at once.
    """
    if n_t < 1 or n_c < 1:
        raise ValueError(f"both arms need at least one unit, got n_t={n_t}, n_c={n_c}")
    z = z_quantile(0.5 + confidence / 2.0)
    p_t, l_t, u_t = _wilson_bounds(n_t, z)
    p_c, l_c, u_c = _wilson_bounds(n_c, z)
    d = p_t[None, :] - p_c[:, None]
    low = d - np.sqrt((p_t - l_t)[None, :] ** 2 + (u_c - p_c)[:, None] ** 2)
    high = d + np.sqrt((u_t - p_t)[None, :] ** 2 + (p_c - l_c)[:, None] ** 2)
    return (low > 0) | (high < 0)


def exact_power(p0: float, delta: float, n_t: int, n_c: int, confidence: float = 0.95,
                region: np.ndarray | None = None) -> float:
    """Probability that the Newcombe interval excludes 0 when the control rate is p0 and the treatment
    rate p0 + delta (delta may be negative; exact enumeration of both binomials). ``region``: a
    precomputed :func:`newcombe_rejection_region` for (n_t, n_c, confidence)."""
    if region is None:
        region = newcombe_rejection_region(n_t, n_c, confidence)
    p1 = min(max(p0 + delta, 0.0), 1.0)
    return float(binom_pmf(n_c, p0) @ region @ binom_pmf(n_t, p1))


def mde_proportion_exact(p0: float, n_t: int, n_c: int, *, confidence: float = 0.95, power: float = 0.8,
                         decrease: bool = False, tol: float = 1e-6) -> float | None:
    """Smallest effect delta > 0 (absolute, a share) detected with probability ``power`` by the Newcombe
    rule at control rate p0 with arms n_t, n_c: treatment rate p0 + delta, or p0 - delta with
    ``decrease`` (churn). None when even the extreme rate (1, or 0 for a decrease) is not detected that
    often, or an arm is empty. Bisection to ``tol`` on the exact power of :func:`exact_power`."""
    if n_t < 1 or n_c < 1 or not 0.0 <= p0 <= 1.0:
        return None
    sign = -1.0 if decrease else 1.0
    region = newcombe_rejection_region(n_t, n_c, confidence)
    lo, hi = 0.0, (p0 if decrease else 1.0 - p0)
    if hi <= 0.0 or exact_power(p0, sign * hi, n_t, n_c, region=region) < power:
        return None
    while hi - lo > tol:
        mid = (lo + hi) / 2.0
        if exact_power(p0, sign * mid, n_t, n_c, region=region) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def mde_proportion_normal(p0: float, n_t: int, n_c: int, *, confidence: float = 0.95,
                          power: float = 0.8, decrease: bool = False) -> float | None:
    """Normal-approximation MDE (z_{1-a/2} + z_power) sqrt(pbar qbar (1/n_t + 1/n_c)), pbar = p0 +- delta/2
    (solved by fixed-point iteration); None for an empty arm. Optimistic for small arms and rare events."""
    if n_t < 1 or n_c < 1:
        return None
    zz = z_quantile(0.5 + confidence / 2.0) + z_quantile(power)
    sign = -1.0 if decrease else 1.0
    limit = p0 if decrease else 1.0 - p0  # the largest effect the rate leaves room for
    delta = 0.0
    for _ in range(200):
        pbar = min(max(p0 + sign * delta / 2.0, 0.0), 1.0)
        new = zz * math.sqrt(pbar * (1 - pbar) * (1.0 / n_t + 1.0 / n_c))
        if new > limit:
            return None
        if abs(new - delta) < 1e-12:
            break
        delta = new
    return delta


# ------------------------------------------------------------------ t distribution


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def betainc_regularized(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Distribution function of Student's t with ``df`` > 0 degrees of freedom (df need not be whole)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * betainc_regularized(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` > 0 degrees of freedom, p in (0, 1); bisection to 1e-12."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, max(1.0, 2 * z_quantile(p))
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ------------------------------------------------------------------ Welch


@dataclass(frozen=True)
class WelchInterval:
    """Difference of means treatment - control with its Welch interval."""

    effect: float
    low: float
    high: float
    se: float
    df: float
    confidence: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def welch_df(var_t: float, n_t: int, var_c: float, n_c: int) -> float:
    """Welch-Satterthwaite degrees of freedom of s_t^2/n_t + s_c^2/n_c (sample variances, n >= 2)."""
    a, b = var_t / n_t, var_c / n_c
    denom = a * a / (n_t - 1) + b * b / (n_c - 1)
    if denom == 0.0:
        return float(n_t + n_c - 2)  # both arms constant: no spread to weight, the pooled df is as good as any
    return (a + b) ** 2 / denom


def welch_interval(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int,
                   confidence: float = 0.95) -> WelchInterval | None:
    """Welch interval of mean_t - mean_c from per-arm means, sample variances (ddof 1) and sizes;
    None when an arm has fewer than 2 units (no variance)."""
    if n_t < 2 or n_c < 2:
        return None
    se = math.sqrt(var_t / n_t + var_c / n_c)
    df = welch_df(var_t, n_t, var_c, n_c)
    d = mean_t - mean_c
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return WelchInterval(d, d - half, d + half, se, df, confidence)


def welch_from_sums(sum_t: float, sumsq_t: float, n_t: int, sum_c: float, sumsq_c: float, n_c: int,
                    confidence: float = 0.95) -> WelchInterval | None:
    """:func:`welch_interval` from per-arm sums and sums of squares (what a Spark aggregation returns)."""
    if n_t < 2 or n_c < 2:
        return None

    def mean_var(s: float, ss: float, n: int) -> tuple[float, float]:
        m = s / n
        return m, max(ss - n * m * m, 0.0) / (n - 1)

    m_t, v_t = mean_var(sum_t, sumsq_t, n_t)
    m_c, v_c = mean_var(sum_c, sumsq_c, n_c)
    return welch_interval(m_t, v_t, n_t, m_c, v_c, n_c, confidence)


def mde_mean(sigma: float, n_t: int, n_c: int, *, confidence: float = 0.95, power: float = 0.8) -> float | None:
    """MDE of a difference of means with a common standard deviation ``sigma``:
    (t_{nu,1-a/2} + t_{nu,power}) sigma sqrt(1/n_t + 1/n_c), nu the Welch df at equal variances;
    None when an arm has fewer than 2 units or sigma is unknown."""
    if n_t < 2 or n_c < 2 or sigma is None or not math.isfinite(sigma):
        return None
    df = welch_df(sigma * sigma, n_t, sigma * sigma, n_c)
    return (t_quantile(0.5 + confidence / 2.0, df) + t_quantile(power, df)) * sigma * math.sqrt(1.0 / n_t + 1.0 / n_c)


# ------------------------------------------------------------------ holdout sizing


@dataclass(frozen=True)
class HoldoutSize:
    """The control share that detects a target effect: ``share`` (None when infeasible), ``feasible``
    (False when no split of the N targets, or none up to ``max_share``, detects it) and K."""

    share: float | None
    feasible: bool
    k: float


def holdout_share_for_target(n_total: int, target_effect: float, sigma: float, *, confidence: float = 0.95,
                             power: float = 0.8, max_share: float = 0.5) -> HoldoutSize:
    """Smallest control share h of ``n_total`` targets whose normal-approximation MDE is ``target_effect``:
    h = (1 - sqrt(1 - 4/K)) / 2, K = N d^2 / ((z_{1-a/2} + z_power)^2 sigma^2).

    ``sigma``: the outcome's standard deviation per unit (sqrt(pbar qbar) for a proportion). Infeasible
    (share None) when K < 4 (no split detects d) or h > ``max_share``.
    """
    if n_total < 2 or target_effect <= 0 or sigma is None or sigma <= 0:
        return HoldoutSize(None, False, 0.0)
    zz = z_quantile(0.5 + confidence / 2.0) + z_quantile(power)
    k = n_total * target_effect ** 2 / (zz * zz * sigma * sigma)
    if k < 4.0:
        return HoldoutSize(None, False, k)
    h = (1.0 - math.sqrt(1.0 - 4.0 / k)) / 2.0
    if h > max_share:
        return HoldoutSize(None, False, k)
    return HoldoutSize(h, True, k)


def proportion_sigma(p0: float, target_effect: float) -> float:
    """sqrt(pbar (1 - pbar)) at pbar = p0 + target_effect / 2: the per-unit sd used to size a holdout."""
    pbar = min(max(p0 + target_effect / 2.0, 0.0), 1.0)
    return math.sqrt(pbar * (1.0 - pbar))


# ------------------------------------------------------------------ gold.campaign_power rows


def campaign_power_row(*, campaign_id: str, outcome: str, baseline: float, baseline_source: str, n_treatment: int,
                       n_control: int, confidence: float, power: float, holdout_share: float,
                       target_effect: float | None = None, max_holdout_share: float = 0.5) -> dict:
    """One gold.campaign_power row (without as_of) for a proportion outcome.

    ``outcome`` ``response`` seeks an increase, ``churn`` a decrease of the rate. ``target_effect``
    (response only): the holdout_share_for_target of the cycle's n_treatment + n_control targets.
    """
    decrease = outcome == "churn"
    mde = mde_proportion_exact(baseline, n_treatment, n_control, confidence=confidence, power=power,
                               decrease=decrease)
    normal = mde_proportion_normal(baseline, n_treatment, n_control, confidence=confidence, power=power,
                                   decrease=decrease)
    sized: HoldoutSize | None = None
    if target_effect is not None:
        sized = holdout_share_for_target(n_treatment + n_control, target_effect,
                                         proportion_sigma(baseline, -target_effect if decrease else target_effect),
                                         confidence=confidence, power=power, max_share=max_holdout_share)
    return {
        "campaign_id": campaign_id, "outcome": outcome, "baseline": float(baseline),
        "baseline_source": baseline_source, "n_treatment": int(n_treatment), "n_control": int(n_control),
        "alpha": 1.0 - confidence, "power": float(power), "mde": mde, "mde_method": MDE_EXACT,
        "mde_normal": normal, "target_effect": target_effect, "holdout_share": float(holdout_share),
        "holdout_share_for_target": sized.share if sized else None,
        "feasible": sized.feasible if sized else None,
    }


def campaign_power_row_mean(*, campaign_id: str, outcome: str, sigma: float | None, n_treatment: int,
                            n_control: int, confidence: float, power: float, holdout_share: float) -> dict:
    """One gold.campaign_power row (without as_of) for a mean outcome with per-unit sd ``sigma`` (None: unknown,
    no MDE): :func:`mde_mean` and its normal approximation."""
    mde = mde_mean(sigma, n_treatment, n_control, confidence=confidence, power=power) if sigma else None
    normal = None
    if sigma and n_treatment >= 1 and n_control >= 1:
        normal = ((z_quantile(0.5 + confidence / 2.0) + z_quantile(power)) * sigma
                  * math.sqrt(1.0 / n_treatment + 1.0 / n_control))
    return {
        "campaign_id": campaign_id, "outcome": outcome, "baseline": sigma,
        "baseline_source": "placebo_daily_load_shape", "n_treatment": int(n_treatment), "n_control": int(n_control),
        "alpha": 1.0 - confidence, "power": float(power), "mde": mde, "mde_method": MDE_WELCH, "mde_normal": normal,
        "target_effect": None, "holdout_share": float(holdout_share), "holdout_share_for_target": None,
        "feasible": None,
    }
