"""Post-processing: bicubic upsampling of logits, label decisions, largest connected component."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segbench.postprocess import largest_component, predict_full, to_labels, upsample_logits


def test_largest_component_keeps_the_bigger_blob():
    mask = np.zeros((6, 8), bool)
    mask[0:2, 0:2] = True            # 4 px
    mask[3:6, 4:7] = True            # 9 px
    kept = largest_component(mask)
    assert kept.sum() == 9 and kept[4, 5] and not kept[0, 0]


def test_largest_component_is_8_connected_deterministic_and_keeps_empty():
    diagonal = np.eye(4, dtype=bool)
    diagonal[0, 3] = True            # isolated single pixel
    assert largest_component(diagonal).sum() == 4                # the diagonal is one component
    tie = np.zeros((3, 5), bool)
    tie[0, 0] = tie[2, 4] = True
    np.testing.assert_array_equal(np.argwhere(largest_component(tie)), [[0, 0]])   # first in raster order
    assert not largest_component(np.zeros((3, 3), bool)).any()


def keys_cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel, the one torch's bicubic mode uses (a = -0.75)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0


def test_upsample_4x_known_logit_map():
    logits = torch.tensor([[[[2.0, -1.0], [2.0, -1.0]]]])        # 1×1×2×2: left column positive
    up = upsample_logits(logits, (8, 8))
    assert up.shape == (1, 1, 8, 8) and up.dtype == torch.float32
    # align_corners=False: output column x samples input coordinate (x + 0.5) / 4 - 0.5; neighbours beyond the
    # edge repeat the edge pixel, so the 4 taps at offsets -1, 0, 1, 2 read 2, 2, -1, -1
    for x in range(8):
        u = (x + 0.5) / 4 - 0.5
        base = int(np.floor(u))
        taps = [(2.0 if base + k <= 0 else -1.0) for k in (-1, 0, 1, 2)]
        expected = sum(v * keys_cubic(u - (base + k)) for v, k in zip(taps, (-1, 0, 1, 2)))
        assert up[0, 0, 0, x].item() == pytest.approx(expected, abs=1e-5)
    # the zero crossing lies 2/3 of the way from the +2 centre (x = 1.5) to the -1 centre (x = 5.5): x ≈ 4.2
    expected_labels = np.zeros((8, 8), np.uint8)
    expected_labels[:, :5] = 1
    np.testing.assert_array_equal(to_labels(up)[0], expected_labels)
    assert torch.allclose(upsample_logits(torch.full((1, 3, 2, 3), 0.7), (8, 12)), torch.tensor(0.7))


def test_upsample_antisymmetric_map_splits_in_half_and_argmax():
    score = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    two_channel = torch.stack([-score, score])[None]                  # class 1 wins on the left
    labels = to_labels(upsample_logits(two_channel, (8, 8)))
    expected = np.zeros((1, 8, 8), np.uint8)
    expected[:, :, :4] = 1
    np.testing.assert_array_equal(labels, expected)


def test_to_labels_rules():
    single = torch.tensor([[[[0.0, 1e-3], [-2.0, 5.0]]]])
    np.testing.assert_array_equal(to_labels(single), [[[0, 1], [0, 1]]])   # logit > 0 ⇔ sigmoid > 0.5
    tie = torch.zeros((1, 3, 1, 1))
    assert to_labels(tie).dtype == np.uint8 and to_labels(tie)[0, 0, 0] == 0
    with pytest.raises(ValueError):
        to_labels(torch.zeros((3, 4, 4)))


def test_predict_full_removes_spurious_blob_at_non_integer_scale():
    low = torch.full((1, 1, 8, 10), -4.0)
    low[0, 0, 2:6, 2:6] = 4.0          # the object
    low[0, 0, 7, 9] = 4.0              # one spurious pixel in the corner
    without = predict_full(low, (19, 23), single_object=False)
    with_lcc = predict_full(low, (19, 23), single_object=True)
    assert without.shape == with_lcc.shape == (19, 23) and with_lcc.dtype == np.uint8
    assert without[-1, -1] == 1 and with_lcc[-1, -1] == 0
    assert set(np.unique(with_lcc)) == {0, 1} and with_lcc[9, 11] == 1


def test_predict_full_multichannel_single_object_and_bf16():
    low = torch.zeros((1, 2, 6, 6))
    low[0, 0] = 1.0                    # background wins clearly away from the object (no argmax ties)
    low[0, 1, 1:4, 1:4] = 3.0
    low[0, 1, 5, 5] = 3.0
    out = predict_full(low.to(torch.bfloat16), (12, 12), single_object=True)
    assert out.sum() > 0 and out[-1, -1] == 0 and out.max() == 1
    with pytest.raises(ValueError):
        predict_full(torch.zeros((2, 1, 4, 4)), (8, 8), single_object=True)
