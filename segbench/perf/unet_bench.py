"""U-Net-training and data-pipeline workloads of scripts/bench.py: segbench's own code against plain references.

unet-train   next(MixedBatches) + segbench.step.train_step (the functions the training loop runs: in-memory
             sources, channels-last, fused Adam, bf16 autocast on CUDA) for `steps` steps of K + M = 8 pairs.
             Reference: ReferenceUNet (the same layers, written plainly), NCHW float32, default Adam, batches
             indexed from a float32 tensor. FLOPs: 3 × 2 × forward MACs per step (forward, input and weight
             gradients).
unet-graph   CUDA only: the same step replayed as one CUDA graph (segbench.graphed) against it eager, with
             graph_agreement's loss / weight differences.
pipeline     batches of K real + M synthetic pairs as training tensors, from shard directories on disk: segbench
             loads the shards once (reported as load_s) and then draws from memory (on the GPU when it fits);
             the reference is the usual per-sample Dataset: one h5py row read per sample, then torch.stack.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pairgen import shards
from pairgen.perf.timing import Record, ablation, device_peak, forward_macs, make_record, paired_timing, plain_backend
from pairgen.presets import WIDE_DATASETS, preset_values as gan_preset_values
from pairgen.shards import ShardSet
from segbench.mixing import MixedBatches, RealSource, ShardSynthSource
from segbench.presets import SegConfig, make_config
from segbench.unet import UNet, n_outputs_for

N_CLASSES = {"scr-lung": 2, "cityscapes": 8, "camvid": 12}
# (real, synthetic) per minibatch at the thesis preset: the mixed rows of tables 5.2 (8-8: batch 16, the issue's
# 1.3 TFLOP lung step) and 5.4 (4-4: batch 8, 5.3 TFLOP); smaller presets keep their own defaults
THESIS_BATCH = {"scr-lung": (8, 8), "cityscapes": (4, 4), "camvid": (4, 4)}


class ReferenceUNet(nn.Module):
    """The U-Net of segbench.unet written plainly (same layers): B×C×H×W → B×n_out×H×W logits."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, filters: int) -> None:
        super().__init__()

        def block(c_in: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, filters, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU())

        self.down = nn.ModuleList(block(in_channels if i == 0 else filters) for i in range(depth))
        self.middle = block(filters)
        self.up = nn.ModuleList(block(2 * filters) for _ in range(depth))
        self.head = nn.Conv2d(filters, n_outputs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.middle(x)
        for block in self.up:
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], 1))
        return self.head(x)


def seg_setup(dataset: str, preset: str, device: torch.device) -> tuple[SegConfig, int, int, int, int]:
    """(SegConfig, channels, n_classes, height, width) of a preset: the GAN preset's resolution."""
    config = make_config(dataset, preset, device=str(device))
    if preset == "thesis" and dataset in THESIS_BATCH:
        real, synth = THESIS_BATCH[dataset]
        config = dataclasses.replace(config, real_per_batch=real, synth_per_batch=synth)
    values = gan_preset_values(dataset, preset)
    channels = 3 if dataset in WIDE_DATASETS else 1
    return config, channels, N_CLASSES.get(dataset, 2), values["height"], values["width"]


def unet_step_flops(config: SegConfig, channels: int, n_classes: int, height: int, width: int) -> float:
    macs = forward_macs(lambda: UNet(channels, n_outputs_for(n_classes), config.depth, config.filters),
                        (config.batch_size, channels, height, width))
    return 2.0 * 3 * macs


def random_shardset(kind: str, n: int, channels: int, n_classes: int, height: int, width: int,
                    seed: int = 0) -> ShardSet:
    rng = np.random.default_rng(seed)
    return ShardSet(Path("."), {"kind": kind, "class_names": [f"c{i}" for i in range(n_classes)]},
                    rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8),
                    rng.integers(0, n_classes, (n, height, width), dtype=np.uint8), np.arange(n, dtype=np.int64))


def _random_sets(channels: int, n_classes: int, height: int, width: int) -> tuple[ShardSet, ShardSet]:
    """64 random real and 64 random synthetic pairs: the training workloads' data (speed does not depend on it)."""
    return (random_shardset("real", 64, channels, n_classes, height, width, 0),
            random_shardset("synthetic", 64, channels, n_classes, height, width, 1))


def _mixed_batches(config: SegConfig, real: ShardSet, synth: ShardSet, device: torch.device) -> MixedBatches:
    """The config's K real + M synthetic batches from in-memory sources, seeded (the same batches every call)."""
    return MixedBatches(RealSource(real, device), ShardSynthSource(synth, device), config.real_per_batch,
                        config.synth_per_batch, torch.Generator().manual_seed(0))


