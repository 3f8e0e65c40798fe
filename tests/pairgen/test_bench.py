"""Benchmark machinery: analytic FLOP counts against hand counts and torch's FLOP counter, and the plain
references against the project's networks (the benchmark compares like with like)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pairgen.perf.gan_bench import bench_config, gan_iteration_flops, penalty_bf16_error
from pairgen.networks import build_critic, build_generator, pair_channels
from pairgen.perf.timing import Paired, forward_macs, make_record, paired_timing
from pairgen.presets import make_config
from pairgen.perf.reference import reference_critic, reference_generator
from segbench.perf.unet_bench import ReferenceUNet
from segbench.unet import UNet


def hand_config():
    """z 3 → FC 4×2×2 → ConvT 4→2 (4×4) → ConvT 2→2 (8×8); critic Conv 2→2 (4×4) → Conv 2→4 (2×2) → FC 16→1."""
    return make_config("scr-lung", "tiny", class_names=("bg", "fg"), height=8, width=8, z_dim=3, g_channels=(4, 2),
                       d_channels=(2, 4), batch_size=2, critic_steps=1, device="cpu")


def test_forward_macs_hand_count() -> None:
    def build() -> nn.Module:
        return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1),                   # out 1×3×2×2: 12·2·9 = 216
                             nn.ConvTranspose2d(3, 2, 5, stride=2, padding=2, output_padding=1),  # in 12·2·25 = 600
                             nn.Flatten(), nn.Linear(32, 1))                            # 32·1 = 32
    assert forward_macs(build, (1, 2, 4, 4)) == 216 + 600 + 32


def test_gan_iteration_flops_hand_count() -> None:
    config = hand_config()
    g = 2 * 3 * 16 + 2 * 4 * 2 * 2 * 2 * 25 + 2 * 2 * 4 * 4 * 2 * 25     # FC 96, ConvT 1600, ConvT 3200
    d = 2 * 2 * 4 * 4 * 2 * 25 + 2 * 4 * 2 * 2 * 2 * 25 + 2 * 16         # Conv 3200, Conv 1600, FC 32
    assert (g, d) == (4896, 4832)
    assert forward_macs(lambda: build_generator(config), (2, 3)) == g
    assert forward_macs(lambda: build_critic(config), (2, 2, 8, 8)) == d
    # one critic step (G + 12·D) and one generator step (3·G + 2·D), 2 FLOPs per MAC
    assert gan_iteration_flops(config) == 2 * (g + 12 * d + 3 * g + 2 * d) == 174_464


def test_gan_flops_agree_with_torch_flop_counter() -> None:
    """The analytic multipliers (penalty double backward included) against what autograd actually runs."""
    config = make_config("scr-lung", "tiny", class_names=("bg", "fg"), height=16, width=16, z_dim=16,
                         g_channels=(16, 8, 4), d_channels=(4, 8, 16), batch_size=4, device="cpu")
    torch.manual_seed(0)
    generator, critic = build_generator(config), build_critic(config)
    batch, shape = config.batch_size, (config.batch_size, pair_channels(config), 16, 16)
    real = torch.rand(shape) * 2 - 1

    def critic_step() -> None:
        with torch.no_grad():
            fake = generator(torch.randn(batch, config.z_dim))
        eps = torch.rand(batch, 1, 1, 1)
        # a non-leaf interpolate: FlopCounterMode's module tracker refuses autograd.grad w.r.t. a leaf
        mixed = eps * real + (1 - eps) * fake + torch.zeros(batch, 1, 1, 1, requires_grad=True)
        (grads,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
        penalty = ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
        (critic(fake).mean() - critic(real).mean() + 10 * penalty).backward()

    def generator_step() -> None:
        critic.requires_grad_(False)
        (-critic(generator(torch.randn(batch, config.z_dim))).mean()).backward()
        critic.requires_grad_(True)

    g = forward_macs(lambda: build_generator(config), (batch, config.z_dim))
    d = forward_macs(lambda: build_critic(config), shape)
    for step, analytic in ((critic_step, 2 * (g + 12 * d)), (generator_step, 2 * (3 * g + 2 * d))):
        with FlopCounterMode(display=False) as counter:
            step()
        assert counter.get_total_flops() == pytest.approx(analytic, rel=0.05)


@pytest.mark.parametrize("critic_norm", ["layer", "batch", "none"])
def test_reference_networks_are_the_project_networks(critic_norm: str) -> None:
    config = make_config("scr-lung", "tiny", class_names=("bg", "fg"), height=16, width=16, z_dim=16,
                         g_channels=(16, 8, 4), d_channels=(4, 8, 16), critic_norm=critic_norm, device="cpu")
    for project, plain, shape in ((build_generator(config), reference_generator(config), (3, 16)),
                                  (build_critic(config), reference_critic(config), (3, 2, 16, 16))):
        _copy_by_order(project, plain)
        x = torch.randn(shape)
        assert torch.allclose(project.eval()(x), plain.eval()(x), atol=1e-5)


def test_reference_unet_is_the_project_unet() -> None:
    project, plain = UNet(3, 4, 2, 8), ReferenceUNet(3, 4, 2, 8)
    _copy_by_order(project, plain)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(project(x), plain(x), atol=1e-5)


def _copy_by_order(source: nn.Module, target: nn.Module) -> None:
    """Parameters and buffers in registration order (same layers, other names)."""
    source_tensors = list(source.state_dict().values())
    target_state = target.state_dict()
    assert [tuple(t.shape) for t in source_tensors] == [tuple(t.shape) for t in target_state.values()]
    target.load_state_dict(dict(zip(target_state, source_tensors)))


def test_penalty_in_bf16_is_close_to_fp32() -> None:
    """bf16 autocast runs the penalty's double backward in bf16 too; on the tiny critic it stays within 5 %."""
    assert penalty_bf16_error(bench_config("scr-lung", "tiny", torch.device("cpu")), torch.device("cpu")) < 0.05


