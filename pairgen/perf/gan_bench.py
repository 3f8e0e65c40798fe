"""GAN-training and export workloads of scripts/bench.py: pairgen's own code against pairgen.perf.reference.

gan-train   pairgen.train.train (the real loop: data sampling, finite checks, logging) on random pairs in a
            temporary shard directory. One project call trains 2·T iterations with tick_every = T and reports the
            second tick's window (T steady-state iterations; setup, the first step's warm-up, the final sheet and
            checkpoint fall outside it). Reference: ReferenceGAN.iteration, T times.
export      pairgen.export.export_source (blocks of `block_size` latents, default_writers() writer threads) of n
            samples into a fresh directory; reference: reference_export, one forward and one HDF5 row write per
            sample. Also one shard written alone (write_only_*) with each mask filter, on arrays that compress
            like a trained generator's output (realistic_shard).

FLOPs per GAN iteration (S critic steps, batch B; G, D = forward MACs of generator and critic at batch B):
  critic step     G (fakes) + 3·2·D (real and fake: forward, input and weight gradients)
                  + 6·D (penalty: forward on the interpolates, input gradient, and the double backward, which
                  differentiates the input-gradient pass (2·D) and the forward pass (2·D) once more)
  generator step  3·G + 2·D (critic forward and input gradient only; its weights are frozen)
  iteration       2 FLOPs/MAC × [S·(G + 12·D) + 3·G + 2·D]
Export: 2 × G's forward MACs per sample.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pairgen import shards
from pairgen.encoding import encode_mask
from pairgen.networks import build_critic, build_generator, pair_channels
from pairgen.perf.timing import (Paired, Record, device_peak, forward_macs, make_record, paired_timing,
                          plain_backend)
from pairgen.presets import GANConfig, make_config
from pairgen.perf.reference import ReferenceGAN, reference_export

CLASS_NAMES = {"scr-lung": ("background", "left lung"),
               "cityscapes": ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")}


def bench_config(dataset: str, preset: str, device: torch.device, **overrides) -> GANConfig:
    """The preset's GANConfig for a benchmark (classes and channels as the real dataset has them)."""
    names = CLASS_NAMES.get(dataset, ("background", "foreground"))
    channels = 3 if dataset in ("cityscapes", "camvid") else 1
    overrides = {"mask_encoding": "scalar", **overrides}   # the thesis' workload: one scalar tanh mask channel
    return make_config(dataset, preset, class_names=names, image_channels=channels, device=str(device), **overrides)


def gan_iteration_flops(config: GANConfig) -> float:
    """Analytic FLOPs of one training iteration (module docstring)."""
    batch, shape = config.batch_size, (config.batch_size, pair_channels(config), config.height, config.width)
    g = forward_macs(lambda: build_generator(config), (batch, config.z_dim))
    d = forward_macs(lambda: build_critic(config), shape)
    return 2.0 * (config.critic_steps * (g + 12 * d) + 3 * g + 2 * d)


def export_flops_per_sample(config: GANConfig) -> float:
    return 2.0 * forward_macs(lambda: build_generator(config), (1, config.z_dim))


def random_pairs(config: GANConfig, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 n×H×W×C, masks uint8 n×H×W): random content; speed does not depend on it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, config.height, config.width, config.image_channels), dtype=np.uint8)
    masks = rng.integers(0, config.n_classes, (n, config.height, config.width), dtype=np.uint8)
    return images, masks


def random_pair_batch(config: GANConfig, n: int, device: torch.device | None = None) -> torch.Tensor:
    """random_pairs in model space: float32 n×(C+Kc)×H×W in [-1, 1] (image channels, then the encoded mask)."""
    images, masks = random_pairs(config, n)
    return torch.cat([torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1,
                      encode_mask(torch.from_numpy(masks), config.n_classes, config.mask_encoding)], 1).to(device)