def unet_project(config: SegConfig, real: ShardSet, synth: ShardSet, device: torch.device, steps: int,
                 graph: bool = False, channels_last: bool = True, fused_adam: bool = True) -> Callable[[], None]:
    """A call that runs `steps` iterations of segbench's batch pipeline + train_step on a fresh model.
    `graph`: the step as a GraphedTrainStep, its warm-up and capture done here (outside any timed call).
    channels_last, fused_adam: segbench.step's speed choices (the ablations turn them off)."""
    from segbench.graphed import GraphedTrainStep
    from segbench.step import train_step

    batches = _mixed_batches(config, real, synth, device)
    model, optimizer = _fresh_unet(config, real, device, channels_last, fused_adam)
    step = GraphedTrainStep(model, optimizer, config.amp, channels_last=channels_last) if graph else None
    if step is not None:
        for _ in range(step.warmup + 1):
            step(*next(batches)[:2])

    def project() -> None:
        for _ in range(steps):
            images, masks, _ = next(batches)
            if step is None:
                train_step(model, optimizer, images, masks, config.amp, channels_last=channels_last)
            else:
                step(images, masks)

    return project


def _fresh_unet(config: SegConfig, real: ShardSet, device: torch.device, channels_last: bool = True,
                fused_adam: bool = True):
    """(model, optimiser) as segbench.train builds them, initialised from seed 0."""
    from segbench.step import make_optimizer, prepare_model
    from segbench.unet import build_unet

    torch.manual_seed(0)
    model = prepare_model(build_unet(config, real.images.shape[3], len(real.class_names)), device, channels_last)
    return model, make_optimizer(model, config, fused_adam)


def graph_agreement(dataset: str, preset: str, device: torch.device, steps: int = 20) -> dict[str, Any]:
    """Does the CUDA graph compute what train_step computes? Fresh identical models (seed 0) trained `steps`
    steps on the same batches: train_step, GraphedTrainStep, and train_step again (the run-to-run floor of
    cuDNN's non-deterministic kernels). Differences: losses max_i |a_i - b_i| / |b_i|; weights (all parameters
    flattened) max |a - b| / max |b|. graph_captured: whether a graph was replayed (False on the CPU, or after
    a failed capture)."""
    from segbench.graphed import GraphedTrainStep
    from segbench.step import train_step

    config, channels, n_classes, height, width = seg_setup(dataset, preset, device)
    real, synth = _random_sets(channels, n_classes, height, width)
    batches = _mixed_batches(config, real, synth, device)
    data = [next(batches)[:2] for _ in range(steps)]

    def train(graphed: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
        model, optimizer = _fresh_unet(config, real, device)
        graph = GraphedTrainStep(model, optimizer, config.amp) if graphed else None
        losses = [graph(*batch) if graph else train_step(model, optimizer, *batch, config.amp) for batch in data]
        weights = torch.cat([p.detach().double().flatten() for p in model.parameters()]).cpu()
        return torch.stack(losses).double().cpu(), weights, bool(graph and graph.captured)

    eager_losses, eager_weights, _ = train(False)
    graph_losses, graph_weights, captured = train(True)
    again_losses, again_weights, _ = train(False)

    def rel(a: torch.Tensor, b: torch.Tensor, elementwise: bool) -> float:
        scale = b.abs().clamp_min(1e-30) if elementwise else b.abs().max().clamp_min(1e-30)
        return float(((a - b).abs() / scale).max())

    return {"graph_captured": captured, "agreement_steps": steps,
            "graph_loss_max_rel_diff": rel(graph_losses, eager_losses, True),
            "graph_weight_max_rel_diff": rel(graph_weights, eager_weights, False),
            "eager_loss_max_rel_diff": rel(again_losses, eager_losses, True),
            "eager_weight_max_rel_diff": rel(again_weights, eager_weights, False)}


def unet_reference(config: SegConfig, real: ShardSet, synth: ShardSet, device: torch.device,
                   steps: int) -> Callable[[], None]:
    """A call that runs `steps` plain steps of ReferenceUNet on the same pairs, held as float32 tensors."""
    images = torch.from_numpy(np.concatenate([real.images, synth.images])).permute(0, 3, 1, 2)
    images = (images.float() / 127.5 - 1).to(device)
    masks = torch.from_numpy(np.concatenate([real.masks, synth.masks])).long().to(device)
    n_out = n_outputs_for(len(real.class_names))
    torch.manual_seed(0)
    reference = ReferenceUNet(images.shape[1], n_out, config.depth, config.filters).to(device)
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr, betas=config.betas)

    def plain() -> None:
        with plain_backend():
            plain_steps()

    def plain_steps() -> None:
        for _ in range(steps):
            index = torch.randint(len(images), (config.batch_size,), device=device)
            logits, target = reference(images[index]), masks[index]
            loss = (F.binary_cross_entropy_with_logits(logits[:, 0], (target > 0).float()) if n_out == 1
                    else F.cross_entropy(logits, target))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return plain


