"""Feature-set distances on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from segbench.quality import compare, frechet_distance, kid, mmd2_unbiased, precision_recall


def test_frechet_1d_by_hand():
    # a: mean 1, var 2 (ddof 1); b: mean 6, var 8 → 25 + 2 + 8 - 2·√16 = 27
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[4.0], [8.0]])) == pytest.approx(27.0)
    # equal variances: only the means differ → (4 - 1)² = 9
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[3.0], [5.0]])) == pytest.approx(9.0)


def test_frechet_diagonal_by_hand():
    a = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])       # cov diag(2/3, 2/3), mean 0
    b = a * np.array([2.0, 3.0]) + 1.0                         # cov diag(8/3, 6), mean (1, 1)
    # |Δμ|² + Σ (σa - σb)² = 2 + 2/3·(1-2)² + 2/3·(1-3)² = 16/3
    assert frechet_distance(a, b) == pytest.approx(16 / 3)
    assert frechet_distance(b, a) == pytest.approx(16 / 3)


def test_distance_of_a_set_to_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    figures = compare(x, x)
    assert figures["fd"] == pytest.approx(0.0, abs=1e-8)
    # unbiased MMD² of a set with itself is -2·(mean k(x,x) - mean k(x,y≠x))/N: O(1/N), not exactly 0
    assert -0.1 < figures["kid"] < 0.0
    assert figures["precision"] == 1.0 and figures["recall"] == 1.0
    y = x + 3.0
    assert frechet_distance(x, y) == pytest.approx(9.0 * 8)   # shifted: |Δμ|² only


def test_kid_by_hand():
    # k(x, y) = (xy + 1)³ in 1-D: aa off-diagonal 1, bb off-diagonal 27, ab mean (1 + 1 + 8 + 27)/4
    a, b = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert mmd2_unbiased(a, b) == pytest.approx(1 + 27 - 2 * 37 / 4)
    mean, std = kid(a, b, subsets=3, subset_size=2)   # subsets = the whole sets: every draw is the same
    assert mean == pytest.approx(9.5) and std == pytest.approx(0.0)


def test_kid_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(1)
    same, _ = kid(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)), subsets=20, subset_size=200)
    shifted, _ = kid(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 < shifted


def test_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])     # k=1 radii 1, 1, 1, 8
    fake = np.array([[0.5], [5.0], [20.0]])            # 20 lies outside every real ball
    assert precision_recall(real, fake, k=1)[0] == pytest.approx(2 / 3)
    fake = np.array([[0.5], [1.5], [5.0]])             # fake radii 1, 1, 3.5: real 10 is outside them
    assert precision_recall(real, fake, k=1) == pytest.approx((1.0, 0.75))
    with pytest.raises(ValueError):
        precision_recall(real, fake, k=3)
