"""Statistics: bootstrap intervals and paired Wilcoxon tests on hand cases and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from segbench.stats import bootstrap_ci, paired_bootstrap_diff_ci, paired_wilcoxon


def test_bootstrap_two_values_hand_case():
    # resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 → 95% interval (0, 1)
    low, high = bootstrap_ci(np.array([0.0, 1.0]), n_boot=4000, seed=3)
    assert (low, high) == (0.0, 1.0)
    narrow = bootstrap_ci(np.array([0.0, 1.0]), n_boot=4000, alpha=0.6, seed=3)
    assert tuple(narrow) == (0.5, 0.5)                       # 30th..70th percentile of the means


def test_bootstrap_constant_nan_and_empty():
    interval = bootstrap_ci(np.array([0.8, np.nan, 0.8, 0.8]))
    assert tuple(interval) == pytest.approx((0.8, 0.8)) and interval.n == 3 and interval.n_dropped == 1
    empty = bootstrap_ci(np.array([np.nan]))
    assert math.isnan(empty.low) and math.isnan(empty.high) and empty.n == 0 and empty.n_dropped == 1
    assert tuple(bootstrap_ci(np.array([0.3]))) == (0.3, 0.3)


def test_bootstrap_is_deterministic_and_close_to_normal_theory():
    values = np.random.default_rng(0).normal(0.85, 0.05, size=400)
    first, second = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert tuple(first) == tuple(second)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert first.low == pytest.approx(values.mean() - half_width, abs=1.5e-3)
    assert first.high == pytest.approx(values.mean() + half_width, abs=1.5e-3)
    assert first.low < values.mean() < first.high


def test_bootstrap_chunking_does_not_change_results(monkeypatch):
    import segbench.stats as stats_module

    values = np.random.default_rng(1).random(50)
    whole = bootstrap_ci(values, n_boot=1000)
    monkeypatch.setattr(stats_module, "_CHUNK_ELEMENTS", 123)
    assert tuple(bootstrap_ci(values, n_boot=1000)) == tuple(whole)


def test_bootstrap_rejects_bad_alpha():
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones(3), alpha=1.5)


def test_wilcoxon_hand_case_all_positive():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0]) + 10
    b = np.full(5, 10.0)
    result = paired_wilcoxon(a, b)
    # exact null: each of 2^5 sign patterns equally likely; W- = 0 only for all-positive → two-sided p = 2/32
    assert result["statistic"] == 0.0 and result["p_value"] == pytest.approx(2 / 32)
    assert result["n"] == 5 and result["median_diff"] == 3.0 and result["mean_diff"] == 3.0


def test_wilcoxon_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    reference = scipy_stats.wilcoxon(a, b)
    a_nan, b_nan = np.r_[a, np.nan, 0.1], np.r_[b, 0.2, np.nan]
    result = paired_wilcoxon(a_nan, b_nan)
    assert result["statistic"] == pytest.approx(reference.statistic)
    assert result["p_value"] == pytest.approx(reference.pvalue)
    assert result["n"] == 30 and result["n_dropped"] == 2
    assert result["mean_diff"] == pytest.approx(np.mean(a - b))


def test_wilcoxon_degenerate_cases():
    same = paired_wilcoxon(np.array([0.5, 0.7, 0.9]), np.array([0.5, 0.7, 0.9]))
    assert same["p_value"] == 1.0 and same["statistic"] == 0.0 and same["n"] == 3
    none = paired_wilcoxon(np.array([np.nan]), np.array([1.0]))
    assert none["n"] == 0 and math.isnan(none["p_value"])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_wilcoxon(np.ones(3), np.ones(4))


def test_paired_bootstrap_difference():
    b = np.random.default_rng(3).random(20)
    interval = paired_bootstrap_diff_ci(b + 0.25, b)
    assert tuple(interval) == pytest.approx((0.25, 0.25))
    with_nan = paired_bootstrap_diff_ci(np.r_[b + 0.25, np.nan], np.r_[b, 0.0])
    assert with_nan.n == 20 and with_nan.n_dropped == 1
