"""Segmentation training with the thesis' early stopping (section 4.2), resumable.

Section 4.2: train at least 3000 iterations; track the minimum validation loss, its iteration and the parameters
there; stop when 3000 iterations have passed since the last minimum. Here: `min_iters`, `patience` and a hard
`max_iters` cap from the SegConfig, all counted from the end of the synthetic pre-training (below); the
validation loss (whole validation set) is measured every `val_every` iterations, so stopping is decided at those
points. At the end the parameters of the minimum are restored.

Selection (SegConfig.select_by): 'loss' is the thesis' rule above. 'score' takes the maximum validation score
instead, Dice of the foreground (one class; mean over images) or mIoU over classes 1… (several; pooled confusion,
void ground truth dropped on road scenes), both at the training resolution and from segbench.metrics' definitions.
The loss is a poor judge when training and validation images differ in kind: a U-Net trained on synthetic pairs
only grows confident, its real-validation cross-entropy rises while its overlap still improves, and the loss rule
keeps a nearly untrained net. Both figures are logged at every validation point either way.

Optimiser: Adam, lr 1e-4, beta1 0.5, beta2 0.9 (the header of tables 4.2 / 4.4: "Adam (eta = 0.0001,
beta1 = 0.5, beta2 = 0.9)"), taken from the config. Losses (section 2.6.3): one logit → sigmoid cross-entropy
against foreground (mask > 0); several logits → softmax cross-entropy over every class id (0 included). The step
itself (loss, optimiser, memory format, autocast) is segbench.step's.

Synthetic pre-training (SegConfig.pretrain_iters = N, `segbench run --pretrain-synth N`): iterations 1 … N train
on batches of K + M synthetic rows (`pretrain_batches`), then the K real + M synthetic mix follows. Validation
runs during pre-training too (every val_every and at iteration N), and the kept parameters are those of the
minimum validation loss over the whole run, pre-training included: a fine-tuning that never beats the pre-trained
net on val leaves the pre-trained net. Stopping cannot happen before N + min_iters, patience counts from
max(last minimum, N), and the cap is N + max_iters. Log lines carry "phase": "pretrain" | "train".

Files in the run directory (names: segbench.rundir): log.jsonl (one JSON line per validation), training_state.pt
(everything needed to continue exactly: model, optimiser, best parameters, early-stopping state, iteration, RNG and
sampler states; written atomically, read with weights_only=True).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pairgen.core import distributed
from pairgen.core.jsonlog import trim_log
from pairgen.core.torchio import load_state, save_state
from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted, StopRequest
from pairgen.shards import ShardSet
from segbench import graphed
from segbench.metrics import ConfusionMatrix, dice, ignores_void
from segbench.mixing import MixedBatches, RealSource, uint8_to_model
from segbench.presets import SegConfig
from segbench.rundir import RunDir
from segbench.step import (autocast_for, make_optimizer, memory_format, prepare_model, row_weights,
                           segmentation_loss, train_step)

# a full training state of the Cityscapes net is ~250 MB: save it at a validation point at most this often
# (and always when training ends); a crash loses at most this much training time
CHECKPOINT_SECONDS = 60.0


class EarlyStopping:
    """Pure bookkeeping of section 4.2's rule. Iterations count completed optimiser steps (1, 2, …)."""

    def __init__(self, min_iters: int, patience: int, start: int = 0) -> None:
        self.min_iters, self.patience, self.start = int(min_iters), int(patience), int(start)
        self.best_loss = math.inf   # the best criterion (lower is better); named so in saved training states
        self.best_iteration = 0     # before any minimum, patience counts from the start
        self.best_figures: dict[str, float] = {}   # what was measured at the best point (val_loss, val_score)

    def update(self, iteration: int, value: float, figures: dict[str, float] | None = None) -> bool:
        """Record a validation criterion (lower is better: the loss, or minus the score) and the figures measured
        with it; True when it is a new (strict) minimum. NaN never improves."""
        if value < self.best_loss:
            self.best_loss, self.best_iteration = float(value), int(iteration)
            self.best_figures = dict(figures or {})
            return True
        return False

    def should_stop(self, iteration: int) -> bool:
        """At least min_iters done and patience iterations passed since the last minimum, both counted from `start`
        (the end of synthetic pre-training: a minimum before it starts no patience)."""
        return (iteration - self.start >= self.min_iters
                and iteration - max(self.best_iteration, self.start) >= self.patience)

    def state_dict(self) -> dict[str, Any]:
        return {"min_iters": self.min_iters, "patience": self.patience, "start": self.start,
                "best_loss": self.best_loss, "best_iteration": self.best_iteration,
                "best_figures": dict(self.best_figures)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.min_iters, self.patience = int(state["min_iters"]), int(state["patience"])
        self.start = int(state.get("start", 0))
        self.best_loss, self.best_iteration = float(state["best_loss"]), int(state["best_iteration"])
        self.best_figures = dict(state.get("best_figures", {}))


@torch.no_grad()
def validate(model: torch.nn.Module, val: RealSource, batch_size: int, amp: bool,
             ignore_void: bool = False) -> tuple[float, float]:
    """(mean per-pixel loss, every pixel weighing the same; score) over the whole validation set at the training
    resolution.

    score in [0, 1]: one logit, the mean over images of the foreground Dice (logit > 0 vs mask > 0; both empty
    → 1); several, the mIoU over classes 1… of the pooled confusion matrix (argmax; `ignore_void`: ground-truth
    class-0 pixels dropped, as the evaluation does on road scenes). NaN when no class is defined."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=val.device)
    dices: list[float] = []
    confusion: torch.Tensor | None = None
    for start in range(0, len(val), batch_size):
        images = uint8_to_model(val.images[start:start + batch_size].to(val.device, non_blocking=True))
        masks = val.masks[start:start + batch_size].to(val.device, non_blocking=True).long()
        images = images.contiguous(memory_format=memory_format())
        with autocast_for(val.device, amp):
            logits = model(images)
        total += segmentation_loss(logits, masks, reduction="sum").double()
        classes = logits.shape[1]
        if classes == 1:
            predicted, truth = (logits[:, 0] > 0).cpu().numpy(), (masks > 0).cpu().numpy()
            dices.extend(dice(p, t) for p, t in zip(predicted, truth))
        else:
            counts = torch.bincount((masks * classes + logits.argmax(1)).flatten(), minlength=classes * classes)
            counts = counts.reshape(classes, classes)
            confusion = counts if confusion is None else confusion + counts
    model.train()
    pixels = len(val) * val.shape[0] * val.shape[1]
    if confusion is None:
        score = sum(dices) / len(dices) if dices else math.nan
    else:
        matrix = ConfusionMatrix([str(c) for c in range(confusion.shape[0])])
        matrix.matrix = confusion.cpu().numpy().astype("int64")
        score = matrix.miou(ignore_void_gt=ignore_void)
    return float(total.item() / pixels), float(score)


def _best(stopper: EarlyStopping, name: str) -> float:
    """A figure at the selected point; a state saved before select_by existed knows only its loss."""
    if name in stopper.best_figures:
        return stopper.best_figures[name]
    return stopper.best_loss if name == "val_loss" else math.nan


def _rank_rows(real: int, synth: int, batches: MixedBatches, world: int) -> torch.Tensor | None:
    """This rank's rows of the global batch (its `real` real, then its `synth` synthetic rows per rank), None for
    a single process."""
    if world == 1:
        return None
    if (batches.real_per_batch, batches.synth_per_batch) != (real * world, synth * world):
        raise ValueError(f"under {world} processes the batches must hold {real}·{world} real + {synth}·{world} "
                         f"synthetic rows, not {batches.real_per_batch} + {batches.synth_per_batch}")
    rank = distributed.rank()
    index = list(range(rank * real, (rank + 1) * real))
    index += [real * world + i for i in range(rank * synth, (rank + 1) * synth)]
    return torch.tensor(index, device=batches.device)


def train_segmentation(config: SegConfig, model: torch.nn.Module, batches: MixedBatches, val_set: ShardSet,
                       run_dir: Path, resume: bool = False, show_progress: bool = True,
                       checkpoint_seconds: float = CHECKPOINT_SECONDS,
                       stop: StopRequest | None = None,
                       pretrain_batches: MixedBatches | None = None) -> dict[str, Any]:
    """Train `model` on `batches` with early stopping on `val_set`'s loss; leaves the best parameters in `model`.

    Returns {'iterations', 'best_iteration', 'best_val_loss', 'best_val_score', 'wall_s', 'stopped_early'}
    (iterations include the pre-training's; the figures are those at the selected point, config.select_by).
    `pretrain_batches`: K + M synthetic rows per batch for the first config.pretrain_iters iterations (module
    docstring); required when pretrain_iters > 0.
    `resume`: continue from run_dir/training_state.pt when present (else start fresh).
    `checkpoint_seconds`: minimum time between training-state saves (0: at every validation; tests).
    `stop` (pairgen.core.interrupt): once requested, the current step finishes, the training state is saved and
    Interrupted is raised.
    """
    from segbench.augment import augment_batch, parse_spec

    for name in ("max_iters", "val_every", "eval_batch"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, not {getattr(config, name)}")
    pretrain_iters = int(config.pretrain_iters)
    if pretrain_iters and pretrain_batches is None:
        raise ValueError("config.pretrain_iters > 0 needs pretrain_batches")
    total_iters = pretrain_iters + config.max_iters
    run_dir = Path(run_dir)
    # under torchrun: `batches` yields the global batch (world × B rows, K·world real then M·world synthetic);
    # every rank augments all of it with the same generator (so the state rank 0 saves fits every rank) and
    # trains DDP on its own K + M rows; rank 0 validates, logs and saves, and shares the validation loss
    rank, world = distributed.init_from_env()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = batches.device
    prepare_model(model, device)
    optimizer = make_optimizer(model, config)
    trained = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    spec = parse_spec(config.aug)
    # augmentation draws on the training device (no per-pixel noise copies); its state is checkpointed
    aug_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    stopper = EarlyStopping(config.min_iters, config.patience, start=pretrain_iters)
    ignore_void = ignores_void(config.dataset)   # as the evaluation scores the run
    val = RealSource(val_set, device)
    state_path, log_path = RunDir(run_dir).training_state, RunDir(run_dir).log

    iteration, elapsed, finished, best_state, running = 0, 0.0, False, None, (0.0, 0)
    if resume and state_path.is_file():
        try:
            state = load_state(state_path, "training state")
        except UserError as exc:
            raise UserError(f"{exc}; delete it to restart this run from scratch") from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stopper.load_state_dict(state["early_stopping"])
        batches.load_state_dict(state["batches"])
        if pretrain_batches is not None:
            pretrain_batches.load_state_dict(state["pretrain_batches"])
        aug_generator.set_state(state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        best_state = {k: v.to(device) for k, v in state["best_model"].items()} if state["best_model"] else None
        iteration, elapsed, finished = int(state["iteration"]), float(state["wall_s"]), bool(state["finished"])
        running = state.get("running", (0.0, 0))   # the train loss since the last validation (an interrupt)
        if rank == 0:
            trim_log(log_path, "iteration", iteration)
            if show_progress:
                print(f"segbench run: resuming {run_dir} at iteration {iteration}", file=sys.stderr)
    elif rank == 0:
        log_path.write_text("")

    def snapshot(done: bool) -> None:
        save_state(state_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "best_model": best_state or {}, "early_stopping": stopper.state_dict(),
            "batches": batches.state_dict(),
            "pretrain_batches": pretrain_batches.state_dict() if pretrain_batches is not None else {},
            "aug_generator": aug_generator.get_state(),
            "torch_rng": torch.get_rng_state(), "iteration": iteration,
            "running": (float(running_loss.item()), running_steps),
            "wall_s": elapsed + time.monotonic() - started, "finished": done})

    started = last_save = time.monotonic()
    running_loss, running_steps = torch.tensor(float(running[0]), device=device), int(running[1])
    model.train()
    rows = _rank_rows(config.real_per_batch, config.synth_per_batch, batches, world)
    pretrain_rows = None if pretrain_batches is None else _rank_rows(0, config.batch_size, pretrain_batches, world)
    # SegConfig.cuda_graph: the same step replayed as one CUDA graph (built after any resume: the graph must
    # capture the parameter and Adam state tensors the rest of training uses); validation and checkpoints read
    # and write those tensors in place, so nothing else changes
    if graphed.use_graph(config.cuda_graph, device, world):
        step = graphed.GraphedTrainStep(model, optimizer, config.amp)
    else:
        def step(images: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
            return train_step(trained, optimizer, images, masks, config.amp, weights=weights)
    with tqdm(total=total_iters, initial=iteration, desc=f"train {run_dir.name}", unit="it",
              dynamic_ncols=True, disable=not show_progress or rank != 0) as bar, \
            (open(log_path, "a") if rank == 0 else contextlib.nullcontext()) as log:
        while not finished and iteration < total_iters:
            if stop is not None and stop.requested_by_any(world):   # the previous step (and validation) is done
                if rank == 0:
                    snapshot(False)
                raise Interrupted(f"{stop.signal_name or 'stop requested'} at iteration {iteration}: training "
                                  f"state {state_path} written")
            pretraining = iteration < pretrain_iters
            images, masks, is_synthetic = next(pretrain_batches if pretraining else batches)
            if not spec.is_identity:
                images, masks = augment_batch(images, masks, spec, aug_generator)
            index = pretrain_rows if pretraining else rows
            if index is not None:
                images, masks, is_synthetic = images[index], masks[index], is_synthetic[index]
            # None for synth_weight 1 (the plain mean); else a tensor every step (all W in pre-training: the mean)
            loss = step(images, masks, row_weights(is_synthetic, config.synth_weight))
            iteration += 1
            running_loss += loss
            running_steps += 1
            bar.update(1)
            if iteration % config.val_every and iteration not in (pretrain_iters, total_iters):
                continue
            # validation point: early-stopping bookkeeping, log line, maybe a training-state checkpoint
            figures = (validate(model, val, config.eval_batch, config.amp, ignore_void) if rank == 0 else None)
            val_loss, val_score = distributed.broadcast_object(figures)   # every rank takes the same decision
            criterion = val_loss if config.select_by == "loss" else -val_score
            if stopper.update(iteration, criterion, {"val_loss": val_loss, "val_score": val_score}) and rank == 0:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            train_loss = float(distributed.all_mean(running_loss).item() / running_steps)
            running_loss.zero_()
            running_steps = 0
            finished = stopper.should_stop(iteration) or iteration >= total_iters   # never within pre-training
            if rank != 0:
                continue
            record = {"iteration": iteration, "phase": "pretrain" if pretraining else "train",
                      "train_loss": train_loss, "val_loss": val_loss, "val_score": val_score,
                      "best_val_loss": _best(stopper, "val_loss"), "best_iteration": stopper.best_iteration,
                      "wall_s": round(elapsed + time.monotonic() - started, 3)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", score=f"{val_score:.3f}",
                            best=stopper.best_iteration)
            if finished or time.monotonic() - last_save >= checkpoint_seconds:
                snapshot(finished)
                last_save = time.monotonic()

    if best_state is not None:   # None only when no validation loss was ever finite
        model.load_state_dict(best_state)
    return {"iterations": iteration, "best_iteration": stopper.best_iteration,
            "best_val_loss": _best(stopper, "val_loss"), "best_val_score": _best(stopper, "val_score"),
            "wall_s": round(elapsed + time.monotonic() - started, 3),
            "stopped_early": iteration < total_iters}
