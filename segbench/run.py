"""`segbench run`: resolve the data, refuse leaks, train one U-Net, evaluate it on the real test split.

Resolution when flags are absent (section 4.2's setup, chained through the workspace layout):
  synthetic data  --synth-shards, else the newest complete export (of --dataset / the fold when given);
                  with --synth-source generator: --checkpoint, else the newest checkpoint of the newest GAN run
  dataset, fold   from the synthetic data's provenance (trained_dataset / trained_fold, or the checkpoint's)
  real data       --real-shards, else <ws>/<dataset>/<fold>/real/<H>x<W>/ at the synthetic data's resolution
                  (M = 0 without synthetic data: the newest resolution present for that dataset and fold)

Leak refusal: "we exclusively use only the specific GAN that was trained on the same real training data set"
(section 4.2). Synthetic data whose generator saw another dataset or another fold's training split may have seen
this fold's test images, so it is refused, as are real/synthetic pairs that differ in resolution, channels or
classes (the mix would be meaningless).

Resolve once: flags + preset + the data plan become one frozen SegConfig (`resolve_config` for the CLI, `resolve`
for a config built in code) that records the dataset, fold and absolute data paths; `execute` saves it as
config.json and reads its data from those paths only. A resume reads config.json back (`command_config`); only
SegConfig.EXECUTION_FIELDS may differ from it (`check_same_run`).

Run directory (<ws>/<dataset>/<fold>/seg/<NNNNN>-<K>-<M>-<Aug|NoAug>/ or --out): its files are described and named
in segbench.rundir.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pairgen.core import distributed
from pairgen.core.devices import resolve_device
from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted, StopRequest
from pairgen.core.workspace import workspace_flag
from pairgen.shards import ShardSet, load_shards
from segbench.predict import evaluate_test
from segbench.presets import SegConfig, make_config
from segbench.rundir import RunDir, Summary

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """Where one run's data lives, and the dataset / fold it belongs to."""

    dataset: str
    fold_id: str
    real_parent: Path                # holds train/ val/ test/ real shard directories
    synth_dir: Path | None = None    # synthetic shards (synth_source 'shards', M > 0)
    checkpoint: Path | None = None   # generator checkpoint (synth_source 'generator', M > 0)


def fold_label(fold: Any) -> str:
    """A fold attribute (1 or 'fold1' or 'fold1-frac10') as a fold id string."""
    from pairgen.core.workspace import fold_id

    return fold_id(int(fold)) if isinstance(fold, (int, np.integer)) else str(fold)


def _shard_facts(directory: Path) -> dict[str, Any]:
    """Manifest attributes of a shard directory, completed from its first shard file (height, width, …)."""
    from pairgen.shards import open_shard, read_attrs, read_manifest, shard_path

    manifest = read_manifest(directory)
    facts = dict(manifest.attrs)
    if manifest.shards:
        with open_shard(shard_path(Path(directory), manifest.shards[0].file)) as h5:
            for key, value in read_attrs(h5).items():
                facts.setdefault(key, value)
    return facts


def _checkpoint_facts(path: Path) -> tuple[Path, Any, dict[str, Any]]:
    """(checkpoint file, GANConfig, {'dataset', 'fold_id'}) of a checkpoint file or GAN run directory."""
    from pairgen.checkpoint import checkpoint_config, checkpoint_file, load_checkpoint

    path = checkpoint_file(path)
    state = load_checkpoint(path)
    return path, checkpoint_config(state, path), {"dataset": state["dataset"], "fold_id": state["fold_id"]}


def _refuse_leak(source: Path, trained_dataset: Any, trained_fold: Any, dataset: str, fold_id: str) -> None:
    if trained_dataset is None or trained_fold is None:
        raise UserError(f"{source}: does not record the dataset/fold its generator was trained on; refusing it "
                        "(it could have seen this fold's test images)")
    if trained_dataset != dataset:
        raise UserError(f"{source}: generator trained on dataset {trained_dataset!r}, this run uses {dataset!r}")
    if fold_label(trained_fold) != fold_id:
        raise UserError(f"{source}: generator trained on {trained_dataset}/{fold_label(trained_fold)}, this run "
                        f"uses {fold_id}; another fold's training images include this fold's test images (leak). "
                        f"Use the GAN trained on {fold_id}")


