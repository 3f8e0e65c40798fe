"""GAN checkpoints: atomic saves, safe loads (weights_only, always), and the generator loader export/sample use.

A checkpoint is a dict of tensors, dicts, lists, tuples, ints, floats, bools and strings only, so that
`torch.load(weights_only=True)` reads it and a crafted file cannot run code:

    format 'pairgen-gan', version 1, config (GANConfig.to_json()), generator, critic, opt_g, opt_d (state dicts),
    step (generator iterations done), rng {'torch': uint8 tensor, 'cuda': [uint8 tensors], 'numpy': {...}},
    data_order (pairgen.train's sampler state), dataset, fold_id, class_names (list of str);
    optional: generator_ema (the weight average's state dict, when config.ema_kimg > 0)

Files are <run>/checkpoints/ckpt-<step:07d>.pt, plus best.pt (with scoring on: the same state at the best-scoring
step, with `best` = {step, figures}; never pruned, never taken for the newest or resumed from). A save writes a hidden temp file in the same directory,
fsyncs it and renames it over the final name, so a final name is always a complete file; older checkpoints are
pruned only after the new one is in place.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairgen.core.errors import UserError
from pairgen.presets import GANConfig
from pairgen.core.files import atomic_write_json, sha256_file
from pairgen.core.torchio import load_state, save_state

FORMAT = "pairgen-gan"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{7,})\.pt$")   # step checkpoints only: best.pt never matches
BEST_NAME = "best.pt"
REQUIRED_KEYS = ("format", "version", "config", "generator", "critic", "opt_g", "opt_d", "step", "rng",
                 "data_order", "dataset", "fold_id", "class_names")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{step:07d}.pt"


def best_checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / BEST_NAME


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def newest_checkpoint(run_dir: Path) -> Path | None:
    """Highest-step complete checkpoint of a run dir (or of a checkpoints/ dir itself); None if there is none."""
    run_dir = Path(run_dir)
    directory = run_dir if run_dir.name == CHECKPOINT_DIR else run_dir / CHECKPOINT_DIR
    found = _checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, then prune the directory to config['keep_checkpoints'] newest.

    Refuses (ValueError) to save non-finite weights or optimiser states, so a checkpoint is always a usable restart
    point. If anything fails, the temp file is removed and every earlier checkpoint is untouched; a failing write
    (disk full, read-only directory) raises StorageError naming `path`.
    """
    path = Path(path)
    save_state(path, state, finite_parts=("generator", "critic", "opt_g", "opt_d", "generator_ema"))
    keep = int(state.get("config", {}).get("keep_checkpoints", 0) or 0)
    if keep > 0:
        for _, old in _checkpoints(path.parent)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a pairgen GAN checkpoint with torch.load(weights_only=True); any bad file → UserError naming it."""
    path = Path(path)
    state = load_state(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a pairgen GAN checkpoint (no format '{FORMAT}')")
    if state.get("version") != VERSION:
        raise UserError(f"{path}: checkpoint version {state.get('version')!r}, this pairgen reads {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: checkpoint is missing {missing}")
    return state


def checkpoint_config(state: dict[str, Any], path: Path) -> GANConfig:
    try:
        return GANConfig.from_json(dict(state["config"]))
    except (TypeError, ValueError, UserError) as exc:
        raise UserError(f"{path}: checkpoint holds an invalid config ({exc})") from None


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file as given, or the newest checkpoint of a GAN run directory."""
    path = Path(path)
    if path.is_dir():
        found = newest_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: holds no checkpoints/ckpt-*.pt")
        path = found
    return path


def load_generator(path: Path, device: str | torch.device = "cpu", average: bool = True
                   ) -> tuple[nn.Module, GANConfig, dict[str, Any]]:
    """(generator in eval mode on `device`, its GANConfig, meta) from a checkpoint file.

    `path` may also be a run directory (or its checkpoints/ dir): its newest checkpoint is used. `device` may be
    'auto' (see pairgen.core.devices.resolve_device). `average`: the weight average (generator_ema) when the
    checkpoint has one, as sample, export and score use by default; False: the live training weights.
    meta: sha256 (of the checkpoint file), dataset, fold_id, class_names (list), step, path, weights ('average' |
    'live').
    """
    from pairgen.core.devices import resolve_device
    from pairgen.networks import build_generator  # lazy: keeps `import pairgen.checkpoint` light

    path = checkpoint_file(path)
    state = load_checkpoint(path)
    config = checkpoint_config(state, path)
    try:
        generator = build_generator(config)
        weights = "average" if average and "generator_ema" in state else "live"
        generator.load_state_dict(state["generator_ema" if weights == "average" else "generator"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: generator weights do not fit its config ({str(exc).splitlines()[0][:160]})") from None
    generator.to(resolve_device(device)).eval()
    meta = {"sha256": sha256_file(path), "dataset": state["dataset"], "fold_id": state["fold_id"],
            "class_names": list(state["class_names"]), "step": int(state["step"]), "path": str(path),
            "weights": weights}
    return generator, config, meta


def derive_live_run(source: Path) -> Path:
    """From a GAN run trained with a weight average (ema_kimg > 0), the same run without it, as a run directory of
    its own beside `source`: the average never feeds back into training, so the live weights of an ema_kimg > 0 run
    are exactly those the ema_kimg = 0 run reaches. Config and every checkpoint with ema_kimg = 0 and no
    generator_ema, plus derived_from.txt naming the source; created once (a second call returns it), atomically."""
    config = GANConfig.load(source / "config.json")
    if not config.ema_kimg:
        raise UserError(f"{source}: ema_kimg is 0, the run has no weight average to drop")
    parent = source.parent
    for run in sorted(parent.iterdir()):
        if (run / "derived_from.txt").is_file() and (run / "derived_from.txt").read_text().strip() == str(source):
            return run
    numbers = [int(p.name.split("-")[0]) for p in parent.iterdir() if p.name.split("-")[0].isdigit()]
    target = parent / f"{max(numbers, default=-1) + 1:05d}-{config.preset}"
    work = parent / f".{target.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    (work / "checkpoints").mkdir(parents=True)
    live = config.to_json() | {"ema_kimg": 0.0}
    atomic_write_json(work / "config.json", live)
    for name in ("log.jsonl", "curves.png"):
        if (source / name).is_file():
            shutil.copy2(source / name, work / name)
    for _, path in _checkpoints(source / "checkpoints"):
        state = load_checkpoint(path)
        state.pop("generator_ema", None)
        state["config"] = dict(state["config"]) | {"ema_kimg": 0.0}
        save_checkpoint(work / "checkpoints" / path.name, state)
    (work / "derived_from.txt").write_text(f"{source}\n")
    work.rename(target)   # atomic: a half-written copy is never taken for a trained run
    return target
