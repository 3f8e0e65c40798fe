"""pairgen.perf.traffic on hand-counted cases: what an ATen call reads and writes, views, in-place ops, the affine
extrapolation in the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pairgen.perf.traffic import TrafficMode, bytes_at_batch, gpu_bandwidth, traffic_of


def test_an_op_reads_its_inputs_and_writes_its_output_once() -> None:
    a, b = torch.randn(10), torch.randn(10)
    assert traffic_of(lambda: a + b) == 3 * 10 * 4                  # two float32 reads, one write
    assert traffic_of(lambda: a.view(2, 5).permute(1, 0)) == 0       # views move nothing
    assert traffic_of(lambda: a.add_(b)) == 2 * 10 * 4               # a is read and written: counted once
    assert traffic_of(lambda: a.to(torch.bfloat16)) == 10 * 4 + 10 * 2


def test_linear_layer_by_hand() -> None:
    x, weight, bias = torch.randn(2, 4), torch.randn(3, 4), torch.randn(3)
    with TrafficMode() as mode:
        F.linear(x, weight, bias)
    # addmm(bias, x, weightᵀ): bias 3, x 2×4, weight 3×4 read, output 2×3 written, float32; the transpose is a view
    assert mode.bytes == 4 * (3 + 8 + 12 + 6)
    assert mode.ops == 1


def test_traffic_is_affine_in_the_batch_so_two_points_extrapolate_exactly() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.GroupNorm(1, 4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 1, 3, stride=2))
    optimizer = torch.optim.Adam(net.parameters(), fused=True)

    def at(batch: int) -> int:
        x = torch.randn(batch, 2, 8, 8)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            optimizer.step()

        step()
        return traffic_of(step)

    assert bytes_at_batch(at, 5) == pytest.approx(at(5), rel=1e-12)
    assert bytes_at_batch(lambda b: 100 + 40 * b, 16) == 740


def test_bandwidth_from_the_machine_string() -> None:
    assert gpu_bandwidth("NVIDIA H200, torch 2.11.0+cu130") == 4.8e12
    assert gpu_bandwidth("NVIDIA H100 80GB HBM3, torch 2.11") == 3.35e12
    assert gpu_bandwidth("AMD EPYC 7B13, 2 cores") is None
