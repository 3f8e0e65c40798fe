"""Mask encodings: levels, round trips, decoding of raw (noisy) generator output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairgen.encoding import decode_mask, encode_mask, mask_channels, pair_to_arrays


@pytest.mark.parametrize("encoding", ["scalar", "onehot"])
@pytest.mark.parametrize("n_classes", [2, 3, 8])
def test_round_trip(encoding: str, n_classes: int) -> None:
    mask = torch.randint(0, n_classes, (3, 5, 7), generator=torch.Generator().manual_seed(n_classes))
    encoded = encode_mask(mask, n_classes, encoding)
    assert encoded.shape == (3, mask_channels(n_classes, encoding), 5, 7)
    assert encoded.dtype == torch.float32
    assert encoded.min() >= -1 and encoded.max() <= 1
    assert torch.equal(decode_mask(encoded, n_classes, encoding), mask)


def test_scalar_levels_and_binary_threshold_at_zero() -> None:
    mask = torch.tensor([[[0, 1, 2]]])
    assert encode_mask(mask, 3, "scalar").flatten().tolist() == [-1.0, 0.0, 1.0]
    assert encode_mask(torch.tensor([[[0, 1]]]), 2, "scalar").flatten().tolist() == [-1.0, 1.0]
    raw = torch.tensor([-0.9, -0.01, 0.0, 0.01, 0.7]).view(1, 1, 1, 5)
    assert decode_mask(raw, 2, "scalar").flatten().tolist() == [0, 0, 0, 1, 1]


def test_onehot_values_and_argmax() -> None:
    encoded = encode_mask(torch.tensor([[[2]]]), 4, "onehot")
    assert encoded.flatten().tolist() == [-1.0, -1.0, 1.0, -1.0]
    raw = torch.tensor([-0.2, 0.3, 0.1]).view(1, 3, 1, 1)
    assert decode_mask(raw, 3, "onehot").item() == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        mask_channels(2, "rgb")
    with pytest.raises(ValueError):
        decode_mask(torch.zeros(1, 2, 4, 4), 3, "onehot")


def test_pair_to_arrays_layout() -> None:
    pair = torch.cat([torch.full((2, 3, 4, 5), -1.0), torch.full((2, 1, 4, 5), 0.5)], dim=1)
    pair[:, 0] = 1.0
    images, raw, masks = pair_to_arrays(pair, 3, 2, "scalar")
    assert images.shape == (2, 4, 5, 3) and images.dtype == np.uint8
    assert images[..., 0].min() == 255 and images[..., 1].max() == 0
    assert raw.shape == (2, 4, 5, 1) and raw.dtype == np.float32
    assert masks.shape == (2, 4, 5) and masks.dtype == np.uint8 and masks.min() == 1


def test_raw_masks_cast_on_the_device_match_numpys_float16_bits() -> None:
    # export casts masks_raw to float16 before copying it back; shards must hold exactly numpy's rounding
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(-1, 1, 4000), np.tanh(rng.normal(0, 4, 4000)),
                             [-1.0, 1.0, 0.0, 1 - 2 ** -12, 2 ** -25, -(2 ** -14) * 1.5, 0.999755859375]])
    pair = torch.from_numpy(np.resize(values, 2 * 2 * 64 * 64).astype(np.float32)).reshape(2, 2, 64, 64)
    _, raw16, masks16 = pair_to_arrays(pair, 1, 2, "scalar", raw_dtype=torch.float16)
    _, raw32, masks32 = pair_to_arrays(pair, 1, 2, "scalar")
    assert raw16.dtype == np.float16 and raw32.dtype == np.float32
    np.testing.assert_array_equal(raw16.view(np.uint16), raw32.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(masks16, masks32)
