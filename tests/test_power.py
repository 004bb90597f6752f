"""transform/power.py: exact-power MDE against a Monte-Carlo simulation of the evaluate rule, the t quantile and
Welch's interval against textbook values, holdout sizing. Pure Python/numpy, no Spark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridpersona.transform import power as P
from gridpersona.transform.campaign_outcomes import newcombe_interval

# Arm sizes like the default lake's campaign cycle (control groups of 12-62, treatment a few hundred).
ARMS = ((300, 12), (450, 50), (600, 62))
BASELINES = (0.03, 0.08, 0.12)


def simulated_mde(p0: float, n_t: int, n_c: int, guess: float, *, trials: int = 20_000, power: float = 0.8,
                  seed: int = 7) -> float:
    """Monte-Carlo MDE: the simulated power of the evaluate stage's rule (the Newcombe interval of
    campaign_outcomes.newcombe_interval excludes 0) on a grid of delta around ``guess``, inverted to
    ``power`` by linear interpolation. The same seed at every grid point (common random numbers) keeps
    the simulated power curve monotone."""
    grid = guess * np.linspace(0.7, 1.3, 13)
    powers = []
    cache: dict[tuple[int, int], bool] = {}
    for delta in grid:
        rng = np.random.default_rng(seed)
        x_c = rng.binomial(n_c, p0, trials)
        x_t = rng.binomial(n_t, min(p0 + delta, 1.0), trials)
        hits = 0
        pairs, counts = np.unique(np.stack([x_t, x_c], axis=1), axis=0, return_counts=True)
        for (xt, xc), k in zip(pairs.tolist(), counts.tolist()):
            if (xt, xc) not in cache:
                low, high = newcombe_interval(xt, n_t, xc, n_c, 0.95)
                cache[(xt, xc)] = low > 0 or high < 0
            hits += k * cache[(xt, xc)]
        powers.append(hits / trials)
    powers = np.maximum.accumulate(np.array(powers))  # guard interpolation against a flat noisy step
    assert powers[0] < power < powers[-1], f"grid does not bracket power {power}: {powers}"
    return float(np.interp(power, powers, grid))


@pytest.mark.parametrize("n_t,n_c", ARMS)
def test_exact_mde_agrees_with_simulation_within_10_percent(n_t, n_c):
    for p0 in BASELINES:
        mde = P.mde_proportion_exact(p0, n_t, n_c, confidence=0.95, power=0.8)
        sim = simulated_mde(p0, n_t, n_c, mde)
        assert abs(mde / sim - 1) <= 0.10, (p0, n_t, n_c, mde, sim)
        # The exact figure is exact: the simulation (SE of power ~0.003) lands much closer than the bar.
        assert abs(mde / sim - 1) <= 0.03, (p0, n_t, n_c, mde, sim)


def test_exact_power_is_the_power_at_the_mde():
    mde = P.mde_proportion_exact(0.05, 450, 50)
    assert P.exact_power(0.05, mde, 450, 50) == pytest.approx(0.8, abs=1e-4)
    assert P.exact_power(0.05, 0.0, 450, 50) < 0.05  # the rule keeps its level at no effect


def test_rejection_region_is_the_evaluate_rule():
    region = P.newcombe_rejection_region(40, 12, 0.95)
    for x_c in range(13):
        for x_t in range(41):
            low, high = newcombe_interval(x_t, 40, x_c, 12, 0.95)
            assert region[x_c, x_t] == (low > 0 or high < 0)


def test_mde_none_when_undetectable_or_empty():
    assert P.mde_proportion_exact(0.05, 300, 0) is None
    # One control unit: no outcome of the treatment arm makes the interval exclude 0 often enough.
    assert P.mde_proportion_exact(0.5, 5, 1) is None


def test_binom_pmf_sums_to_one_and_matches_closed_form():
    pmf = P.binom_pmf(10, 0.3)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert pmf[3] == pytest.approx(math.comb(10, 3) * 0.3 ** 3 * 0.7 ** 7, rel=1e-12)
    assert P.binom_pmf(4, 0.0).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("p,df,table", [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 10, 2.2281), (0.975, 30, 2.0423), (0.95, 5, 2.0150),
    (0.8, 10, 0.8791), (0.995, 20, 2.8453), (0.025, 10, -2.2281),
])
def test_t_quantile_matches_tables(p, df, table):
    assert P.t_quantile(p, df) == pytest.approx(table, abs=1e-4)


def test_t_quantile_tends_to_normal():
    assert P.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_welch_textbook_example():
    # Welch's t-test, Wikipedia "Welch's t-test", example 1: t = -2.46, nu = 24.99, p = 0.021.
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    w = P.welch_interval(float(np.mean(a1)), float(np.var(a1, ddof=1)), 15, float(np.mean(a2)),
                         float(np.var(a2, ddof=1)), 15, 0.95)
    assert w.effect / w.se == pytest.approx(-2.46, abs=0.005)
    assert w.df == pytest.approx(24.99, abs=0.01)
    assert 2 * P.t_cdf(w.effect / w.se, w.df) == pytest.approx(0.021, abs=0.0005)
    # Interval by hand: t_{0.975, 24.99} ~ t_{0.975, 25} = 2.0595 (table).
    assert w.low == pytest.approx(w.effect - 2.0595 * w.se, abs=2e-3)
    assert w.high == pytest.approx(w.effect + 2.0595 * w.se, abs=2e-3)
    assert w.significant


def test_welch_from_sums_equals_from_moments():
    rng = np.random.default_rng(1)
    t, c = rng.normal(1.0, 2.0, 40), rng.normal(0.2, 1.0, 9)
    a = P.welch_from_sums(t.sum(), (t * t).sum(), 40, c.sum(), (c * c).sum(), 9)
    b = P.welch_interval(t.mean(), t.var(ddof=1), 40, c.mean(), c.var(ddof=1), 9)
    assert (a.low, a.high, a.df) == pytest.approx((b.low, b.high, b.df), rel=1e-9)
    assert P.welch_from_sums(1.0, 1.0, 1, 2.0, 4.0, 5) is None


def test_mean_mde_agrees_with_simulation():
    """Normal outcomes, sigma 0.2, arms 450/50: the Welch rule fires ~80 % of the time at the MDE."""
    n_t, n_c, sigma = 450, 50, 0.2
    mde = P.mde_mean(sigma, n_t, n_c)
    rng = np.random.default_rng(3)
    trials = 4000
    t = rng.normal(mde, sigma, (trials, n_t))
    c = rng.normal(0.0, sigma, (trials, n_c))
    vt, vc = t.var(axis=1, ddof=1) / n_t, c.var(axis=1, ddof=1) / n_c
    df = (vt + vc) ** 2 / (vt ** 2 / (n_t - 1) + vc ** 2 / (n_c - 1))
    grid = np.linspace(df.min(), df.max(), 40)
    q = np.interp(df, grid, [P.t_quantile(0.975, g) for g in grid])
    hit = np.abs(t.mean(axis=1) - c.mean(axis=1)) > q * np.sqrt(vt + vc)
    assert hit.mean() == pytest.approx(0.8, abs=0.025)


def test_holdout_share_for_target_reaches_the_target():
    n, d, p0 = 10_000, 0.03, 0.05
    sigma = P.proportion_sigma(p0, d)
    size = P.holdout_share_for_target(n, d, sigma, max_share=0.5)
    assert size.feasible and 0 < size.share < 0.5
    zz = P.z_quantile(0.975) + P.z_quantile(0.8)
    # At that share the normal-approximation MDE equals the target.
    assert zz * sigma / math.sqrt(n * size.share * (1 - size.share)) == pytest.approx(d, rel=1e-9)
    # A larger target needs a smaller holdout.
    assert P.holdout_share_for_target(n, 2 * d, sigma).share < size.share


def test_holdout_share_infeasible():
    sigma = P.proportion_sigma(0.05, 0.01)
    small = P.holdout_share_for_target(300, 0.01, sigma)
    assert small.k < 4 and not small.feasible and small.share is None
    # Feasible at some split, but not within the cap.
    capped = P.holdout_share_for_target(10_000, 0.03, P.proportion_sigma(0.05, 0.03), max_share=0.05)
    assert capped.k >= 4 and not capped.feasible


def test_decrease_mde_none_when_the_rate_leaves_no_room():
    # A 1 % closure rate cannot fall by the ~6 points 28 controls need: undetectable, not 0.
    assert P.mde_proportion_exact(0.01, 157, 28, decrease=True) is None
    assert P.mde_proportion_normal(0.01, 157, 28, decrease=True) is None
    # With room to fall, a decrease is detectable, at exactly the configured power.
    down = P.mde_proportion_exact(0.2, 1400, 320, decrease=True)
    assert down is not None and P.exact_power(0.2, -down, 1400, 320) == pytest.approx(0.8, abs=1e-4)
