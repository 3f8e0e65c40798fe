"""The one WGAN-GP training loop over image+mask pairs (thesis algorithm 4), with exact resume.

A run directory gets config.json (before any work), log.jsonl, curves.png (pairgen.core.curves),
samples/step-XXXXXXX.png and checkpoints/ckpt-XXXXXXX.pt. log.jsonl holds one JSON object per line, each with
an "event":
  tick    step, critic_loss, wasserstein, gp, generator_loss (means over the tick), it_per_s (this tick),
          wall_s (seconds since this train() call started), skipped (steps skipped in this tick),
          diversity (see sample_diversity), collapse_suspected (diversity < COLLAPSE_THRESHOLD)
  skip    step (the iteration in progress), phase ('critic'|'generator'), term ('wasserstein'|'gp'|'loss'|'grad')
  resume  step, checkpoint
  score   step, kimg and the injected scorer's figures (with config.score_every: every score_every iterations and
          at the end), e.g. alignment, fd, kid, kid_std, precision, recall (segbench.judge.TrainingScorer)
  best    the same fields, when a score is the best so far (lowest fd); checkpoints/best.pt then holds that step
Scoring (`train(scorer=...)`): pairgen never imports segbench; the CLI injects a callable that maps the sampled
generator (the weight average when on; eval mode, no grad) to figures. It must draw nothing from the global RNGs.
Determinism: the global torch/numpy RNGs (z, ε of the penalty) and the data order (a seeded permutation per epoch
plus a position) are checkpointed, so on CPU N steps straight equal N/2 steps + resume + N/2 steps exactly.

Several processes (`torchrun --nproc_per_node N -m pairgen train …`, pairgen.core.distributed): one seeded order of
global batches of N × batch_size pairs, rank r training on rows [r·B, (r+1)·B), so the effective batch is
N × batch_size (the learning rate is not rescaled); gradients (and the finite check) are averaged over ranks after
every backward, so weights stay identical; each rank draws its own z and ε; rank 0 alone writes config, log,
sheets and checkpoints, which also hold every rank's RNG state (rng_ranks), so a resume with the same N is exact.
The generator's batch-norm running statistics saved are rank 0's (each rank normalises its own batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pairgen.core import distributed
from pairgen.core.torchio import capture_rng, restore_rng
from pairgen.checkpoint import (FORMAT, VERSION, best_checkpoint_path, checkpoint_config, checkpoint_path,
                                load_checkpoint, newest_checkpoint, save_checkpoint)
from pairgen.core.curves import GAN_PANELS, QUALITY_PANELS, plot_curves
from pairgen.core.jsonlog import append_record, trim_log
from pairgen.ema import EMA, beta_from_half_life
from pairgen.core.devices import resolve_device
from pairgen.core.errors import UserError, writing
from pairgen.core.interrupt import Interrupted, StopRequest
from pairgen.networks import build_critic, build_generator
from pairgen.pairdata import EpochSampler, PairData
from pairgen.presets import GANConfig, resolve_mask_encoding, validate
from pairgen.sheets import sample_sheet
from pairgen.step import GanIteration, StepOutcome, make_critic_backward

MAX_BAD_STEPS = 10          # consecutive non-finite steps of one phase (critic or generator) before giving up
SHEET_SAMPLES = 16
# mean per-element std of G's outputs ([-1, 1]) over the sheet's fixed latents; ~0.15-0.3 at initialisation, 0 for
# a generator that ignores z. Below this (about one grey level of 255) the generator has collapsed to one output.
COLLAPSE_THRESHOLD = 0.01
BEST_KEY = "fd"   # checkpoints/best.pt: the lowest Fréchet distance in the judge's features (docs/DECISIONS.md)

# the sampled generator (eval mode, no grad) → figures such as {'alignment': …, 'fd': …}; rank 0 only
Scorer = Callable[[nn.Module], dict[str, float]]
# (resolved config, real shard parent with train/ val/) → a Scorer, built once before training starts
ScorerFactory = Callable[[GANConfig, Path], Scorer]


class TrainingDiverged(UserError):
    """Critic or generator steps were non-finite MAX_BAD_STEPS times in a row."""


def _make_optimizer(module: nn.Module, config: GANConfig, device: torch.device) -> torch.optim.Adam:
    # fused Adam (CUDA and CPU): one kernel over all parameters, whose found_inf skips a non-finite step on the
    # device (pairgen.step); same state_dict as the for-loop Adam (old checkpoints load)
    return torch.optim.Adam(module.parameters(), lr=config.lr, betas=tuple(config.betas), fused=True)


def use_cuda_graph(config: GANConfig, device: torch.device, world: int) -> bool:
    """Whether to replay iterations as a CUDA graph (pairgen.step): asked for, on CUDA, one process (ranks
    all-reduce between steps) and the eager critic step (not --compile)."""
    return config.cuda_graph and device.type == "cuda" and world == 1 and not config.compile


def _restore_rank_rng(state: dict[str, Any], rank: int, world: int, seed: int) -> None:
    """This rank's RNG streams from a checkpoint: its own saved state when the world size matches, else rank 0's
    (rank 0) or a stream derived from (seed, rank, step) (other ranks)."""
    saved = state.get("rng_ranks") or []
    if len(saved) == world:
        restore_rng(saved[rank])
    elif rank == 0:
        restore_rng(state["rng"])
    else:
        distributed.seed_rank(seed, rank, int(state["step"]))


def _check_resumable(saved: GANConfig, config: GANConfig, path: Path) -> None:
    """Only GANConfig.EXECUTION_FIELDS (how long and how it runs) may differ from the checkpoint's config."""
    if differ := saved.differences(config):
        raise UserError(f"{path}: cannot resume, the checkpoint was trained with different {', '.join(differ)}")