def bench_unet_train(dataset: str, preset: str, device: torch.device, steps: int, rounds: int,
                     ablate: bool = False) -> Iterator[Record]:
    """Iterations/s of segbench's training step against ReferenceUNet's plain step (module docstring); with
    `ablate`, also each of segbench.step's speed choices against the same code without it. Yields each record as
    soon as it is measured."""
    config, channels, n_classes, height, width = seg_setup(dataset, preset, device)
    real, synth = _random_sets(channels, n_classes, height, width)
    timings = paired_timing(unet_project(config, real, synth, device, steps),
                            unet_reference(config, real, synth, device, steps), rounds, device)
    precision = "bf16" if device.type == "cuda" and config.amp else "fp32"
    yield make_record("unet-train", device, preset, timings, steps, steps, "it/s",
                      unet_step_flops(config, channels, n_classes, height, width), device_peak(device, precision),
                      "plain eager fp32 U-Net step (segbench.perf.unet_bench.ReferenceUNet)", dataset=dataset,
                      batch_size=config.batch_size, depth=config.depth, filters=config.filters,
                      resolution=f"{height}x{width}", precision=precision)
    if ablate:
        for name in ("channels_last", "fused_adam"):
            yield ablation(f"unet-train {dataset}", device, preset,
                           lambda on: unet_project(config, real, synth, device, steps, **{name: on}), name,
                           rounds, steps, "it/s")


def bench_unet_graph(dataset: str, preset: str, device: torch.device, steps: int, rounds: int) -> Iterator[Record]:
    """CUDA only (nothing on a CPU): the U-Net step as one CUDA graph (segbench.graphed) against the same step
    eager, paired, with graph_agreement's figures; its own workload (a failed capture may leave the process's
    CUDA context unusable). Warm-up and capture happen in unet_project, before any timed call."""
    if device.type != "cuda":
        return
    config, channels, n_classes, height, width = seg_setup(dataset, preset, device)
    real, synth = _random_sets(channels, n_classes, height, width)
    timings = paired_timing(unet_project(config, real, synth, device, steps, graph=True),
                            unet_project(config, real, synth, device, steps), rounds, device)
    yield make_record(f"unet-train {dataset} [cuda-graph]", device, preset, timings, steps, steps,
                      "it/s", None, (None, ""), "the same step, eager",
                      notes="ablation: ratio = with / without", dataset=dataset,
                      **graph_agreement(dataset, preset, device))


