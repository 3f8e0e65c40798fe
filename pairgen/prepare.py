"""`pairgen prepare`: a dataset tree → real train/val/test shard directories at the training resolution.

Images are resized anti-aliased (PIL box = area average when shrinking, bilinear otherwise) and stored uint8;
masks are resized label-preservingly (area majority vote when shrinking, nearest when growing: never an
interpolated id). Test shards also keep each mask at full resolution plus its pixel spacing, for metrics.
Every case is loaded and checked before anything is written, so a bad tree never leaves half a workspace.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from pairgen import shards
from pairgen.datasets.base import Case, DatasetAdapter
from pairgen.datasets.registry import get_adapter
from pairgen.core.images import resize_image
from pairgen.core.errors import UserError
from pairgen.splits import SPLIT_NAMES, split_cases
from pairgen.core.workspace import fold_id as workspace_fold_id, real_dir, workspace_root

MAX_SHARD_BYTES = 256 << 20     # keep single shard files a manageable size (cityscapes full masks are 2 MB each)
T = TypeVar("T")


def make_adapter(dataset: str, root: str | Path | None, structures: tuple[str, ...] = ()) -> DatasetAdapter:
    """The adapter for `dataset`; `structures` picks SCR structures (scr-lung) or names the classes (folder)."""
    if dataset == "scr-lung":
        return get_adapter(dataset, root, structures=tuple(structures))
    if dataset == "folder":
        return get_adapter(dataset, root, classes=("background", *structures) if structures else None)
    if structures:
        raise UserError(f"--structures applies to scr-lung (and folder class names), not to {dataset!r}")
    adapter = get_adapter(dataset, root)
    if adapter.needs_root is False and root is not None:
        raise UserError(f"dataset {dataset!r} is generated in memory; it takes no --root")
    return adapter


def dataset_info(dataset: str, root: str | None, structures: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """(image channels, class_names) without reading the images (folder reads one image header)."""
    adapter = make_adapter(dataset, root, structures)
    return int(adapter.channels), list(adapter.class_names)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 h×w ids → uint8 height×width ids: majority by covered area when shrinking, nearest otherwise."""
    if mask.shape == (height, width):
        return mask.copy()
    rows, cols = mask.shape
    if height > rows or width > cols:
        return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    classes = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).astype(np.uint8)
    if len(classes) == 1:
        return np.full((height, width), classes[0], np.uint8)
    if rows % height == 0 and cols % width == 0:   # integer factor: exact pixel counts per block
        blocks = mask.reshape(height, rows // height, width, cols // width)
        coverage = [(blocks == k).sum(axis=(1, 3), dtype=np.int32) for k in classes]
    else:                                          # fractional: PIL's box filter weighs partial pixels
        coverage = [np.asarray(Image.fromarray((mask == k).astype(np.float32)).resize((width, height),
                                                                                     Image.Resampling.BOX))
                    for k in classes]
    return classes[np.argmax(np.stack(coverage), axis=0)]   # ties → lower id


def _parallel(function: Callable[[Case], T], cases: list[Case], label: str,
              show: bool | None) -> Iterable[tuple[Case, T | UserError]]:
    """Run function(case) on a thread pool (PIL decoding and file I/O release the GIL), yielding results in order;
    UserErrors are returned, not raised, so every problem can be collected."""
    def guarded(case: Case) -> T | UserError:
        try:
            return function(case)
        except UserError as exc:
            return exc

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(guarded, cases)
        # disable=None: tqdm shows the bar only on a terminal
        yield from tqdm(zip(cases, results), total=len(cases), desc=label, unit="case",
                        disable=None if show is None else not show, leave=False)


def _scan(adapter: DatasetAdapter) -> tuple[list[Case], list[str], list[str]]:
    scan = getattr(adapter, "scan", None)
    return scan() if scan else (adapter.cases(), [], [])


def check_dataset(dataset: str, root: str | None, structures: tuple[str, ...] = ()) -> list[str]:
    """Every problem of a dataset tree (missing files, size mismatches, bad label values, unreadable files)."""
    try:
        adapter = make_adapter(dataset, root, structures)
        cases, errors, warnings = _scan(adapter)
    except UserError as exc:
        return [str(exc)]
    problems = errors + warnings
    n_classes = len(adapter.class_names)
    # keep only the ids present in each mask: full-size samples piling up in finished futures could exhaust memory
    present: set[int] = set()
    for case, result in _parallel(lambda c: _ids(c.load().mask), cases, f"check {dataset}", None):
        if isinstance(result, UserError):
            problems.append(str(result))
        elif (top := max(result, default=0)) >= n_classes:   # adapters map ids; this guards a broken adapter
            problems.append(f"case {case.case_id}: mask id {top} but only {n_classes} classes")
        else:
            present.update(result)
    if cases and not problems and (problem := _one_class_problem(present, len(cases))):
        problems.append(f"{dataset}: {problem}")
    return problems


def _ids(mask: np.ndarray) -> set[int]:
    """The class ids present in a uint8 mask."""
    return set(np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist())


def _one_class_problem(present: set[int], n_cases: int) -> str | None:
    """A dataset whose masks hold one class only (typically no foreground: misread masks, e.g. a palette that maps
    the foreground index to the background colour) trains nothing; None when at least two classes appear."""
    if len(present) >= 2:
        return None
    what = "no foreground at all (every pixel is class 0)" if present <= {0} else f"only class {min(present)}"
    return f"the masks of all {n_cases} cases hold {what}; check how they are stored (docs/DATASETS.md)"


def _already_prepared(out: Path, params: dict[str, Any]) -> bool:
    for split in SPLIT_NAMES:
        try:
            manifest = shards.read_manifest(out / split)
        except UserError:
            return False
        if any(manifest.attrs.get(k) != v for k, v in params.items()):
            return False
        if not all((out / split / s.file).is_file() for s in manifest.shards):
            return False
    return True


def _convert(case: Case, height: int, width: int, full: bool) -> dict[str, Any]:
    sample = case.load()
    item = {"image": resize_image(sample.image, height, width), "mask": resize_mask(sample.mask, height, width),
            "spacing": sample.spacing_mm, "case_id": case.case_id, "ids": _ids(sample.mask)}
    if full:
        item["full_mask"] = sample.mask
    return item


def _write_split(directory: Path, items: list[dict[str, Any]], attrs: dict[str, Any], test: bool) -> None:
    """Replace `directory` with shards of `items` (sorted by case_id) and a manifest written last."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / shards.MANIFEST_NAME).unlink(missing_ok=True)   # marks the directory incomplete first
    for stale in list(directory.glob("shard-*.h5")) + list(directory.glob(".shard-*.tmp")):
        stale.unlink()
    first = items[0]
    per_sample = first["image"].nbytes + first["mask"].nbytes + (first["full_mask"].nbytes if test else 0)
    per_shard = max(1, min(len(items), MAX_SHARD_BYTES // per_sample))
    shard_attrs = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float)) or k == "class_names"}
    infos = []
    for number, start in enumerate(range(0, len(items), per_shard)):
        chunk = items[start:start + per_shard]
        arrays: dict[str, Any] = {
            "images": np.stack([i["image"] for i in chunk]),
            "masks": np.stack([i["mask"] for i in chunk]),
            "sample_index": np.arange(start, start + len(chunk), dtype=np.int64),
            "case_id": [i["case_id"] for i in chunk],
        }
        if any(i["spacing"] is not None for i in items):
            arrays["spacing_mm"] = np.array([i["spacing"] or (np.nan, np.nan) for i in chunk], np.float32)
        if test:
            arrays["full_masks"] = [i["full_mask"] for i in chunk]
            arrays["full_shapes"] = np.array([i["full_mask"].shape for i in chunk], np.int32)
        infos.append(shards.write_shard(directory / shards.SHARD_PATTERN.format(number), arrays, shard_attrs))
    shards.write_manifest(directory, {**attrs, "n_expected": len(items)}, infos)


def prepare(dataset: str, root: str | None, fold: int, height: int, width: int, structures: tuple[str, ...] = (),
            workspace: Path | None = None, out: Path | None = None, train_fraction: float = 1.0,
            show_progress: bool = True) -> Path:
    """Write real shards for one fold at height×width; returns the folder holding train/, val/, test/.

    Default location: workspace.real_dir(ws, dataset, fold_id, height, width). Returns at once when all three
    manifests exist with the same parameters. Raises UserError (writing nothing) when any case is bad.
    """
    if height < 4 or width < 4:
        raise UserError(f"--height/--width must be at least 4, not {height}x{width}")
    if not 0.0 < train_fraction <= 1.0:
        raise UserError(f"--train-fraction must be in (0, 1], not {train_fraction}")
    adapter = make_adapter(dataset, root, structures)
    fold_id = workspace_fold_id(fold, train_fraction)
    out = Path(out) if out is not None else real_dir(workspace_root(workspace), dataset, fold_id, height, width)
    resolved_root = "" if adapter.root is None else str(adapter.root.resolve())
    params: dict[str, Any] = {
        "kind": "real", "dataset": dataset, "fold": fold_id, "fold_number": fold, "train_fraction": train_fraction,
        "height": height, "width": width, "root": resolved_root, "class_names": list(adapter.class_names),
        "structures": list(getattr(adapter, "structures", ())), "channels": int(adapter.channels),
    }
    if _already_prepared(out, params):
        return out
    cases = adapter.cases()
    split = split_cases(dataset, cases, fold, train_fraction)
    for name in SPLIT_NAMES:
        if not split[name]:
            raise UserError(f"{dataset} fold {fold}: the {name} split is empty ({len(cases)} cases present); "
                            "add cases or raise --train-fraction")
    by_id = {c.case_id: c for c in cases}
    wanted = [(name, by_id[cid]) for name in SPLIT_NAMES for cid in split[name]]
    test_ids = set(split["test"])
    converted: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    jobs = [case for _, case in wanted]
    convert = lambda c: _convert(c, height, width, c.case_id in test_ids)  # noqa: E731
    for case, result in _parallel(convert, jobs, f"prepare {dataset} {fold_id}", show_progress):
        if isinstance(result, UserError):
            problems.append(str(result))
        else:
            converted[case.case_id] = result
    if not problems and (problem := _one_class_problem(set().union(*(c["ids"] for c in converted.values())),
                                                       len(converted))):
        problems.append(problem)
    if problems:
        shown = "; ".join(problems[:3]) + (" …" if len(problems) > 3 else "")
        raise UserError(f"{len(problems)} problem(s) in the {dataset} data, nothing written: {shown}")
    for name in SPLIT_NAMES:
        items = [converted[cid] for cid in split[name]]
        ids_digest = hashlib.sha256("\n".join(split[name]).encode()).hexdigest()
        attrs = {**params, "split": name, "cases_sha256": ids_digest, "n_cases": len(items)}
        _write_split(out / name, items, attrs, test=name == "test")
    return out
