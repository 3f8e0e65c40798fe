"""U-Net shapes per preset, the parameter structure of tables 4.2 / 4.4, logits without ReLU, He init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segbench.presets import make_config
from segbench.unet import UNet, build_unet, n_outputs_for


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def expected_parameters(in_channels: int, n_outputs: int, depth: int, filters: int) -> int:
    """Tables 4.2 / 4.4 counted by hand: 3×3 kernels with bias, constant filter count, concat doubles the input."""
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    encoder = conv(in_channels, filters) + conv(filters, filters) + (depth - 1) * 2 * conv(filters, filters)
    bottleneck = 2 * conv(filters, filters)
    decoder = depth * (conv(2 * filters, filters) + conv(filters, filters))
    return encoder + bottleneck + decoder + conv(filters, n_outputs)


def test_n_outputs_sigmoid_for_one_foreground_class() -> None:
    assert n_outputs_for(2) == 1
    assert n_outputs_for(8) == 8
    with pytest.raises(ValueError):
        n_outputs_for(1)


@pytest.mark.parametrize("preset, shape", [("tiny", (32, 32)), ("small", (64, 64))])
def test_cpu_presets_forward_shapes(preset: str, shape: tuple[int, int]) -> None:
    config = make_config("scr-lung", preset)
    model = build_unet(config, in_channels=1, n_classes=2)
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, *shape) and out.dtype == torch.float32


def test_thesis_lung_matches_table_4_2() -> None:
    config = make_config("scr-lung", "thesis")
    assert (config.depth, config.filters, config.pooling) == (3, 64, "avg")
    with torch.device("meta"):   # shape check without allocating or computing 256×256×64 activations
        model = build_unet(config, in_channels=1, n_classes=2)
        out = model(torch.empty(1, 1, 256, 256))
    assert out.shape == (1, 1, 256, 256)
    convs = conv_layers(model)
    # 3 encoder stages × 2 + encoded features 2 + 3 decoder stages × 2 + output 1
    assert len(convs) == 15
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    assert all(c.out_channels == 64 for c in convs[:-1]) and convs[-1].out_channels == 1
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(1, 1, 3, 64)
    pools = [m for m in model.modules() if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
    assert pools and all(isinstance(p, nn.AvgPool2d) and p.kernel_size == 2 for p in pools)


def test_thesis_cityscapes_matches_table_4_4() -> None:
    config = make_config("cityscapes", "thesis")
    assert (config.depth, config.filters, config.pooling) == (4, 256, "avg")
    with torch.device("meta"):
        model = build_unet(config, in_channels=3, n_classes=8)
        out = model(torch.empty(1, 3, 128, 256))
    assert out.shape == (1, 8, 128, 256)
    convs = conv_layers(model)
    assert len(convs) == 4 * 2 + 2 + 4 * 2 + 1
    assert convs[-1].out_channels == 8 and all(c.out_channels == 256 for c in convs[:-1])
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(3, 8, 4, 256)


def test_thesis_lung_structure_computes_on_small_input() -> None:
    # the real kernels of the thesis network (not meta), on a small image to keep the test fast
    torch.manual_seed(0)
    model = UNet(1, 1, depth=3, filters=64)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_logits_are_not_relud() -> None:
    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, filters=8)
    assert isinstance(list(model.children())[-1], nn.Conv2d)   # the head is the last layer, no activation after
    with torch.no_grad():
        model.head.bias.fill_(-5.0)
        model.head.weight.zero_()
        out = model(torch.randn(2, 1, 16, 16))
    assert torch.all(out == -5.0)   # a ReLU on the output would clamp these to 0
    with torch.no_grad():
        model.head.weight.normal_()
        model.head.bias.zero_()
        out = model(torch.randn(2, 1, 16, 16))
    assert (out < 0).any() and (out > 0).any()


def test_he_initialisation() -> None:
    torch.manual_seed(0)
    model = UNet(1, 1, depth=3, filters=64)
    conv = model.bottleneck[0]
    expected = math.sqrt(2.0 / (64 * 9))
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    assert torch.all(conv.bias == 0)


def test_max_pooling_option_and_bad_arguments() -> None:
    model = UNet(3, 4, depth=2, filters=4, pooling="max")
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    with pytest.raises(ValueError, match="pooling"):
        UNet(1, 1, 2, 4, pooling="median")
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 3, 18, 16))