@torch.no_grad()
def sample_diversity(generator: nn.Module, z: torch.Tensor) -> float:
    """Mean over output elements of the std across samples of G(z) (eval mode, fp32; training mode restored).

    `z` is a fixed latent grid, so the value tracks the generator alone; no global RNG is drawn (exact resume).
    """
    was_training = generator.training
    generator.eval()
    try:
        return float(generator(z).float().std(dim=0, unbiased=False).mean())
    finally:
        generator.train(was_training)


def _tick_means(sums: dict[str, list[float]], device: torch.device) -> dict[str, float | None]:
    """Mean (float32) of each term over the tick's good steps (None when every step was skipped), averaged over
    ranks (on `device`: the collective's backend may need it there)."""
    local = torch.stack([torch.tensor(v).mean() if v else torch.tensor(float("nan")) for v in sums.values()])
    values = distributed.all_mean(local.to(device)).tolist()
    return {k: (None if v != v else float(v)) for k, v in zip(sums, values)}


def is_better(figures: dict[str, float], best: dict[str, Any] | None) -> bool:
    """Whether `figures` beat the best so far: a finite BEST_KEY strictly below it (ties keep the earlier step)."""
    value = figures.get(BEST_KEY)
    return isinstance(value, (int, float)) and math.isfinite(value) and (best is None or value < best[BEST_KEY])


@torch.no_grad()
def _score(scorer: Scorer, module: nn.Module) -> dict[str, float]:
    """The scorer's figures for `module` in eval mode (training mode restored), as plain floats."""
    was_training = module.training
    module.eval()
    try:
        return {k: float(v) for k, v in scorer(module).items()}
    finally:
        module.train(was_training)


