"""Benchmark machinery shared by pairgen.perf.gan_bench and segbench.perf.unet_bench: analytic FLOP counts, device peaks, paired
timing of project code against a plain reference, and the result record that scripts/bench.py prints and saves.

FLOPs are counted analytically, not measured: a multiply-accumulate (MAC) of a conv / transposed conv / linear
layer is 2 FLOPs; elementwise work (norms, activations, Adam) is not counted, as is usual for model FLOPs.
Per layer, for one forward:
  Conv2d            MACs = output elements × (C_in / groups) × kH × kW
  ConvTranspose2d   MACs = input elements × (C_out / groups) × kH × kW
  Linear            MACs = (input elements / in_features) × in_features × out_features
A training step (forward + backward with input and weight gradients) counts 3 forwards; the workloads state
their own multipliers (the WGAN-GP penalty's double backward in pairgen.perf.gan_bench).
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

# dense tensor-core peaks (TFLOP/s, no sparsity) by GPU name fragment: H100 SXM datasheet; H200 has the same core
GPU_PEAKS_TFLOPS: dict[str, dict[str, float]] = {
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def forward_macs(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> int:
    """MACs of one forward of the module `build()` returns on a float32 input of `input_shape` (batch first).

    The module is built and run on the meta device: shapes only, no memory, no arithmetic, so thesis-size nets
    cost nothing to count. Counts Conv2d, ConvTranspose2d and Linear layers (module docstring).
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += inputs[0].numel() * (module.out_channels // module.groups) * k
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += inputs[0].numel() * module.out_features

    with torch.device("meta"):
        model = build()
        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        try:
            with torch.no_grad():
                model(torch.empty(input_shape))
        finally:
            for handle in handles:
                handle.remove()
    return int(total)


@contextmanager
def plain_backend() -> Iterator[None]:
    """PyTorch's default for a reference: cuDNN autotuning off (the project's training switches it on
    process-wide); restored afterwards."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=None)
def cpu_matmul_peak_tflops(size: int = 1024, seconds: float = 2.0, threads: int = 0) -> float:
    """Best float32 matmul rate (TFLOP/s) at the current thread count: the CPU's practical peak for this run
    (measured once per process and thread count, so every record of a run shares it; `threads` keys the
    cache). On a loaded machine this reads low and the fractions of peak read high."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    torch.mm(a, b)
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e12)
    return best


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it comes from) for `precision` 'bf16' | 'tf32' | 'fp32' on `device`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS_TFLOPS.items():
            if key in name:
                return peaks[precision], f"{key} datasheet dense {precision}"
        return None, f"unknown ({name} not in the peak table)"
    threads = torch.get_num_threads()
    return cpu_matmul_peak_tflops(threads=threads), f"measured fp32 matmul, {threads} thread(s)"


def machine(device: torch.device) -> str:
    """One line naming the hardware a figure came from."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
            f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}")


@dataclass
class Paired:
    """Interleaved timings of project and reference calls (seconds per call)."""

    project: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)


def paired_timing(project: Callable[[], Any], reference: Callable[[], Any], rounds: int, device: torch.device,
                  warmup: int = 1) -> Paired:
    """Time `project()` and `reference()` alternately, `rounds` times each (order flipped every round).

    A callable that returns a float reports its own measured seconds (e.g. a training run timing only its
    steady-state window); otherwise the call's wall time counts.
    """
    def timed(fn: Callable[[], Any]) -> float:
        sync(device)
        start = time.perf_counter()
        own = fn()
        sync(device)
        return float(own) if isinstance(own, float) else time.perf_counter() - start

    for _ in range(warmup):
        timed(project)
        timed(reference)
    result = Paired()
    for index in range(rounds):
        order = ((project, result.project), (reference, result.reference))
        for fn, into in (order if index % 2 == 0 else order[::-1]):
            into.append(timed(fn))
    return result


@dataclass
class Record:
    """One workload's result: what scripts/bench.py prints and writes to the JSON list."""

    workload: str
    device: str
    preset: str
    throughput: float                    # project: units per second (median over rounds)
    unit: str                            # 'it/s' | 'samples/s'
    reference_throughput: float | None   # the plain reference, same units, measured in the same run
    ratio_vs_reference: float | None     # median per-round ratio (Paired.ratio), not throughput / reference
    tflops: float | None                 # achieved by the project code (analytic FLOPs × throughput)
    peak_tflops: float | None = None
    fraction_of_peak: float | None = None
    reference_name: str = ""
    flops_per_unit: float | None = None
    machine: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_record(workload: str, device: torch.device, preset: str, timings: Paired, units_project: float,
                units_reference: float, unit: str, flops_per_unit: float | None, peak: tuple[float | None, str],
                reference_name: str, notes: str = "", **extra: Any) -> Record:
    """A Record from paired timings; `units_*` = items one call processes (iterations or samples)."""
    throughput = units_project / statistics.median(timings.project)
    reference = units_reference / statistics.median(timings.reference)
    # median over rounds of the per-round rate ratio: each round times both sides back to back, so a load
    # change on a shared machine hits both alike (the calls may process different numbers of units)
    ratios = [(units_project / p) / (units_reference / r) for p, r in zip(timings.project, timings.reference)]
    ratio = statistics.median(ratios)
    # the spread of the per-round ratios (quartiles): how far load noise moves a single round
    extra = {**extra, "ratio_quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]]
             if len(ratios) > 1 else None, "rounds": len(ratios)}
    tflops = throughput * flops_per_unit / 1e12 if flops_per_unit else None
    fraction = tflops / peak[0] if tflops is not None and peak[0] else None
    return Record(workload, str(device), preset, throughput, unit, reference, ratio, tflops, peak[0], fraction,
                  reference_name, flops_per_unit, machine(device), notes or f"peak: {peak[1]}", dict(extra))


def ablation(workload: str, device: torch.device, preset: str, make_project: Callable[[bool], Callable[[], Any]],
             name: str, rounds: int, units: float, unit: str) -> Record:
    """The project with speed choice `name` on (make_project(True), the default) against the same code with it
    off (make_project(False)), paired like a benchmark: ratio_vs_reference > 1 means the choice pays. Both sides
    are built (nets, optimisers) with their own setting."""
    timings = paired_timing(make_project(True), make_project(False), rounds, device)
    return make_record(f"{workload} [{name}]", device, preset, timings, units, units, unit, None, (None, ""),
                       f"the same code with {name} off", notes="ablation: ratio = with / without")