def realistic_shard(config: GANConfig, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic shard arrays that compress like a trained generator's output (random bytes are every filter's
    worst case): images uint8 n×H×W×C smooth with a little noise; masks_raw float16 n×H×W×K = tanh of a steep
    smooth field plus jitter (mostly saturated at ±1, smooth borders); masks uint8 n×H×W thresholded from it."""
    rng = np.random.default_rng(seed)
    h, w, c, k = config.height, config.width, config.image_channels, config.mask_channels
    arrays = {"images": np.empty((n, h, w, c), np.uint8), "masks_raw": np.empty((n, h, w, k), np.float16),
              "latents": rng.standard_normal((n, config.z_dim), dtype=np.float32),
              "sample_index": np.arange(n, dtype=np.int64)}
    rows, cols = np.linspace(0, 2 * np.pi, h, dtype=np.float32), np.linspace(0, 2 * np.pi, w, dtype=np.float32)
    for start in range(0, n, 256):   # blocks: float32 temporaries of 256 samples at a time
        b = min(256, n - start)

        def field(channels: int) -> np.ndarray:
            """b×H×W×channels sums of one random low-frequency wave along each axis, in [-2, 2]."""
            f, phase = rng.uniform(0.5, 2.5, (2, b, 1, 1, channels)), rng.uniform(0, 2 * np.pi, (2, b, 1, 1, channels))
            return (np.sin(f[0] * rows[None, :, None, None] + phase[0])
                    + np.sin(f[1] * cols[None, None, :, None] + phase[1])).astype(np.float32)

        noise = rng.standard_normal((b, h, w, max(c, k)), dtype=np.float32)
        arrays["images"][start:start + b] = np.clip(64 * field(c) + 128 + 4 * noise[..., :c], 0, 255)
        arrays["masks_raw"][start:start + b] = np.tanh(6 * (field(k) - 0.8) + 0.05 * noise[..., :k])
    raw = arrays["masks_raw"]
    arrays["masks"] = (raw[..., 0] > 0 if k == 1 else raw.argmax(-1)).astype(np.uint8)
    return arrays


def write_real_split(config: GANConfig, directory: Path, n: int = 64) -> Path:
    """A real 'train' shard directory of n random pairs at the config's resolution (parent of train/)."""
    images, masks = random_pairs(config, n)
    train = Path(directory) / "train"
    train.mkdir(parents=True, exist_ok=True)
    attrs = {"kind": "real", "dataset": config.dataset, "split": "train", "fold": "fold1",
             "class_names": list(config.class_names)}
    arrays = {"images": images, "masks": masks, "sample_index": np.arange(n, dtype=np.int64)}
    shards.write_manifest(train, attrs, [shards.write_shard(train / shards.SHARD_PATTERN.format(0), arrays, attrs)])
    return Path(directory)


def penalty_bf16_error(config: GANConfig, device: torch.device) -> float:
    """|GP(bf16 autocast) - GP(fp32)| / GP(fp32) on one random batch of a fresh critic (double backward in bf16)."""
    from pairgen.wgan_gp import gradient_penalty

    torch.manual_seed(0)
    critic = build_critic(config).to(device)
    shape = (config.batch_size, pair_channels(config), config.height, config.width)
    real, fake = torch.rand(shape, device=device) * 2 - 1, torch.rand(shape, device=device) * 2 - 1
    values = []
    for amp in (False, True):
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            penalty = gradient_penalty(critic, real, fake, torch.Generator(device).manual_seed(1))
            values.append(float(penalty.detach()))
    return abs(values[1] - values[0]) / max(abs(values[0]), 1e-12)


def gan_project(config: GANConfig, real: Path, window: int, workdir: Path) -> Callable[[], float]:
    """A call that trains 2·window iterations with pairgen.train into a fresh run dir and returns the seconds
    of the second tick (window steady-state iterations)."""
    from pairgen.train import train

    config = dataclasses.replace(config, iters=2 * window, tick_every=window, sample_every=2 * window,
                                 checkpoint_every=2 * window, keep_checkpoints=1)
    runs = iter(range(1_000_000))

    def project() -> float:
        run = Path(workdir) / f"run{next(runs)}"
        train(config, run, real, show_progress=False)
        ticks = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        shutil.rmtree(run, ignore_errors=True)  # thesis checkpoints are ~1 GB
        return window / [t for t in ticks if t["event"] == "tick"][-1]["it_per_s"]

    return project


def gan_reference(config: GANConfig, device: torch.device, window: int) -> Callable[[], None]:
    """A call that runs window iterations of ReferenceGAN on 64 random in-memory pairs."""
    pairs = random_pair_batch(config, 64, device)
    torch.manual_seed(0)
    reference = ReferenceGAN(config, pairs)

    def plain() -> None:
        with plain_backend():
            for _ in range(window):
                reference.iteration()

    return plain