def train(config: GANConfig, run_dir: Path, real_dir: Path, resume: bool = False, show_progress: bool = True,
          stop: StopRequest | None = None, scorer: Scorer | None = None) -> Path:
    """Train (or with `resume`, continue) a pair WGAN-GP on real_dir/train; returns the final checkpoint path.

    `stop` (pairgen.core.interrupt): once it is requested, the current iteration finishes, a checkpoint is written
    and Interrupted is raised. `scorer`: needed on rank 0 when config.score_every > 0 (module docstring).
    """
    validate(config)
    # under torchrun: every rank trains on its own batch_size rows of one global batch (effective batch =
    # world × batch_size), gradients are averaged after each backward, and rank 0 alone writes files
    rank, world = distributed.init_from_env()
    if config.score_every and scorer is None and rank == 0:
        raise ValueError("config.score_every > 0 needs a scorer")
    run_dir, device = Path(run_dir), resolve_device(config.device)
    data = PairData(Path(real_dir) / "train", config, device)
    config = data.config
    torch.manual_seed(config.seed)  # network initialisation; a resume restores the RNG states afterwards
    np.random.seed(config.seed)
    generator, critic = build_generator(config).to(device), build_critic(config).to(device)
    distributed.broadcast_module(generator)
    distributed.broadcast_module(critic)
    if rank:  # own z and ε streams; rank 0 keeps the single-process stream
        distributed.seed_rank(config.seed, rank)
    if device.type == "cuda":
        generator.to(memory_format=torch.channels_last)
        critic.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune conv algorithms once (export pins its own)
    opt_g, opt_d = _make_optimizer(generator, config, device), _make_optimizer(critic, config, device)
    # the generator's weight average (config.ema_kimg: half-life in thousands of images), what sampling uses
    ema = EMA(generator, beta_from_half_life(config.batch_size * world, config.ema_kimg)) if config.ema_kimg else None
    sampled = ema.module if ema is not None else generator
    sampler = EpochSampler(len(data), config.batch_size * world, config.seed)  # the global batch's order
    rows = distributed.rank_slice(config.batch_size)
    sync = distributed.all_reduce_grads if world > 1 else None
    step, last_good = 0, newest_checkpoint(run_dir)
    log_path, best_path = run_dir / "log.jsonl", best_checkpoint_path(run_dir)
    best: dict[str, Any] | None = None   # the best score so far: step, kimg, figures (what best.pt holds)
    if resume:
        if last_good is None:
            raise UserError(f"{run_dir}: nothing to resume (no checkpoints/ckpt-*.pt)")
        state = load_checkpoint(last_good)
        _check_resumable(checkpoint_config(state, last_good), config, last_good)
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if ema is not None:
            ema.module.load_state_dict(state["generator_ema"])
        step = int(state["step"])
        sampler.load(state["data_order"], last_good)
        _restore_rank_rng(state, rank, world, config.seed)
        if rank == 0:
            trim_log(log_path, "step", step)
            append_record(log_path, {"event": "resume", "step": step, "checkpoint": last_good.name})
            if config.score_every and best_path.is_file():   # the file is the truth: compare with what it holds
                best = dict(load_checkpoint(best_path).get("best") or {}) or None
                if best is not None and best["step"] > step:   # its record was trimmed with the redone steps
                    append_record(log_path, {"event": "best", **best})
            if show_progress:
                print(f"pairgen train: resuming {run_dir} at step {step} ({last_good.name})", file=sys.stderr)
    elif last_good is not None:
        raise UserError(f"{run_dir}: already holds checkpoints; resume it or train into a new run directory")
    if rank == 0:
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.json")
    amp = device.type == "cuda" and config.amp
    nets = (generator, critic)

    def save(at_step: int, path: Path | None = None) -> Path:
        """Checkpoint `at_step` to `path` (default: the step's ckpt file); best.pt also records `best`."""
        path = path or checkpoint_path(run_dir, at_step)
        rng_ranks = distributed.gather_objects(capture_rng())  # collective: every rank's z/ε streams
        if rank != 0:
            return path
        try:
            save_checkpoint(path, {
                "format": FORMAT, "version": VERSION, "config": config.to_json(), "step": at_step,
                "generator": generator.state_dict(), "critic": critic.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": capture_rng(),
                "data_order": sampler.state(), "dataset": config.dataset, "fold_id": config.fold_id,
                "class_names": list(config.class_names),
                **({"generator_ema": ema.module.state_dict()} if ema is not None else {}),
                **({"best": best} if path == best_path else {}),
                **({"rng_ranks": rng_ranks, "world_size": world} if world > 1 else {})})
        except ValueError as exc:  # non-finite weights or optimiser state: never saved, the run stops here
            bar.close()
            where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved yet"
            raise TrainingDiverged(f"{exc}; {where}") from None
        return path

    sums: dict[str, list[float]] = {"critic_loss": [], "wasserstein": [], "gp": [], "generator_loss": []}
    # per phase: good generator steps must not hide a critic that fails every step (and vice versa)
    bad_streak, skipped = {"critic": 0, "generator": 0}, 0
    diversity_z = torch.randn(SHEET_SAMPLES, config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    diversity_z = diversity_z.to(device)  # the sample sheets' latents: the number describes what the sheets show
    started = tick_started = time.perf_counter()
    tick_first_step = step
    first_step, saved_at = step, time.monotonic()
    if show_progress and rank == 0:
        print(f"pairgen train: {config.dataset} ({config.fold_id}), preset {config.preset}, {config.iters} "
              f"iterations, run directory {run_dir}", file=sys.stderr)
    bar = tqdm(total=config.iters, initial=step, disable=not show_progress or rank != 0, unit="it", dynamic_ncols=True,
               desc=f"train {config.dataset} {config.preset}")

    def record_bad(phase: str, term: str, snapshot: list[torch.Tensor]) -> None:
        nonlocal skipped
        bad_streak[phase] += 1
        skipped += 1
        if rank == 0:
            append_record(log_path, {"event": "skip", "step": step + 1, "phase": phase, "term": term})
        buffers = [b for net in nets for b in net.buffers()]
        if not all(bool(torch.isfinite(b).all()) for b in buffers if b.is_floating_point()):
            for buffer, saved in zip(buffers, snapshot):  # a non-finite forward also poisoned BN statistics
                buffer.copy_(saved)
        if bad_streak[phase] >= MAX_BAD_STEPS:
            bar.close()
            where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved yet"
            raise TrainingDiverged(f"{run_dir}: training diverged, {MAX_BAD_STEPS} consecutive non-finite "
                                   f"{phase} steps (last term: {term}) at iteration {step + 1}; {where}")

    def log_tick(means: dict[str, float | None], now: float) -> None:
        """Rank 0: the tick line, the collapse warning and the progress bar's figures."""
        diversity = sample_diversity(sampled, diversity_z)
        collapsed = not diversity >= COLLAPSE_THRESHOLD   # a NaN diversity counts as collapsed too
        append_record(log_path, {"event": "tick", "step": step, "kimg": step * config.batch_size * world / 1000,
                                 **means,
                               "it_per_s": (step - tick_first_step) / max(now - tick_started, 1e-9),
                               "wall_s": now - started, "skipped": skipped,
                               "diversity": diversity, "collapse_suspected": collapsed})
        if collapsed:
            bar.write(f"pairgen train: step {step}: generator outputs barely differ across latents "
                      f"(diversity {diversity:.2g} < {COLLAPSE_THRESHOLD}); mode collapse suspected",
                      file=sys.stderr)
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.items() if v is not None}, refresh=False)

    # the one iteration body (pairgen.step), eager or replayed as a CUDA graph; built after any resume (a graph
    # owns the parameter and Adam state tensors it captured)
    iteration = GanIteration(generator, critic, opt_g, opt_d, data, config, device, amp,
                             make_critic_backward(critic, opt_d, config, amp), sync,
                             graph=use_cuda_graph(config, device, world))

    def draw_curves() -> None:
        plot_curves(log_path, run_dir / "curves.png", "step", GAN_PANELS,
                    f"pairgen train: {config.dataset} {config.preset} ({config.fold_id}), step {step}",
                    mark_x=best["step"] if best else None, optional=QUALITY_PANELS)

    def score_now() -> bool:
        """Rank 0: score the sampled generator, log it; True when it is the best so far (best.pt is due)."""
        nonlocal best
        figures = _score(scorer, sampled)
        record = {"step": step, "kimg": step * config.batch_size * world / 1000, **figures}
        append_record(log_path, {"event": "score", **record})
        better = is_better(figures, best)
        if better:
            best = record
            append_record(log_path, {"event": "best", **record})
        draw_curves()
        return better

    def account(outcome: StepOutcome) -> None:
        """A step's terms into the tick's sums, or its skip into the log and the phase's bad streak."""
        if outcome.bad is not None:
            record_bad(outcome.phase, outcome.bad, iteration.snapshot)
            return
        bad_streak[outcome.phase] = 0
        for name, value in outcome.terms.items():
            sums[name].append(value)

    while step < config.iters:
        # S critic steps and the generator step, decided on the device and read back once
        for outcome in iteration.run(torch.stack([sampler.next()[rows] for _ in range(config.critic_steps)])):
            account(outcome)
        if ema is not None:
            ema.update(generator)
        step += 1
        bar.update(1)
        if step % config.tick_every == 0 or step == config.iters:
            now = time.perf_counter()
            means = _tick_means(sums, device)  # collective under torchrun: the mean over ranks
            if rank == 0:
                log_tick(means, now)
            sums = {k: [] for k in sums}
            tick_started, tick_first_step, skipped = now, step, 0
        elif step == first_step + 1:   # the bar shows losses from the first iteration on (not logged)
            means = _tick_means(sums, device)
            bar.set_postfix({k: f"{v:.3g}" for k, v in means.items() if v is not None})
        if rank == 0 and (step % config.sample_every == 0 or step == config.iters):
            sample_sheet(sampled, config, SHEET_SAMPLES, config.seed,
                         run_dir / "samples" / f"step-{step:07d}.png", device)
            draw_curves()
        if config.score_every and (step % config.score_every == 0 or step == config.iters):
            # rank 0 scores; every rank then takes part in best.pt's save (it gathers all RNG states)
            if distributed.broadcast_object(rank == 0 and score_now()):
                save(step, best_path)
        # step-based, and at the first tick `checkpoint_seconds` after the last save (an early first checkpoint)
        due = step % config.tick_every == 0 and distributed.broadcast_object(  # rank 0's clock decides for all
            time.monotonic() - saved_at >= config.checkpoint_seconds)
        if step % config.checkpoint_every == 0 or step == config.iters or due:
            last_good, saved_at = save(step), time.monotonic()
        if stop is not None and stop.requested_by_any(world):
            if last_good != checkpoint_path(run_dir, step):
                last_good = save(step)
            bar.close()
            raise Interrupted(f"{stop.signal_name or 'stop requested'} at step {step}: checkpoint {last_good} "
                              "written")
    bar.close()
    if last_good is None:  # unreachable: the loop always saves at step == iters
        last_good = save(step)
    if best is not None and show_progress and rank == 0:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in best.items() if k not in ("step", "kimg"))
        print(f"pairgen train: best score at step {best['step']} ({figures}): {best_path}", file=sys.stderr)
    return last_good