def _find_real(ws: Path, dataset: str | None, fold_id: str | None, shape: tuple[int, int] | None) -> Path:
    from pairgen.core.workspace import real_dir

    if dataset and fold_id and shape:
        return real_dir(ws, dataset, fold_id, *shape)
    pattern = f"{dataset or '*'}/{fold_id or '*'}/real/{f'{shape[0]}x{shape[1]}' if shape else '*x*'}"
    found = [p for p in Path(ws).glob(pattern) if (p / "train" / "manifest.json").is_file()]
    if not found:
        raise UserError(f"no real shards in {ws}/{pattern}; run `pairgen prepare` (or `pairgen train`) first, "
                        "or pass --real-shards DIR holding train/ val/ test/")
    datasets = sorted({p.parents[2].name for p in found})
    folds = sorted({p.parents[1].name for p in found})
    if len(datasets) > 1:
        raise UserError(f"real shards of several datasets in {ws} ({', '.join(datasets)}); pass --dataset")
    if len(folds) > 1:
        raise UserError(f"real shards of several folds of {datasets[0]} in {ws} ({', '.join(folds)}); pass --fold")
    return max(found, key=lambda p: (p / "train" / "manifest.json").stat().st_mtime)


def plan_data(config: SegConfig, ws: Path) -> DataPlan:
    """Resolve and provenance-check a run's data (module docstring). Empty dataset/fold_id = take from data."""
    from pairgen.core.workspace import newest_export, newest_gan_run

    dataset, fold_id = config.dataset or None, config.fold_id or None
    synth_dir = checkpoint = shape = None
    if config.uses_synthetic and config.synth_source == "shards":
        synth_dir = Path(config.synth_shards) if config.synth_shards else newest_export(ws, dataset, fold_id)
        facts = _shard_facts(synth_dir)
        if facts.get("kind") != "synthetic":
            raise UserError(f"--synth-shards {synth_dir}: kind={facts.get('kind')!r} shards, not synthetic ones")
        dataset = dataset or facts.get("trained_dataset")
        fold_id = fold_id or (fold_label(facts["trained_fold"]) if facts.get("trained_fold") is not None else None)
        _refuse_leak(synth_dir, facts.get("trained_dataset"), facts.get("trained_fold"), dataset, fold_id)
        shape = (int(facts["height"]), int(facts["width"]))
    elif config.uses_synthetic and config.synth_source == "generator":
        given = Path(config.checkpoint) if config.checkpoint else newest_gan_run(ws, dataset, fold_id)
        checkpoint, gan_config, meta = _checkpoint_facts(given)
        dataset, fold_id = dataset or meta["dataset"], fold_id or meta["fold_id"]
        _refuse_leak(checkpoint, meta["dataset"], meta["fold_id"], dataset, fold_id)
        shape = (int(gan_config.height), int(gan_config.width))
    elif config.uses_synthetic:
        raise UserError(f"--synth-source must be 'shards' or 'generator', not {config.synth_source!r}")

    real_parent = Path(config.real_shards) if config.real_shards else _find_real(ws, dataset, fold_id, shape)
    for split in SPLITS:
        if not (real_parent / split / "manifest.json").is_file():
            raise UserError(f"{real_parent / split}: no complete real {split} shards (run `pairgen prepare`, or "
                            "pass --real-shards DIR holding train/ val/ test/)")
    facts = _shard_facts(real_parent / "train")
    if dataset and facts.get("dataset") != dataset:
        raise UserError(f"{real_parent / 'train'}: real shards of dataset {facts.get('dataset')!r}, "
                        f"this run uses {dataset!r}")
    real_fold = fold_label(facts.get("fold"))
    fold_id = fold_id or real_fold
    # a low-data subset (fold1-frac10) trains on part of fold1's training split: same val/test images
    if real_fold != fold_id and not fold_id.startswith(real_fold + "-"):
        raise UserError(f"{real_parent / 'train'}: real shards of {real_fold}, this run uses {fold_id}")
    return DataPlan(dataset or str(facts["dataset"]), fold_id, real_parent, synth_dir, checkpoint)


def preset_for(plan: DataPlan) -> str:
    """The preset whose training resolution (pairgen presets) the run's real data has; else pairgen's 'auto'."""
    from pairgen.presets import PRESETS, preset_values, resolve_preset

    facts = _shard_facts(plan.real_parent / "train")
    shape = (int(facts.get("height", 0)), int(facts.get("width", 0)))
    for preset in PRESETS:
        values = preset_values(plan.dataset, preset)
        if (values["height"], values["width"]) == shape:
            return preset
    return resolve_preset("auto")


def run_label(real_per_batch: int, synth_per_batch: int, augmented: bool, synth_use: str = "") -> str:
    """Thesis network ID (table 5.4): e.g. '8-0-Aug', '4-4-NoAug'; with SegConfig.synth_use when not the
    defaults, e.g. '8-8-NoAug-top50-w0.5-pre500'."""
    return "-".join(p for p in (f"{real_per_batch}-{synth_per_batch}", "Aug" if augmented else "NoAug", synth_use)
                    if p)


