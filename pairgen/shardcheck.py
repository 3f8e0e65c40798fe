"""Checks of an untrusted shard's contents beyond its schema: what `load_shards` and `pairgen verify` both refuse.

Functions of an open h5py.File (metadata only: nothing read but full_shapes) or of loaded arrays, returning the
problems they find as one-line texts (empty list / None = fine). On damaged HDF5 structures h5py raises from
inside them; the callers turn that into a finding. The schema's own checks (dataset names, dtypes, ranks,
attributes) live with the schema in pairgen.shards, which imports this module (never the other way).
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from pairgen.core.limits import MAX_SIDE


def same_shapes_problem(h5: h5py.File, reference: dict[str, tuple]) -> str | None:
    """Per-sample shapes must agree across the shards of a directory (first shard sets the reference)."""
    for name in ("images", "masks", "masks_raw", "latents"):
        if name in h5:
            shape = tuple(h5[name].shape[1:])
            if reference.setdefault(name, shape) != shape:
                return f"{name} per-sample shape {shape} differs from the other shards' {reference[name]}"
    return None


def layout_problems(h5: h5py.File, attrs: dict[str, Any]) -> list[str]:
    """The images' shape against the shard's height/width/channels attributes and MAX_SIDE (metadata only)."""
    if "images" not in h5:
        return []
    shape = tuple(int(v) for v in h5["images"].shape[1:])
    declared = tuple(attrs.get(k) for k in ("height", "width", "channels"))
    problems = []
    if h5["images"].shape[0] and None not in declared and declared != shape:
        problems.append(f"images are {'×'.join(map(str, shape))} but the attributes say "
                        f"{'×'.join(map(str, declared))} (H×W×C)")
    if max(shape[:2], default=0) > MAX_SIDE or (len(shape) > 2 and shape[2] not in (1, 3)):
        problems.append(f"images declared {'×'.join(map(str, shape))} (H×W×C): beyond {MAX_SIDE} pixels a side "
                        "or not 1 or 3 channels")
    return problems


def full_shapes_problem(shapes: np.ndarray) -> str | None:
    """Full-resolution mask sizes (int32 N×2, rows and cols) outside 1..MAX_SIDE."""
    if len(shapes) and (shapes.min() < 1 or shapes.max() > MAX_SIDE):
        return f"full_shapes holds sizes outside 1..{MAX_SIDE}"
    return None


def declared_bytes(h5: h5py.File, with_raw: bool) -> int:
    """Bytes that reading the shard would allocate, from the datasets' declared shapes (nothing read but
    full_shapes, N×2)."""
    total = 0
    for name in h5:
        if name in ("masks_raw", "latents") and not with_raw:
            continue
        ds = h5[name]
        if name == "full_masks":
            total += int(np.prod(h5["full_shapes"][:].astype(np.int64), axis=1).sum()) if "full_shapes" in h5 else 0
        else:
            # strings (case_id) become Python objects: count ~64 bytes each
            total += int(np.prod(ds.shape, dtype=np.int64)) * (64 if ds.dtype.kind in "OSUV" else ds.dtype.itemsize)
    return total


def value_problems(n_classes: int, masks: np.ndarray, full_masks: list[np.ndarray] | None = None,
                   spacing_mm: np.ndarray | None = None) -> list[str]:
    """The value ranges training and evaluation rely on: mask and full-mask ids < n_classes; spacing rows all
    finite and > 0, or all unknown (NaN) for every sample (a mix would turn mm distances into pixels midway)."""
    problems = []
    if masks.size and (top := int(masks.max())) >= n_classes:
        problems.append(f"mask value {top} but only {n_classes} classes (0..{n_classes - 1})")
    if full_masks and (top := max(int(m.max(initial=0)) for m in full_masks)) >= n_classes:
        problems.append(f"full-resolution mask value {top} but only {n_classes} classes (0..{n_classes - 1})")
    if spacing_mm is not None and len(spacing_mm):
        spacing = np.asarray(spacing_mm, np.float64)
        unknown = np.isnan(spacing).all(axis=1)
        good = np.isfinite(spacing).all(axis=1) & (spacing > 0).all(axis=1)
        if not (good | unknown).all() or (unknown.any() and not unknown.all()):
            bad = int(np.flatnonzero(~good)[0])
            problems.append(f"spacing_mm of sample {bad} is {spacing[bad].tolist()}: expected finite values > 0 "
                            "(or unknown for every sample)")
    return problems
