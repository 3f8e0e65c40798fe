"""Statistics over per-image scores: bootstrap confidence intervals and paired tests between two runs.

All functions take 1-D arrays of per-image scores (float; NaN = undefined metric for that image). NaNs are
dropped (pairs with a NaN on either side, for the paired functions) and the number dropped is reported, never
silently averaged.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

_CHUNK_ELEMENTS = 4_000_000   # bootstrap resamples are drawn in chunks to bound memory (~32 MB of indices)


class ConfidenceInterval(tuple):
    """(low, high): unpacks like a plain pair; also carries `n` (values used) and `n_dropped` (NaNs removed)."""

    def __new__(cls, low: float, high: float, n: int, n_dropped: int) -> "ConfidenceInterval":
        interval = super().__new__(cls, (float(low), float(high)))
        interval.n, interval.n_dropped = int(n), int(n_dropped)
        return interval

    @property
    def low(self) -> float:
        return self[0]

    @property
    def high(self) -> float:
        return self[1]


def _finite(values: np.ndarray) -> tuple[np.ndarray, int]:
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(values)
    return values[keep], int(values.size - keep.sum())


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement, same size) of 1-D `values`; float64 (n_boot,)."""
    rng = np.random.default_rng(seed)
    n = values.size
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def bootstrap_ci(values: np.ndarray, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap (1 - alpha) confidence interval of the mean of 1-D `values`.

    NaN/±inf are dropped (count in `.n_dropped`). No values left → (NaN, NaN); one value → (v, v).
    Deterministic for a given seed.
    """
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    kept, dropped = _finite(values)
    if kept.size == 0:
        return ConfidenceInterval(np.nan, np.nan, 0, dropped)
    means = _bootstrap_means(kept, n_boot, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(low, high, kept.size, dropped)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep], int(a.size - keep.sum())


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of per-image paired scores a[i] vs b[i] (same images, same order).

    Returns {statistic, p_value, n, n_dropped, median_diff, mean_diff} with differences a - b; `n` counts the
    pairs used (pairs with a NaN dropped, counted in n_dropped). scipy's defaults: zero differences discarded
    ('wilcox'), exact p for small samples without ties, normal approximation otherwise. All differences zero →
    statistic 0.0 and p_value 1.0 (no evidence of a difference); no pairs → NaN.
    """
    a, b, dropped = _paired(a, b)
    diff = a - b
    result = {"n": int(diff.size), "n_dropped": dropped,
              "median_diff": float(np.median(diff)) if diff.size else float("nan"),
              "mean_diff": float(diff.mean()) if diff.size else float("nan")}
    if diff.size == 0:
        return {"statistic": float("nan"), "p_value": float("nan"), **result}
    if not np.any(diff != 0):
        return {"statistic": 0.0, "p_value": 1.0, **result}   # scipy would raise/warn here
    test = scipy_stats.wilcoxon(a, b, alternative="two-sided")
    return {"statistic": float(test.statistic), "p_value": float(test.pvalue), **result}


def paired_bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 10000, alpha: float = 0.05,
                             seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of mean(a - b) resampling images (pairs kept together); NaN pairs dropped."""
    a, b, dropped = _paired(a, b)
    interval = bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)
    return ConfidenceInterval(interval.low, interval.high, interval.n, dropped)
