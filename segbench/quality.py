"""Distances between two sets of feature vectors (fidelity and diversity of generated samples). numpy only.

Every function takes float arrays N×D (one row per sample) and returns plain floats.

* `frechet_distance` — FID's formula (Heusel et al. 2017) on any features: ‖μ₁-μ₂‖² + Tr(Σ₁ + Σ₂ - 2(Σ₁Σ₂)^½).
  0 for identical Gaussians; in squared feature units, so only comparable within one feature extractor.
* `kid` — Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of MMD² with the cubic
  polynomial kernel k(x, y) = (x·y/D + 1)³, averaged over random subsets. Unbiased: about 0 (and may be slightly
  negative) for two samples of one distribution.
* `precision_recall` — improved precision and recall (Kynkäänniemi et al. 2019): a set's manifold is the union of
  balls around its points with radius = distance to the point's k-th nearest neighbour in the set. Precision =
  share of generated points inside the real manifold (fidelity); recall = share of real points inside the
  generated manifold (diversity). Both in [0, 1].
"""

from __future__ import annotations

import numpy as np


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: need an N×D array with N >= 2, got shape {x.shape}")
    return x


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N×D) and b (M×D); >= 0, 0 when equal.

    Tr((Σa Σb)^½) is computed as Tr((Σa^½ Σb Σa^½)^½): the same eigenvalues, but of a symmetric PSD matrix, so no
    complex parts or singular-matrix offsets are needed (unlike scipy.linalg.sqrtm on the non-symmetric product).
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return max(0.0, mean_term + float(np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of a (n×D) and b (m×D) under k(x, y) = (x·y/D + 1)³ (diagonal terms left out)."""
    n, m, dim = len(a), len(b), a.shape[1]
    k_aa = (a @ a.T / dim + 1.0) ** 3
    k_bb = (b @ b.T / dim + 1.0) ** 3
    k_ab = (a @ b.T / dim + 1.0) ** 3
    return float((k_aa.sum() - np.trace(k_aa)) / (n * (n - 1)) + (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
                 - 2.0 * k_ab.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of `mmd2_unbiased` over `subsets` random subsets of min(subset_size, N, M) rows of each set
    (Bińkowski et al.'s estimator; subsets drawn without replacement from numpy's default_rng(seed))."""
    a, b = _as_features(a, "a"), _as_features(b, "b")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, len(a)×len(b)."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(squared, 0.0, None))


def _inside(manifold: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """bool per query: within the k-NN radius of some point of `manifold` (the point itself not counted)."""
    radii = np.sort(_pairwise(manifold, manifold), axis=1)[:, k]   # column 0 is the point itself
    return (_pairwise(queries, manifold) <= radii[None, :]).any(axis=1)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated features `fake` against `real` with k-NN manifolds (k < both sizes)."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k={k} needs 1 <= k < the size of both sets ({len(real)}, {len(fake)})")
    return float(_inside(real, fake, k).mean()), float(_inside(fake, real, k).mean())


def compare(reference: np.ndarray, other: np.ndarray, k: int = 3, seed: int = 0) -> dict[str, float]:
    """All figures of `other` against `reference` features: fd, kid, kid_std, precision, recall."""
    kid_mean, kid_std = kid(reference, other, seed=seed)
    precision, recall = precision_recall(reference, other, min(k, len(reference) - 1, len(other) - 1))
    return {"fd": frechet_distance(reference, other), "kid": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall}