def _recorded(config: SegConfig, plan: DataPlan) -> SegConfig:
    """`config` with its data plan written in: dataset, fold id and absolute paths (what config.json holds).
    Refuses augmentation the dataset declares unsafe (unless config.allow_unsafe_aug) before any data is loaded."""
    from segbench.augment import parse_spec, refuse_unsafe

    refuse_unsafe(parse_spec(config.aug), plan.dataset, config.allow_unsafe_aug)
    return dataclasses.replace(
        config, dataset=plan.dataset, fold_id=plan.fold_id, real_shards=str(plan.real_parent.resolve()),
        synth_shards=str(plan.synth_dir.resolve()) if plan.synth_dir else config.synth_shards,
        checkpoint=str(plan.checkpoint.resolve()) if plan.checkpoint else config.checkpoint)


def recorded_plan(config: SegConfig) -> DataPlan:
    """The data plan a resolved config records (no search, no checks: those ran when it was resolved)."""
    uses = config.uses_synthetic
    return DataPlan(config.dataset, config.fold_id, Path(str(config.real_shards)),
                    Path(config.synth_shards) if uses and config.synth_source == "shards" else None,
                    Path(config.checkpoint) if uses and config.synth_source == "generator" else None)


def resolve(config: SegConfig, ws: Path) -> SegConfig:
    """`config` with its data resolved and provenance-checked (plan_data) and recorded: the config a run saves."""
    from segbench.augment import parse_spec

    parse_spec(config.aug)   # a bad --aug fails before any data is touched
    return _recorded(config, plan_data(config, Path(ws)))


def resolve_config(ws: Path, preset: str = "auto", dataset: str | None = None, fold: int | None = None,
                   **flags: Any) -> SegConfig:
    """CLI flags → the resolved SegConfig (data planned once; dataset, fold_id and paths filled from the data).

    flags: SegConfig fields (real_per_batch, synth_per_batch, aug, real_shards, synth_shards, synth_source,
    checkpoint, max_iters, min_iters, patience, seed, device, …); None means "preset default".
    preset 'auto': the preset whose training resolution the data has (i.e. the GAN's preset).
    """
    from pairgen.core.workspace import fold_id
    from segbench.augment import parse_spec

    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    probe_fields = ("real_per_batch", "synth_per_batch", "real_shards", "synth_shards", "synth_source", "checkpoint",
                    "pretrain_iters")
    probe = SegConfig(dataset=dataset or "", fold_id="" if fold is None else fold_id(fold),
                      **{k: flags[k] for k in probe_fields if k in flags})
    parse_spec(flags.get("aug", "none"))   # a bad --aug fails before any data is touched
    plan = plan_data(probe, Path(ws))
    config = make_config(plan.dataset, preset_for(plan) if preset == "auto" else preset, fold_id=plan.fold_id,
                         **flags)
    return _recorded(config, plan)


def command_config(ws: Path, out: Path | None = None, resume: bool = False, **options: Any) -> SegConfig:
    """The config `segbench run` executes: with --resume and a run in --out, that run's own config.json with
    today's EXECUTION_FIELDS (device, amp, cuda_graph) from the flags; otherwise resolve_config(ws, **options)."""
    if resume and out is not None and RunDir(out).config.is_file():
        flags = {k: options[k] for k in SegConfig.EXECUTION_FIELDS if options.get(k) is not None}
        return SegConfig.load(RunDir(out).config).with_execution(SegConfig(**flags))
    return resolve_config(ws, **options)


def check_same_run(run_dir: RunDir, config: SegConfig) -> None:
    """UserError unless run_dir's config.json describes the experiment of `config`: only SegConfig's
    EXECUTION_FIELDS (how it runs) and DATA_FIELDS (where the identified data lies) may differ."""
    saved = SegConfig.from_json(run_dir.read_config() or {})
    if differing := saved.differences(config, ignore=SegConfig.DATA_FIELDS):
        raise UserError(f"{run_dir.path} holds another configuration ({', '.join(differing)} differ); "
                        "move it away to rerun")


def _load_real(plan: DataPlan) -> dict[str, ShardSet]:
    # each split's manifest and every shard in it must say real, this split, this dataset (and the train's fold)
    expect = {"kind": "real", "dataset": plan.dataset}
    progress = tqdm(total=len(SPLITS), desc=f"load {plan.dataset} real shards", unit="split", disable=None,
                    leave=False)   # disable=None: a bar on a terminal only
    splits = {"train": load_shards(plan.real_parent / "train", expect={**expect, "split": "train"})}
    progress.update()
    expect["fold"] = splits["train"].attrs.get("fold")
    for split in ("val", "test"):
        splits[split] = load_shards(plan.real_parent / split, expect={**expect, "split": split})
        progress.update()
    progress.close()
    reference = splits["train"]
    for split, shardset in splits.items():
        _check_same_layout(reference, shardset.images.shape[1:], shardset.class_names, shardset.directory)
    return splits


