"""Safe torch save/load for every checkpoint both trainings write, and the RNG states they carry.

A saved state is a dict of tensors, dicts, lists, tuples, ints, floats, bools and strings only, so that
`torch.load(weights_only=True)` reads it and a crafted file cannot run code. A save serialises in memory and
writes through pairgen.core.files.atomic_write_bytes (temp name → fsync → rename), so a final name is always a
complete file and a failing write names its path.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from pairgen.core.errors import UserError, writing
from pairgen.core.files import atomic_write_bytes

# torch.load(weights_only=True) could be made to run code before 2.6.0 (CVE-2025-32434)
SAFE_TORCH = (2, 6)


def require_safe_torch(version: str | None = None) -> None:
    """UserError unless the running torch has a weights_only loader without the known bypass (>= 2.6)."""
    version = torch.__version__ if version is None else version
    numbers = re.match(r"^(\d+)\.(\d+)", str(version))
    if numbers is None or (int(numbers.group(1)), int(numbers.group(2))) < SAFE_TORCH:
        raise UserError(f"torch {version} is too old to load checkpoints safely: torch.load(weights_only=True) "
                        "can run code from a crafted file before torch 2.6 (CVE-2025-32434); install torch>=2.6")


def _float_tensors(value: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every floating-point tensor in nested dicts/lists (state dicts, optimiser states)."""
    if torch.is_tensor(value):
        return [(prefix, value)] if value.is_floating_point() else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [found for key, item in items for found in _float_tensors(item, f"{prefix}.{key}")]


def non_finite(state: dict[str, Any], parts: Iterable[str]) -> str | None:
    """Name of the first non-finite tensor under state[part] for `parts`, None when all are finite."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for part in parts:
        for name, tensor in _float_tensors(state.get(part, {}), part):
            by_device.setdefault(tensor.device, []).append((name, torch.isfinite(tensor).all()))
    for checks in by_device.values():   # one host sync per device (Adam keeps its step counts on the CPU)
        finite = torch.stack([ok for _, ok in checks]).cpu()
        if not bool(finite.all()):
            return next(name for (name, _), ok in zip(checks, finite.tolist()) if not ok)
    return None


def save_state(path: Path, state: dict[str, Any], finite_parts: Iterable[str] = ()) -> None:
    """Write `state` to `path` atomically; ValueError (nothing written) when a tensor under `finite_parts` is
    non-finite, so a checkpoint is always a usable restart point; a failing write raises StorageError."""
    path = Path(path)
    bad = non_finite(state, finite_parts)
    if bad is not None:
        raise ValueError(f"refusing to save {path}: {bad} holds non-finite values")
    # serialise in memory, then write plain bytes: torch's zip writer reports a failing file write as an opaque
    # RuntimeError ("unexpected pos …"), a plain write reports ENOSPC/EROFS as what they are
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getbuffer())


def load_state(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """torch.load(weights_only=True) of `path`; a missing or unreadable file → UserError naming it and `what`
    ('checkpoint': "no such checkpoint file", "not a loadable pairgen checkpoint (…)")."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what} file")
    require_safe_torch()
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickle protocols mean nothing to a user
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, … — all mean "not ours"
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: not a loadable pairgen {what} ({exc.__class__.__name__}: {detail})") from None


def capture_rng() -> dict[str, Any]:
    """Every global RNG state training draws from, as weights_only-loadable values (tensors, ints, floats, str)."""
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
