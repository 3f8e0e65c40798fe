"""Pair-consistent DiffAugment (the mask stays on its image) and the generator weight average's update rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairgen.core.errors import UserError
from pairgen.diffaug import augment_pairs, cutout, draw, parse_policy, translation
from pairgen.ema import EMA, beta_from_half_life
from pairgen.presets import make_config


def square_pairs(n: int = 16, size: int = 16, image_channels: int = 3) -> torch.Tensor:
    """Pairs whose image is -1 with a +1 square exactly where the (scalar) mask is +1."""
    pair = torch.full((n, image_channels + 1, size, size), -1.0)
    for b in range(n):
        y, x = 3 + b % 7, 2 + (3 * b) % 9
        pair[b, :, y:y + 4, x:x + 5] = 1.0
    return pair


def uniforms(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.rand(n, k, generator=torch.Generator().manual_seed(seed))


def test_uniforms_map_to_every_integer_offset() -> None:
    """u in [0, 1) covers each shift in [-1, 1] of an 8-px side (ratio 1/8) in equal thirds, never beyond."""
    pair = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).expand(3, 1, 8, 8)
    u = torch.tensor([[0.0, 0.5], [0.34, 0.5], [0.9999, 0.5]])   # dy = -1, 0, +1; dx = 0
    out = translation(pair, u)
    assert torch.equal(out[0, 0, :7], pair[0, 0, 1:]) and torch.equal(out[1], pair[1])
    assert torch.equal(out[2, 0, 1:], pair[2, 0, :7]) and (out[2, 0, 0] == 0).all()


def test_translation_moves_mask_with_image() -> None:
    pair = square_pairs()
    out = translation(pair, uniforms(len(pair), 2, 0))
    image, mask = out[:, :3], out[:, 3:]
    assert not torch.equal(out, pair)                                # something moved
    assert torch.equal(image[:, :1], mask) and torch.equal(image[:, 1:2], mask)
    # each sample is a pure integer shift: the square keeps its 4×5 size where it stays inside
    assert ((mask == 1).sum(dim=(1, 2, 3)) <= 20).all() and ((mask == 1).sum(dim=(1, 2, 3)) > 0).any()


def test_translation_is_an_exact_shift() -> None:
    pair = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).reshape(2, 2, 8, 8)
    out = translation(pair, uniforms(2, 2, 3))
    for b in range(2):
        found = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                 if torch.equal(out[b, :, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)],
                                pair[b, :, max(-dy, 0):8 - max(dy, 0), max(-dx, 0):8 - max(dx, 0)])]
        assert len(found) == 1        # ratio 1/8 of 8 px: one shift in {-1, 0, 1}² explains the sample


def test_full_policy_keeps_every_mask_on_its_image() -> None:
    pair = square_pairs()
    out = augment_pairs(pair, 3, "color,translation,cutout", draw(len(pair), ("color", "translation", "cutout"), torch.Generator().manual_seed(1)))
    image, mask = out[:, 0], out[:, 3]
    assert set(mask.unique().tolist()) <= {-1.0, 0.0, 1.0}          # colour never touches the mask
    for b in range(len(out)):
        # colour maps the image's two levels to two other levels per sample; the geometry is the mask's exactly
        square, rest, holes = image[b][mask[b] == 1], image[b][mask[b] == -1], image[b][mask[b] == 0]
        assert square.unique().numel() <= 1 and rest.unique().numel() == 1
        assert (holes == 0).all() and not torch.isin(rest, square).any()
    assert (mask == 0).any() and (mask == 1).any()


def test_color_changes_image_channels_only_and_is_differentiable() -> None:
    pair = square_pairs(4).requires_grad_(True)
    out = augment_pairs(pair, 3, "color", draw(4, ("color",), torch.Generator().manual_seed(2)))
    assert torch.equal(out[:, 3:], pair[:, 3:]) and not torch.equal(out[:, :3], pair[:, :3])
    out.sum().backward()
    assert pair.grad is not None and pair.grad[:, :3].abs().sum() > 0


def test_cutout_zeroes_one_square_in_every_channel() -> None:
    pair = torch.ones(8, 4, 16, 16)
    out = cutout(pair, uniforms(8, 2, 0))
    zeros = out == 0
    assert torch.equal(zeros[:, :1].expand_as(zeros), zeros)
    assert (zeros[:, 0].sum(dim=(1, 2)) <= 64).all() and zeros.any()


def test_probability_gates_each_operation_per_sample() -> None:
    """p < 1: one gate column after each operation's own; a sample gets an operation only where its gate < p."""
    pair = torch.ones(3, 2, 8, 8)
    params = torch.tensor([0.0, 0.0])                      # cutout's centre (0, 0): rows/cols 0..1 zeroed
    u = torch.stack([torch.cat([params, torch.tensor([g])]) for g in (0.1, 0.5, 0.9)])   # gates 0.1, 0.5, 0.9
    out = augment_pairs(pair, 1, "cutout", u, p=0.5)
    assert draw(3, ("cutout",), gated=True).shape == (3, 3) and draw(3, ("cutout",)).shape == (3, 2)
    assert torch.equal(out[0], cutout(pair, u[:, :2])[0]) and (out[0] == 0).sum() == 2 * 4
    assert torch.equal(out[1], pair[1]) and torch.equal(out[2], pair[2])        # gate >= p: untouched
    # two operations: translation's gate is column 2, cutout's is column 5
    u2 = torch.tensor([[0.0, 0.5, 0.9, 0.0, 0.0, 0.1]])
    both = augment_pairs(pair[:1], 1, "translation,cutout", u2, p=0.5)
    assert torch.equal(both, cutout(pair[:1], u2[:, 3:5]))                     # no shift, but the cutout


