"""Generator/critic shapes for every preset × encoding × dataset kind, and the thesis tables' structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairgen.networks import build_critic, build_generator, pair_channels
from pairgen.presets import make_config

KINDS = {"scr-lung": ("background", "left lung"), "cityscapes": tuple(f"class{i}" for i in range(8))}
CHANNELS = {"scr-lung": 1, "cityscapes": 3}


def config_for(dataset: str, preset: str, encoding: str, **extra):
    return make_config(dataset, preset, class_names=KINDS[dataset], image_channels=CHANNELS[dataset],
                       mask_encoding=encoding, **extra)


@pytest.mark.parametrize("dataset", list(KINDS))
@pytest.mark.parametrize("encoding", ["scalar", "onehot"])
@pytest.mark.parametrize("preset", ["tiny", "small", "thesis"])
def test_output_shapes(dataset: str, encoding: str, preset: str) -> None:
    config = config_for(dataset, preset, encoding)
    channels = CHANNELS[dataset] + (1 if encoding == "scalar" else len(KINDS[dataset]))
    assert pair_channels(config) == channels
    # the thesis networks are large (≈70 M generator parameters): shapes on the meta device, no memory or compute
    device = torch.device("meta") if preset == "thesis" else torch.device("cpu")
    with device:
        generator, critic = build_generator(config), build_critic(config)
        pair = generator(torch.randn(2, config.z_dim))
    assert pair.shape == (2, channels, config.height, config.width)
    scores = critic(pair)
    assert scores.shape == (2, 1)
    if device.type == "cpu":
        assert pair.min() >= -1 and pair.max() <= 1 and torch.isfinite(scores).all()


@pytest.mark.parametrize("dataset", list(KINDS))
def test_thesis_forward_on_cpu(dataset: str) -> None:
    """One real forward of the thesis-size networks for each dataset kind (batch 1, eval-mode BN: ≈17 GMAC)."""
    config = config_for(dataset, "thesis", "scalar")
    torch.manual_seed(0)
    generator, critic = build_generator(config).eval(), build_critic(config).eval()
    with torch.no_grad():
        pair = generator(torch.randn(1, config.z_dim))
        scores = critic(pair)
    assert pair.shape == (1, CHANNELS[dataset] + 1, config.height, config.width)
    assert pair.abs().max() <= 1 and scores.shape == (1, 1) and torch.isfinite(scores).all()


def _layers(module: nn.Module, kind: type) -> list:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("dataset,g_channels,d_channels,start,out_channels", [
    # table 4.1: FC → 4×4×2048, stages 1024…64 → 2; critic 32…1024
    ("scr-lung", (2048, 1024, 512, 256, 128, 64), (32, 64, 128, 256, 512, 1024), (4, 4), 2),
    # table 4.3: FC → 4×8×1024 (rows × cols), stages 512…64 → 4; critic 32…512
    ("cityscapes", (1024, 512, 256, 128, 64), (32, 64, 128, 256, 512), (4, 8), 4),
])
def test_thesis_structure_matches_tables(dataset, g_channels, d_channels, start, out_channels) -> None:
    config = make_config(dataset, "thesis", class_names=("background", "fg"), image_channels=out_channels - 1)
    with torch.device("meta"):
        generator, critic = build_generator(config), build_critic(config)
    assert generator.project.in_features == 128
    assert generator.project.out_features == g_channels[0] * start[0] * start[1]
    assert generator.start == start
    deconvs = _layers(generator, nn.ConvTranspose2d)
    assert [(d.in_channels, d.out_channels) for d in deconvs] == list(zip(g_channels, g_channels[1:] + (out_channels,)))
    assert all(d.kernel_size == (5, 5) and d.stride == (2, 2) for d in deconvs)
    norms = _layers(generator, nn.BatchNorm2d)
    assert [n.num_features for n in norms] == list(g_channels)   # FC + every stage but the last
    assert isinstance(generator.stages[-1], nn.Tanh)
    convs = _layers(critic, nn.Conv2d)
    assert [c.out_channels for c in convs] == list(d_channels) and convs[0].in_channels == out_channels
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) and c.padding == (2, 2) for c in convs)
    # the critic ends at the generator's start resolution (as many halvings as doublings)
    assert critic.score.in_features == d_channels[-1] * start[0] * start[1] and critic.score.out_features == 1
    assert len(_layers(critic, nn.GroupNorm)) == len(d_channels)          # default: layer norm
    assert all(isinstance(a, nn.ReLU) for a in critic.features if isinstance(a, (nn.ReLU, nn.LeakyReLU)))


@pytest.mark.parametrize("norm,layer", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("none", None)])
def test_critic_norm_and_activation_options(norm: str, layer) -> None:
    config = make_config("scr-lung", "tiny", class_names=("bg", "fg"), critic_norm=norm, critic_activation="lrelu")
    critic = build_critic(config)
    if layer is None:
        assert not _layers(critic, nn.BatchNorm2d) and not _layers(critic, nn.GroupNorm)
        assert all(c.bias is not None for c in _layers(critic, nn.Conv2d))
    else:
        assert len(_layers(critic, layer)) == len(config.d_channels)
    assert len(_layers(critic, nn.LeakyReLU)) == len(config.d_channels)
    assert critic(torch.zeros(3, 2, 32, 32)).shape == (3, 1)


def test_layer_norm_critic_scores_samples_independently() -> None:
    """The reason for layer norm: a sample's score must not depend on the rest of the batch."""
    config = make_config("scr-lung", "tiny", class_names=("bg", "fg"))
    critic = build_critic(config)
    batch = torch.randn(4, 2, 32, 32)
    assert torch.allclose(critic(batch)[:1], critic(batch[:1]), atol=1e-5)


def test_he_initialisation() -> None:
    config = make_config("scr-lung", "small", class_names=("bg", "fg"))
    torch.manual_seed(0)
    critic = build_critic(config)
    conv = _layers(critic, nn.Conv2d)[2]
    fan_in = conv.in_channels * 25
    assert abs(conv.weight.std().item() - (2.0 / fan_in) ** 0.5) < 0.1 * (2.0 / fan_in) ** 0.5