def resolve_training(config: GANConfig, resume_run: Path | None = None) -> GANConfig:
    """The config `pairgen train` runs: with `resume_run`, that run's own config.json (`config` is ignored);
    otherwise `config` with the dataset's image channels and class names filled in and mask_encoding 'auto'
    resolved by them (pairgen.presets.resolve_mask_encoding), validated. Reads no images."""
    from pairgen.prepare import dataset_info  # lazy: adapters are not needed to train

    if resume_run is not None:
        return GANConfig.load(Path(resume_run) / "config.json")
    channels, class_names = dataset_info(config.dataset, config.root, config.structures)
    config = dataclasses.replace(config, image_channels=int(channels), class_names=tuple(class_names))
    config = resolve_mask_encoding(config)
    validate(config)
    return config


def launch(config: GANConfig, workspace: Path, resume_run: Path | None = None,
           make_scorer: ScorerFactory | None = None) -> Path:
    """Prepare the real shards if needed, create a numbered run dir and train; returns the run dir.

    With `resume_run`, the run's own config.json is used (the `config` argument is ignored) and training
    continues from its newest checkpoint. `make_scorer`: with config.score_every > 0, rank 0 builds the scorer
    from (config, real shard parent) once, before training starts (pairgen/cli.py wires segbench's in).
    """
    from contextlib import nullcontext

    from pairgen.prepare import prepare  # lazy: adapters and image I/O are not needed to train
    from pairgen.core.locks import lock
    from pairgen.core.workspace import new_numbered_dir, real_dir

    workspace = Path(workspace)
    rank, _ = distributed.init_from_env()  # under torchrun, rank 0 alone prepares and numbers the run dir
    config = resolve_training(config, resume_run)
    if resume_run is not None:
        run_dir = Path(resume_run)
        real = real_dir(workspace, config.dataset, config.fold_id, config.height, config.width)
        if rank == 0 and not (real / "train" / "manifest.json").is_file():
            real = prepare(config.dataset, config.root, config.fold, config.height, config.width,
                           structures=config.structures, workspace=workspace, train_fraction=config.train_fraction)
        real = distributed.broadcast_object(real)
        with lock(run_dir) if rank == 0 else nullcontext(), _keeping_work(run_dir, workspace) as stop:
            train(config, run_dir, real, resume=True, stop=stop, scorer=_scorer(make_scorer, config, real, rank))
        return run_dir
    real = run_dir = None
    if rank == 0:
        real = prepare(config.dataset, config.root, config.fold, config.height, config.width,
                       structures=config.structures, workspace=workspace, train_fraction=config.train_fraction)
        run_dir = new_numbered_dir(workspace / config.dataset / config.fold_id / "gan", config.preset)
    real, run_dir = distributed.broadcast_object((real, run_dir))
    with lock(run_dir) if rank == 0 else nullcontext(), _keeping_work(run_dir, workspace) as stop:
        train(config, run_dir, real, stop=stop, scorer=_scorer(make_scorer, config, real, rank))
    return run_dir


def _scorer(make_scorer: ScorerFactory | None, config: GANConfig, real: Path, rank: int) -> Scorer | None:
    """Rank 0's scorer when scoring is on (built before training starts); None otherwise."""
    if not config.score_every or rank != 0:
        return None
    if make_scorer is None:
        raise UserError("--score-every needs a pair-quality judge; train through `pairgen train`")
    return make_scorer(config, Path(real))


@contextlib.contextmanager
def _keeping_work(run_dir: Path, workspace: Path) -> Iterator[StopRequest]:
    """The first Ctrl-C (or SIGTERM) stops training after a checkpoint; Interrupted then names the resume command."""
    from pairgen.core.workspace import workspace_root

    ws_flag = "" if workspace_root(None).resolve() == Path(workspace).resolve() else f" --workspace {workspace}"
    with StopRequest() as stop:
        try:
            yield stop
        except Interrupted as exc:
            raise Interrupted(f"{exc}; resume with: pairgen train --resume {run_dir}{ws_flag}") from None