def _write_split(directory: Path, shardset: ShardSet) -> Path:
    attrs = {"kind": shardset.attrs["kind"], "dataset": "bench", "split": "train", "fold": "fold1",
             "class_names": shardset.class_names}
    arrays = {"images": shardset.images, "masks": shardset.masks, "sample_index": shardset.sample_index}
    if attrs["kind"] == "synthetic":
        arrays["masks_raw"] = np.zeros(shardset.masks.shape + (1,), np.float16)
        arrays["latents"] = np.zeros((len(shardset), 8), np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    shards.write_manifest(directory, attrs, [shards.write_shard(directory / "shard-00000.h5", arrays, attrs)])
    return directory


def bench_pipeline(dataset: str, preset: str, device: torch.device, n_batches: int, rounds: int,
                   workdir: Path, aug: str = "thesis-lung") -> Record:
    """Samples/s of MixedBatches over loaded shards against per-sample h5py reads (module docstring)."""
    from segbench.augment import augment_batch, parse_spec

    config, channels, n_classes, height, width = seg_setup(dataset, preset, device)
    n = 512
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        real_dir = _write_split(Path(tmp) / "real", random_shardset("real", n, channels, n_classes, height, width))
        synth_dir = _write_split(Path(tmp) / "synth",
                                 random_shardset("synthetic", n, channels, n_classes, height, width, 1))
        start = time.perf_counter()
        real, synth = RealSource(shards.load_shards(real_dir), device), ShardSynthSource(
            shards.load_shards(synth_dir), device)
        load_s = time.perf_counter() - start
        batches = MixedBatches(real, synth, config.real_per_batch, config.synth_per_batch,
                               torch.Generator().manual_seed(0))

        def project() -> None:
            for _ in range(n_batches):
                next(batches)

        files = [h5py.File(real_dir / "shard-00000.h5", "r"), h5py.File(synth_dir / "shard-00000.h5", "r")]
        rng = np.random.default_rng(0)
        n_reference = max(1, n_batches // 10)

        def plain() -> None:
            for _ in range(n_reference):
                items = []
                for h5, count in ((files[0], config.real_per_batch), (files[1], config.synth_per_batch)):
                    for i in rng.integers(0, n, count):
                        image = torch.from_numpy(h5["images"][i]).permute(2, 0, 1).float() / 127.5 - 1
                        items.append((image, torch.from_numpy(h5["masks"][i]).long()))
                torch.stack([x for x, _ in items]).to(device), torch.stack([y for _, y in items]).to(device)

        try:
            timings = paired_timing(project, plain, rounds, device)
        finally:
            for h5 in files:
                h5.close()
        spec, generator = parse_spec(aug), torch.Generator(device=device).manual_seed(0)
        start = time.perf_counter()
        for _ in range(n_batches):
            augment_batch(*next(batches)[:2], spec, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        with_aug = n_batches * config.batch_size / (time.perf_counter() - start)
    size = config.batch_size
    return make_record("pipeline", device, preset, timings, n_batches * size, n_reference * size, "samples/s", None,
                       (None, "no FLOPs counted"), "per-sample h5py reads + torch.stack", dataset=dataset,
                       batch_size=size, load_s=load_s, **{f"with_aug_{aug}_samples_per_s": with_aug})


CAPTURE_PHASES = ("step", "forward", "backward", "adam", "step-fp32")   # the full step first


def probe_unet_capture(dataset: str, preset: str, device: torch.device, phase: str) -> str:
    """Diagnostic for a failing segbench.graphed capture: capture one part of the U-Net training step as a CUDA
    graph, after 3 eager warm-up steps on a side stream, and replay it once. phase: 'forward' (no grad),
    'backward' (forward + loss + backward), 'adam' (the fused Adam step alone), 'step' (train_step, bf16
    autocast as configured), 'step-fp32' (train_step without autocast). Returns 'ok', or raises what the capture
    raised. One phase per process: a failed capture can leave the process's CUDA context unusable."""
    from pairgen.core.cudagraph import capture, on_side_stream
    from segbench.step import autocast_for, memory_format, segmentation_loss, train_step

    if phase not in CAPTURE_PHASES:
        raise ValueError(f"phase must be one of {CAPTURE_PHASES}, not {phase!r}")
    config, channels, n_classes, height, width = seg_setup(dataset, preset, device)
    real, synth = _random_sets(channels, n_classes, height, width)
    batches = _mixed_batches(config, real, synth, device)
    model, optimizer = _fresh_unet(config, real, device)
    images, masks, _ = next(batches)
    images = images.contiguous(memory_format=memory_format())
    amp = config.amp and phase != "step-fp32"
    for _ in range(3):
        on_side_stream(lambda: train_step(model, optimizer, images, masks, amp), device)
    torch.cuda.synchronize(device)

    def part() -> None:
        if phase == "forward":
            with torch.no_grad(), autocast_for(device, amp, cache_enabled=False):
                model(images)
        elif phase == "backward":
            with autocast_for(device, amp, cache_enabled=False):
                logits = model(images)
            segmentation_loss(logits, masks).backward()
        elif phase == "adam":
            optimizer.step()
        else:
            train_step(model, optimizer, images, masks, amp, cache_enabled=False)

    graph, _ = capture(part, [optimizer], zero_grads=phase != "adam")   # Adam alone steps the warm-up's gradients
    graph.replay()
    torch.cuda.synchronize(device)
    return "ok"


def unet_step_bytes(dataset: str, preset: str, amp: bool = True) -> float:
    """Bytes one training step (train_step: forward, loss, backward, fused Adam) moves at the preset's batch as
    eager kernels run it (pairgen.perf.traffic), counted on the CPU under bf16 autocast when `amp` (the CUDA step's
    dtypes) and extrapolated from batches 1 and 2."""
    from pairgen.perf.traffic import bytes_at_batch, traffic_of
    from segbench.step import train_step
    from segbench.unet import build_unet

    cpu = torch.device("cpu")
    config, channels, n_classes, height, width = seg_setup(dataset, preset, cpu)

    def at(batch: int) -> int:
        torch.manual_seed(0)
        model = build_unet(config, channels, n_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, fused=True)
        images = torch.rand(batch, channels, height, width) * 2 - 1
        masks = torch.randint(0, n_classes, (batch, height, width))

        def step() -> None:
            with torch.autocast("cpu", torch.bfloat16, enabled=amp):   # train_step autocasts on CUDA only
                train_step(model, optimizer, images, masks, amp=False)

        step()   # Adam's state exists from here on
        return traffic_of(step)

    return bytes_at_batch(at, config.batch_size)
