"""GAN checkpoints: atomic saves, safe loads (weights_only, always), and the generator loader export/sample use.

A checkpoint is a dict of tensors, dicts, lists, tuples, ints, floats, bools and strings only, so that
`torch.load(weights_only=True)` reads it and a crafted file cannot run code:

    format 'pairgen-gan', version 1, config (GANConfig.to_json()), generator, critic, opt_g, opt_d (state dicts),
    step (generator iterations done), rng {'torch': uint8 tensor, 'cuda': [uint8 tensors], 'numpy': {...}},
    data_order (pairgen.train's sampler state), dataset, fold_id, class_names (list of str)

Files are <run>/checkpoints/ckpt-<step:07d>.pt. A save writes a hidden temp file in the same directory,
fsyncs it and renames it over the final name, so a final name is always a complete file; older checkpoints are
pruned only after the new one is in place.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pairgen.errors import UserError, writing
from pairgen.presets import GANConfig
from pairgen.shards import atomic_write_bytes, sha256_file

FORMAT = "pairgen-gan"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{7,})\.pt$")
REQUIRED_KEYS = ("format", "version", "config", "generator", "critic", "opt_g", "opt_d", "step", "rng",
                 "data_order", "dataset", "fold_id", "class_names")
# torch.load(weights_only=True) could be made to run code before 2.6.0 (CVE-2025-32434)
SAFE_TORCH = (2, 6)


def require_safe_torch(version: str | None = None) -> None:
    """UserError unless the running torch has a weights_only loader without the known bypass (>= 2.6)."""
    version = torch.__version__ if version is None else version
    numbers = re.match(r"^(\d+)\.(\d+)", str(version))
    if numbers is None or (int(numbers.group(1)), int(numbers.group(2))) < SAFE_TORCH:
        raise UserError(f"torch {version} is too old to load checkpoints safely: torch.load(weights_only=True) "
                        "can run code from a crafted file before torch 2.6 (CVE-2025-32434); install torch>=2.6")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{step:07d}.pt"


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


def _float_tensors(value: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every floating-point tensor in nested dicts/lists (state dicts, optimiser states)."""
    if torch.is_tensor(value):
        return [(prefix, value)] if value.is_floating_point() else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [found for key, item in items for found in _float_tensors(item, f"{prefix}.{key}")]


def _non_finite(state: dict[str, Any]) -> str | None:
    """Name of the first non-finite tensor among the networks and optimiser states, None when all are finite."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for part in ("generator", "critic", "opt_g", "opt_d"):
        for name, tensor in _float_tensors(state.get(part, {}), part):
            by_device.setdefault(tensor.device, []).append((name, torch.isfinite(tensor).all()))
    for checks in by_device.values():   # one host sync per device (Adam keeps its step counts on the CPU)
        finite = torch.stack([ok for _, ok in checks]).cpu()
        if not bool(finite.all()):
            return next(name for (name, _), ok in zip(checks, finite.tolist()) if not ok)
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, then prune the directory to config['keep_checkpoints'] newest.

    Refuses (ValueError) to save non-finite weights or optimiser states, so a checkpoint is always a usable restart
    point. If anything fails, the temp file is removed and every earlier checkpoint is untouched; a failing write
    (disk full, read-only directory) raises StorageError naming `path`.
    """
    path = Path(path)
    bad = _non_finite(state)
    if bad is not None:
        raise ValueError(f"refusing to save {path}: {bad} holds non-finite values")
    # serialise in memory, then write plain bytes: torch's zip writer reports a failing file write as an opaque
    # RuntimeError ("unexpected pos …"), a plain write reports ENOSPC/EROFS as what they are
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getbuffer())   # temp name → fsync → rename: a final name is always complete
    keep = int(state.get("config", {}).get("keep_checkpoints", 0) or 0)
    if keep > 0:
        for _, old in _checkpoints(path.parent)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a pairgen GAN checkpoint with torch.load(weights_only=True); any bad file → UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    require_safe_torch()
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickle protocols mean nothing to a user
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, … — all mean "not ours"
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: not a loadable pairgen checkpoint ({exc.__class__.__name__}: {detail})") from None
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


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, GANConfig, dict[str, Any]]:
    """(generator in eval mode on `device`, its GANConfig, meta) from a checkpoint file.

    `path` may also be a run directory (or its checkpoints/ dir): its newest checkpoint is used. `device` may be
    'auto' (see pairgen.devices.resolve_device).
    meta: sha256 (of the checkpoint file), dataset, fold_id, class_names (list), step, path.
    """
    from pairgen.devices import resolve_device
    from pairgen.networks import build_generator  # lazy: keeps `import pairgen.checkpoint` light

    path = checkpoint_file(path)
    state = load_checkpoint(path)
    config = checkpoint_config(state, path)
    try:
        generator = build_generator(config)
        generator.load_state_dict(state["generator"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: generator weights do not fit its config ({str(exc).splitlines()[0][:160]})") from None
    generator.to(resolve_device(device)).eval()
    meta = {"sha256": sha256_file(path), "dataset": state["dataset"], "fold_id": state["fold_id"],
            "class_names": list(state["class_names"]), "step": int(state["step"]), "path": str(path)}
    return generator, config, meta


def capture_rng() -> dict[str, Any]:
    """Every RNG state training draws from, as weights_only-loadable values (tensors, ints, floats, str)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Inverse of capture_rng (CUDA states are restored only where CUDA is available)."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]][: torch.cuda.device_count()])
    numpy_state = rng["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