def graph_agreement(config: GANConfig, real: Path, workdir: Path, iters: int = 12) -> dict[str, float]:
    """Does the CUDA-graph loop compute what the eager loop computes? Trains `iters` iterations three times from
    the same seed (eager, eager again, graphed; a tick per iteration) and returns the largest relative difference
    of the logged losses after the graph's warm-up iterations: graph vs eager, and eager vs eager (cuDNN's
    non-deterministic kernels and bf16 make runs differ; the graph should differ by no more than that)."""
    from pairgen.train import train

    config = dataclasses.replace(config, iters=iters, tick_every=1, sample_every=iters, checkpoint_every=iters,
                                 keep_checkpoints=1)
    logs = {}
    for name, graph in (("eager", False), ("eager2", False), ("graphed", True)):
        run = Path(workdir) / f"agreement-{name}"
        train(dataclasses.replace(config, cuda_graph=graph), run, real, show_progress=False)
        logs[name] = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        shutil.rmtree(run, ignore_errors=True)

    def max_rel_diff(a: str, b: str) -> float:
        keys = ("critic_loss", "wasserstein", "gp", "generator_loss")
        pairs = [(x[k], y[k]) for x, y in zip(logs[a][4:], logs[b][4:]) for k in keys]   # after 3 warm-ups
        return max(abs(x - y) / max(abs(x), abs(y), 1e-6) for x, y in pairs)

    return {"graph_vs_eager_max_rel_diff": max_rel_diff("graphed", "eager"),
            "eager_vs_eager_max_rel_diff": max_rel_diff("eager2", "eager"), "agreement_iterations": iters}


def bench_gan_train(dataset: str, preset: str, device: torch.device, window: int, rounds: int, workdir: Path,
                    ablate: bool = False) -> Iterator[Record]:
    """Iterations/s of pairgen.train against ReferenceGAN (module docstring); with `ablate`, also the compiled
    critic step (and bf16 autocast on CUDA) against the same code without it. Yields each record as soon as it
    is measured (a time limit must not cost the ones already done)."""
    config = bench_config(dataset, preset, device)
    real = write_real_split(config, Path(workdir) / "real")
    project = gan_project(config, real, window, workdir)
    timings: Paired = paired_timing(project, gan_reference(config, device, window), rounds, device)
    precision = "bf16" if device.type == "cuda" and config.amp else "fp32"
    yield make_record("gan-train", device, preset, timings, window, window, "it/s", gan_iteration_flops(config),
                      device_peak(device, precision), "plain eager fp32 WGAN-GP (pairgen.perf.reference)",
                      dataset=dataset, batch_size=config.batch_size, precision=precision,
                      penalty_bf16_rel_error=penalty_bf16_error(config, device),
                      minutes_for_10k_iterations=10_000 * float(np.median(timings.project)) / window / 60)
    if ablate:
        # torch.func + torch.compile critic step (pairgen.compiled); compiling falls in the untimed first tick
        compiled = gan_project(dataclasses.replace(config, compile=True), real, window, workdir)
        timings = paired_timing(compiled, project, rounds, device)
        yield make_record("gan-train [compile]", device, preset, timings, window, window, "it/s", None,
                          (None, ""), "the same code, eager critic step",
                          notes="ablation: ratio = with / without")
        if device.type == "cuda":
            fp32 = gan_project(dataclasses.replace(config, amp=False), real, window, workdir)
            timings = paired_timing(project, fp32, rounds, device)
            yield make_record("gan-train [amp]", device, preset, timings, window, window, "it/s", None,
                              (None, ""), "the same code in fp32", notes="ablation: ratio = with / without")


def bench_gan_graph(dataset: str, preset: str, device: torch.device, window: int, rounds: int,
                    workdir: Path) -> Iterator[Record]:
    """CUDA only (nothing on a CPU, where no graph is captured): pairgen.train with the whole-iteration CUDA graph
    (pairgen.step) against the same loop eager, paired, with graph_agreement's figures. Its own workload, so
    that a capture that fails (and may leave the process's CUDA context unusable) costs no other figure."""
    if device.type != "cuda":
        return
    config = bench_config(dataset, preset, device)
    real = write_real_split(config, Path(workdir) / "real")
    eager = gan_project(dataclasses.replace(config, cuda_graph=False), real, window, workdir)
    graphed = gan_project(dataclasses.replace(config, cuda_graph=True), real, window, workdir)
    timings = paired_timing(graphed, eager, rounds, device)
    precision = "bf16" if config.amp else "fp32"
    yield make_record("gan-train [cuda-graph]", device, preset, timings, window, window, "it/s",
                      gan_iteration_flops(config), device_peak(device, precision),
                      "the same code, eager iterations", notes="ablation: ratio = with / without",
                      **graph_agreement(config, real, workdir))