def test_policy_parsing_and_config_validation() -> None:
    assert parse_policy("") == () and parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError):
        parse_policy("translation,zoom")
    config = make_config("shapes", "tiny", diffaug="color,translation", ema_kimg=0.5)
    assert config.diffaug == "color,translation" and config.ema_kimg == 0.5
    assert make_config("shapes", "tiny").diffaug == "" and make_config("shapes", "tiny").ema_kimg == 0.0
    with pytest.raises(UserError, match="diffaug"):
        make_config("shapes", "tiny", diffaug="rotate")
    with pytest.raises(UserError, match="ema"):
        make_config("shapes", "tiny", ema_kimg=-1.0)
    assert make_config("shapes", "tiny", diffaug_p=0.3).diffaug_p == 0.3
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match="diffaug-p"):
            make_config("shapes", "tiny", diffaug_p=bad)


def test_ema_update_by_hand() -> None:
    live = nn.BatchNorm1d(2)
    with torch.no_grad():
        live.weight.copy_(torch.tensor([1.0, 2.0]))
    ema = EMA(live, beta=0.9)
    with torch.no_grad():
        live.weight.copy_(torch.tensor([3.0, 0.0]))
        live.running_mean.copy_(torch.tensor([5.0, 6.0]))
    ema.update(live)
    # 0.9·[1, 2] + 0.1·[3, 0] = [1.2, 1.8]; buffers copied as they are
    assert torch.allclose(ema.module.weight, torch.tensor([1.2, 1.8]))
    assert torch.equal(ema.module.running_mean, torch.tensor([5.0, 6.0]))
    assert not ema.module.weight.requires_grad
    other = EMA(nn.BatchNorm1d(2), beta=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.beta == 0.9 and torch.allclose(other.module.weight, torch.tensor([1.2, 1.8]))


def test_beta_from_half_life() -> None:
    beta = beta_from_half_life(batch_size=10, half_life_kimg=0.01)   # 10 images per step, half-life 10 images
    assert beta == pytest.approx(0.5)
    assert beta_from_half_life(16, 10.0) ** (10_000 / 16) == pytest.approx(0.5)