def _check_same_layout(reference: ShardSet, shape: tuple[int, ...], class_names: list[str], where: Any) -> None:
    """Refuse data whose H×W×C or class list differs from the real training shards (naming the file)."""
    expected = tuple(int(v) for v in reference.images.shape[1:])
    if tuple(int(v) for v in shape) != expected:
        raise UserError(f"{where}: pairs are {'×'.join(map(str, shape))} (H×W×C) but the real training shards "
                        f"{reference.directory} are {'×'.join(map(str, expected))}")
    if list(class_names) != reference.class_names:
        raise UserError(f"{where}: classes {list(class_names)} differ from the real training shards' "
                        f"{reference.class_names} ({reference.directory})")


def _check_batch_memory(config: SegConfig, train: ShardSet, device: torch.device) -> None:
    """Refuse K + M so large that one minibatch cannot fit: a lower bound, the float32 input pairs and the first
    level's two feature maps, kept for the backward pass (the deeper levels add about as much again)."""
    from pairgen.core.limits import human, require_memory

    height, width, channels = train.images.shape[1:]
    need = (config.real_per_batch + config.synth_per_batch) * height * width * 4 * (channels + 1 + 2 * config.filters)
    what = f"--real {config.real_per_batch} --synth {config.synth_per_batch} ({height}×{width} pairs)"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            raise UserError(f"{what}: needs about {human(need)} of GPU memory, {human(free)} free")
    else:
        require_memory(need, what)


def _synth_source(config: SegConfig, plan: DataPlan, train: ShardSet, device: torch.device):
    from segbench.mixing import GeneratorSynthSource, ShardSynthSource, filter_synthetic

    if not config.uses_synthetic:
        return None
    if plan.synth_dir is not None:
        synth = filter_synthetic(load_shards(plan.synth_dir, expect={"kind": "synthetic", "trained_dataset": plan.dataset}),
                                 config.synth_filter)
        _check_same_layout(train, synth.images.shape[1:], synth.class_names, plan.synth_dir)
        return ShardSynthSource(synth, device)
    source = GeneratorSynthSource(plan.checkpoint, device)
    _check_same_layout(train, (*source.shape, source.channels), source.class_names, plan.checkpoint)
    return source


def run(config: SegConfig, workspace: Path, out: Path | None = None, resume: bool = False,
        show_progress: bool = True) -> Path:
    """Resolve `config` and `execute` it (programmatic entry: tests, sweeps); returns the run directory.

    resume: continue the run in `out`: its own config.json wins over `config`, except how it executes
    (SegConfig.EXECUTION_FIELDS); a complete run is returned as is; an `out` without config.json starts fresh.
    """
    if resume and out is not None and RunDir(out).config.is_file():
        config = SegConfig.load(RunDir(out).config).with_execution(config)
    else:
        config = resolve(config, Path(workspace))
    return execute(config, workspace, out, resume, show_progress)


def execute(config: SegConfig, workspace: Path, out: Path | None = None, resume: bool = False,
            show_progress: bool = True) -> Path:
    """Train and evaluate one segmentation network of a resolved config (`resolve`); returns the run directory.

    The config is saved as config.json first and read by nothing else: the data comes from the paths it records.
    resume: continue the run in `out` (check_same_run: same experiment); a complete run is returned as is.
    Rank 0 owns `out` (pairgen.core.locks) throughout: a second `run --out`/`--resume` on it is refused. A new
    numbered run directory is unique by construction.
    """
    from contextlib import ExitStack

    from pairgen.core.locks import lock

    rank, _ = distributed.init_from_env()
    with ExitStack() as held:
        if out is not None and rank == 0 and not (resume and RunDir(out).is_complete()):
            held.enter_context(lock(out))
        return _run(config, workspace, out, resume, show_progress, held)