def test_paired_timing_and_record() -> None:
    calls = []
    timings = paired_timing(lambda: calls.append("p"), lambda: 0.5, rounds=4, device=torch.device("cpu"))
    assert len(timings.project) == len(timings.reference) == 4 and calls.count("p") == 5   # + 1 warm-up
    assert timings.reference == [0.5] * 4                     # a callable may report its own seconds
    record = make_record("w", torch.device("cpu"), "tiny", Paired([1.0, 2.0], [4.0, 4.0]), 10, 5, "it/s", 1e12,
                         (20.0, "test"), "ref")
    assert record.throughput == pytest.approx(10 / 1.5) and record.reference_throughput == pytest.approx(5 / 4)
    assert record.ratio_vs_reference == pytest.approx((10 / 1 / (5 / 4) + 10 / 2 / (5 / 4)) / 2)
    assert record.tflops == pytest.approx(10 / 1.5) and record.fraction_of_peak == pytest.approx(10 / 1.5 / 20)
    assert {"workload", "device", "preset", "throughput", "unit", "reference_throughput", "ratio_vs_reference",
            "tflops"} <= set(record.to_json())


def test_profile_gan_reports_phases_and_operators() -> None:
    from pairgen.perf.profiling import profile_gan

    text = profile_gan("scr-lung", "tiny", torch.device("cpu"), iters=1, rows=5)
    phases = {line.split()[0]: float(line.split("ms/it")[1].split("%")[0]) for line in text.splitlines()
              if "ms/it" in line}
    assert set(phases) == {"fakes", "critic", "generator"}
    assert abs(sum(phases.values()) - 100.0) < 0.5          # the phases partition the iteration
    assert "convolution" in text                             # the operator table is there


def test_operator_counts_see_the_layer_norm_double_backward() -> None:
    from pairgen.perf.profiling import format_operator_counts, operator_counts

    layer = operator_counts("scr-lung", "tiny", side=16)
    plain = operator_counts("scr-lung", "tiny", critic_norm="none", side=16)
    assert set(layer) == {"critic step", "generator step", "fakes"}
    assert sum(plain["critic step"].values()) > 50 and plain["critic step"]["convolution"] > 0
    # the composite double backward of GroupNorm(1, C) multiplies the critic step's operators
    assert sum(layer["critic step"].values()) > 2 * sum(plain["critic step"].values())
    assert layer["fakes"] == plain["fakes"]            # the generator does not change with the critic's norm
    text = format_operator_counts(layer, critic_steps=5)
    total = 5 * sum(layer["critic step"].values()) + sum(layer["generator step"].values()) \
        + sum(layer["fakes"].values())
    assert text.splitlines()[-1].endswith(f"{total} ATen calls")