def bench_export(dataset: str, preset: str, device: torch.device, n: int, n_reference: int, rounds: int,
                 workdir: Path, block_size: int = 1024, samples_per_shard: int = 4096) -> Record:
    """Samples/s of pairgen.export against a per-sample h5py loop (module docstring)."""
    from pairgen.checkpoint import load_generator
    from pairgen.export import default_writers, export_source, load_source
    from pairgen.train import train

    config = bench_config(dataset, preset, device)
    real = write_real_split(config, Path(workdir) / "real")
    checkpoint = train(dataclasses.replace(config, iters=1), Path(workdir) / "gan", real, show_progress=False)
    source = load_source(checkpoint, str(device))                       # exactly what `pairgen export` runs
    plain_generator = load_generator(checkpoint, device)[0].eval()      # NCHW, as a first implementation has it
    out, plain_path = Path(workdir) / "export", Path(workdir) / "plain.h5"

    def project() -> float:
        shutil.rmtree(out, ignore_errors=True)  # the previous round's shards (thesis: gigabytes), untimed
        start = time.perf_counter()
        export_source(source, out, n, block_size=block_size, samples_per_shard=samples_per_shard,
                      show_progress=False)
        return time.perf_counter() - start

    def plain() -> float:
        plain_path.unlink(missing_ok=True)
        start = time.perf_counter()
        with plain_backend():
            reference_export(plain_generator, config, n_reference, plain_path)
        return time.perf_counter() - start

    export_source(source, Path(workdir) / "warmup", min(n, block_size), block_size=block_size,
                  samples_per_shard=samples_per_shard, show_progress=False)   # kernel selection, allocator
    timings = paired_timing(project, plain, rounds, device, warmup=0)
    write_rates = _write_rates(config, min(n, samples_per_shard), Path(workdir))
    per_sample = export_flops_per_sample(config)
    rate = n / float(np.median(timings.project))
    return make_record("export", device, preset, timings, n, n_reference, "samples/s", per_sample,
                       # fp32 export; cuDNN runs its convolutions in TF32 (PyTorch's default)
                       device_peak(device, "tf32" if device.type == "cuda" else "fp32"),
                       "per-sample generator forward + h5py row writes",
                       dataset=dataset, n=n, block_size=block_size, samples_per_shard=samples_per_shard,
                       writers=default_writers(), seconds_for_100k=100_000 / rate, **write_rates)


def _write_rates(config: GANConfig, n: int, workdir: Path) -> dict[str, float]:
    """Samples/s of shards.write_shard alone for one shard of realistic_shard arrays: the mask filters lzf (by
    libhdf5, the filter before shuffle + deflate), none and gzip (shuffle + deflate) in one thread, and gzip with
    default_writers() compression threads. Is writing the bottleneck, and what does each filter cost?"""
    from pairgen.export import default_writers

    arrays = realistic_shard(config, n)
    attrs = {"kind": "synthetic", "dataset": config.dataset, "split": "synthetic", "fold": "fold1",
             "class_names": list(config.class_names)}
    writers = default_writers()
    rates: dict[str, float] = {"write_threads": writers}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name, compression, threads in (("lzf", "lzf", 1), ("none", None, 1), ("gzip", "gzip", 1),
                                           ("gzip_threads", "gzip", writers)):
            with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
                start = time.perf_counter()
                shards.write_shard(Path(tmp) / f"{name}.h5", arrays, attrs, compression=compression, pool=pool)
                rates[f"write_only_{name}_samples_per_s"] = n / (time.perf_counter() - start)
    return rates


def gan_iteration_bytes(config: GANConfig, amp: bool = True) -> float:
    """Bytes one training iteration moves at config.batch_size as eager kernels run it (pairgen.perf.traffic):
    pairgen.step's body (the fakes' forward, S critic steps and the generator step with their fused Adam updates,
    the draws of z and ε), counted on the CPU with bf16 autocast when `amp` (the dtypes of the CUDA step) and
    extrapolated from batches 1 and 2."""
    from pairgen.perf.traffic import bytes_at_batch, traffic_of
    from pairgen.step import GanIteration, make_critic_backward

    cpu = torch.device("cpu")

    class OneBatch:
        """PairData's batch() for the iteration: always the same random real pairs (no gather counted)."""

        def __init__(self, pairs: torch.Tensor) -> None:
            self.pairs = pairs

        def batch(self, index: torch.Tensor) -> torch.Tensor:
            return self.pairs

    def at(batch: int) -> int:
        small = dataclasses.replace(config, batch_size=batch, device="cpu")
        torch.manual_seed(0)
        generator, critic = build_generator(small), build_critic(small)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=small.lr, betas=small.betas, fused=True)
                        for m in (generator, critic))
        step = GanIteration(generator, critic, opt_g, opt_d, OneBatch(random_pair_batch(small, batch)),
                            small, cpu, amp, make_critic_backward(critic, opt_d, small, amp))
        index = torch.zeros(small.critic_steps, batch, dtype=torch.long)
        step.run(index)   # Adam's state exists from here on, as in steady-state training
        return traffic_of(lambda: step.run(index))

    return bytes_at_batch(at, config.batch_size)
