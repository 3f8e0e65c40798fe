"""Where a GAN training iteration's time goes (scripts/profile_gan.py): the explanation a benchmark figure below
its target needs. Per-phase wall times (synchronised after each phase) and torch.profiler's operator table; and
`operator_counts`, every ATen call of one step (forward, backward, double backward), which tells a launch-bound
step apart on any device: the count does not depend on the device, its per-operator overhead does."""

from __future__ import annotations

import collections
import dataclasses
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from pairgen.perf.gan_bench import bench_config, gan_iteration_flops, random_pair_batch
from pairgen.networks import build_critic, build_generator
from pairgen.perf.timing import sync
from pairgen.presets import GANConfig
from pairgen.train import _make_optimizer
from pairgen.step import critic_update, generator_update, make_critic_backward
from pairgen.wgan_gp import interpolation_weights, make_fakes


def _training_parts(config: GANConfig, device: torch.device) -> tuple:
    """(generator, critic, opt_g, opt_d, one real batch) set up as pairgen.train sets them up on `device`."""
    generator, critic = build_generator(config).to(device), build_critic(config).to(device)
    if device.type == "cuda":
        generator.to(memory_format=torch.channels_last)
        critic.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt_g, opt_d = _make_optimizer(generator, config, device), _make_optimizer(critic, config, device)
    return generator, critic, opt_g, opt_d, random_pair_batch(config, config.batch_size, device)


def generator_phase(generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer, config: GANConfig,
                    device: torch.device, amp: bool) -> None:
    """pairgen.step's generator step on fresh latents: G's forward, then generator_update."""
    with torch.autocast(device.type, torch.bfloat16, enabled=amp):
        fake = generator(torch.randn(config.batch_size, config.z_dim, device=device))
    generator_update(critic, generator, opt_g, fake, amp)


def profile_gan(dataset: str, preset: str, device: torch.device, iters: int = 4, rows: int = 25,
                compile: bool = False) -> str:
    """Where one GAN iteration's time goes: per-phase wall times (synchronised) and torch.profiler's top
    operators by device time, for the training step exactly as pairgen.train runs it (same networks, memory
    format, autocast, optimisers), on random pairs. The explanation a benchmark figure below target needs."""
    config = dataclasses.replace(bench_config(dataset, preset, device), compile=compile)
    amp = device.type == "cuda" and config.amp
    generator, critic, opt_g, opt_d, real = _training_parts(config, device)
    backward = make_critic_backward(critic, opt_d, config, amp)
    phases: dict[str, float] = {"fakes (one forward)": 0.0, "critic steps": 0.0, "generator step": 0.0}

    def iteration(timed: bool) -> None:
        def mark(name: str, start: float) -> float:
            sync(device)
            now = time.perf_counter()
            if timed:
                phases[name] += now - start
            return now

        sync(device)
        start = time.perf_counter()
        fakes = make_fakes(generator, config.critic_steps * config.batch_size, config, device, amp)
        start = mark("fakes (one forward)", start)
        for fake in fakes.split(config.batch_size):
            critic_update(critic, opt_d, backward, real, fake, interpolation_weights(real))
        start = mark("critic steps", start)
        generator_phase(generator, critic, opt_g, config, device, amp)
        mark("generator step", start)

    for _ in range(2):                       # warm-up: cuDNN autotuning, allocator
        iteration(False)
    for _ in range(iters):
        iteration(True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            iteration(False)
        sync(device)
    total = sum(phases.values())
    lines = [f"GAN iteration profile: {dataset} {preset} on {device} (batch {config.batch_size}, "
             f"{config.critic_steps} critic steps, {'bf16 autocast' if amp else 'fp32'}"
             f"{', compiled critic step' if compile else ''}): "
             f"{iters / total:.3g} it/s, {gan_iteration_flops(config) * iters / total / 1e12:.3g} TFLOP/s"]
    lines += [f"  {name:22s} {1000 * seconds / iters:8.1f} ms/it  {100 * seconds / total:5.1f} %"
              for name, seconds in phases.items()]
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines.append(prof.key_averages(group_by_input_shape=False).table(sort_by=key, row_limit=rows))
    return "\n".join(lines)


class _CountOps(TorchDispatchMode):
    """Counts every ATen operator dispatched while active, by name (views and detaches included)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def operator_counts(dataset: str, preset: str, critic_norm: str | None = None, batch_size: int = 2,
                    side: int = 64) -> dict[str, collections.Counter]:
    """ATen calls of one critic step, one generator step and the fakes' forward of an iteration, for the
    preset's networks (optionally another critic norm) on the CPU at a small batch and side: operator counts
    depend on the layers, not on the sizes, so this is cheap and holds for the thesis networks at 256 px."""
    device = torch.device("cpu")
    overrides = {"batch_size": batch_size, "height": side, "width": side}
    if critic_norm is not None:
        overrides["critic_norm"] = critic_norm
    config = dataclasses.replace(bench_config(dataset, preset, device), **overrides)
    torch.manual_seed(0)
    generator, critic, opt_g, opt_d, real = _training_parts(config, device)
    fakes = make_fakes(generator, config.critic_steps * batch_size, config, device, False)
    backward = make_critic_backward(critic, opt_d, config, False)
    phases = {"critic step": lambda: critic_update(critic, opt_d, backward, real, fakes[:batch_size],
                                                   interpolation_weights(real)),
              "generator step": lambda: generator_phase(generator, critic, opt_g, config, device, False),
              "fakes": lambda: make_fakes(generator, config.critic_steps * batch_size, config, device, False)}
    counts = {}
    for name, run in phases.items():
        run()                                   # first call: optimiser state, lazy initialisation
        with _CountOps() as counter:
            run()
        counts[name] = counter.counts
    return counts


def format_operator_counts(counts: dict[str, collections.Counter], critic_steps: int) -> str:
    """One line per phase (total and the most frequent operators), then the total per iteration."""
    lines = [f"  {name:15s} {sum(c.values()):6d} ATen calls   top: "
             + ", ".join(f"{op} {n}" for op, n in c.most_common(6)) for name, c in counts.items()]
    total = critic_steps * sum(counts["critic step"].values()) + sum(counts["generator step"].values()) \
        + sum(counts["fakes"].values())
    return "\n".join(lines + [f"  per iteration ({critic_steps} critic steps): {total} ATen calls"])