def _run(config: SegConfig, workspace: Path, out: Path | None, resume: bool, show_progress: bool,
         held: Any) -> Path:
    """`execute` inside its lock; `held` (an ExitStack) takes the lock of a new numbered run directory."""
    from pairgen.core.locks import lock
    from segbench.augment import parse_spec
    from segbench.evaluate import write_per_image_csv
    from segbench.mixing import MixedBatches, RealSource
    from pairgen.core.curves import plot_curves
    from pairgen.core.workspace import new_numbered_dir
    from segbench.predict import save_weights
    from segbench.train import train_segmentation
    from segbench.unet import build_unet

    started = time.monotonic()
    # under torchrun: rank 0 numbers and writes the run dir; every rank trains its share of each global batch
    # (effective batch = world × (K + M), see segbench.train); rank 0 alone evaluates and writes the results
    rank, world = distributed.init_from_env()
    ws = Path(workspace)
    if resume and out is None:
        raise UserError("--resume needs --out RUN_DIR: the run directory to continue")
    resuming = resume and RunDir(out).config.is_file()
    if resuming:
        if RunDir(out).is_complete():
            return Path(out)
        check_same_run(RunDir(out), config)
    if not resume and out is not None and Path(out).is_dir() and any(p.name != ".lock" for p in Path(out).iterdir()):
        raise UserError(f"--out {out}: not empty; pass --resume to continue that run or choose another folder")
    distributed.barrier()  # every rank has looked at --out before rank 0 writes into it

    spec = parse_spec(config.aug)
    plan = recorded_plan(config)
    label = run_label(config.real_per_batch, config.synth_per_batch, not spec.is_identity, config.synth_use)
    device = resolve_device(config.device)
    real = _load_real(plan)
    _check_batch_memory(config, real["train"], device)
    synth = _synth_source(config, plan, real["train"], device)   # refuses mismatches before a run dir exists

    numbered = out is None
    if numbered:
        out = distributed.on_rank0(lambda: new_numbered_dir(ws / plan.dataset / plan.fold_id / "seg", label))
    files = RunDir(out)
    if rank == 0:
        files.path.mkdir(parents=True, exist_ok=True)
        if numbered:
            held.enter_context(lock(files.path))   # a `run --resume --out` on it meanwhile is refused
        if not resuming:
            config.save(files.config)

    torch.manual_seed(config.seed)   # He initialisation
    train = real["train"]
    generator = torch.Generator().manual_seed(config.seed)
    batches = MixedBatches(RealSource(train, device) if config.real_per_batch else None, synth,
                           config.real_per_batch * world, config.synth_per_batch * world, generator)
    # --pretrain-synth: the same K + M rows, all synthetic (same source and generator: one resumable state)
    pretrain = MixedBatches(None, synth, 0, config.batch_size * world, generator) if config.pretrain_iters else None
    model = build_unet(config, train.images.shape[3], len(train.class_names))
    with StopRequest() as stop:   # the first Ctrl-C saves the training state and names the resume command
        try:
            result = train_segmentation(config, model, batches, real["val"], files.path, resume=resuming,
                                        show_progress=show_progress, stop=stop, pretrain_batches=pretrain)
        except Interrupted as exc:
            raise Interrupted(f"{exc}; resume with: segbench run --resume --out {files.path}{workspace_flag(ws)}") \
                from None
    if rank != 0:
        return files.path
    plot_curves(files.log, files.curves, "iteration", ((("train_loss", "val_loss"), "loss"),),
                f"segbench run {label} (best iteration {result['best_iteration']} by {config.select_by}, dashed)",
                mark_x=result["best_iteration"], optional=((("val_score",), "val Dice / mIoU"),))
    height, width, channels = train.images.shape[1:]
    save_weights(files.weights, model, {
        "in_channels": channels, "n_classes": len(train.class_names), "depth": config.depth,
        "filters": config.filters, "pooling": config.pooling, "class_names": train.class_names,
        "height": height, "width": width})

    rows, evaluation, arrays = evaluate_test(model, real["test"], config, device)
    write_per_image_csv(rows, files.per_image)
    np.savez_compressed(files.predictions, **arrays)
    files.write_summary(Summary(
        label=label, dataset=config.dataset, fold_id=config.fold_id, real_per_batch=config.real_per_batch,
        synth_per_batch=config.synth_per_batch, aug=str(spec), seed=config.seed, preset=config.preset,
        synth_source=config.synth_source if config.uses_synthetic else None, iterations=result["iterations"],
        best_iteration=result["best_iteration"], best_val_loss=result["best_val_loss"],
        best_val_score=None if math.isnan(result["best_val_score"]) else result["best_val_score"],
        select_by=config.select_by,
        stopped_early=result["stopped_early"], wall_s=result["wall_s"],
        total_wall_s=round(time.monotonic() - started, 3), device=str(device), run=files.name,
        evaluation=evaluation))   # last: its presence + 'complete' marks a finished run
    files.training_state.unlink(missing_ok=True)    # only needed to resume; large for the Cityscapes net
    return files.path
