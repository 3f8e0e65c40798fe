"""Where things live in a workspace, so that `pairgen train`, `pairgen export` and `segbench run` chain with no paths.

    <ws>/<dataset>/<fold_id>/real/<H>x<W>/{train,val,test}/   real shards (kind=real) + manifest.json
    <ws>/<dataset>/<fold_id>/gan/<NNNNN>-<preset>/              config.json, log.jsonl, samples/, checkpoints/
    <ws>/<dataset>/<fold_id>/synth/<NNNNN>-<gan-run>/           synthetic shards (kind=synthetic) + manifest.json
    <ws>/<dataset>/<fold_id>/seg/<NNNNN>-<name>/                config.json, log.jsonl, weights.pt, per_image.csv, summary.json

`fold_id` is `fold<K>` (plus `-frac<PP>` for low-data subsets), so a GAN, its synthetic shards and the
segmentation runs that use them can never cross folds unnoticed. Run directories are numbered like EDM's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pairgen.core.errors import UserError

ENV_VAR = "PAIRGEN_WORKSPACE"
SPLITS = ("train", "val", "test")
_NUMBERED = re.compile(r"^(\d{5})-")


def workspace_root(workspace: Path | str | None = None) -> Path:
    """--workspace, else $PAIRGEN_WORKSPACE, else ./workspace."""
    if workspace is not None:
        return Path(workspace)
    return Path(os.environ.get(ENV_VAR, "workspace"))


def workspace_flag(ws: Path | str) -> str:
    """' --workspace WS' when WS is not the default workspace, else '' (for a command printed to the user)."""
    return "" if workspace_root(None).resolve() == Path(ws).resolve() else f" --workspace {ws}"


def fold_id(fold: int, train_fraction: float = 1.0) -> str:
    """The fold's directory name: `fold<K>`, plus `-frac<PP>` (percent, two digits) for a low-data subset."""
    return f"fold{fold}" + ("" if train_fraction >= 1.0 else f"-frac{round(train_fraction * 100):02d}")


def fold_dir(ws: Path, dataset: str, fold_id: str) -> Path:
    return Path(ws) / dataset / fold_id


def real_dir(ws: Path, dataset: str, fold_id: str, height: int, width: int) -> Path:
    """Parent of the train/val/test real shard directories at one training resolution."""
    return fold_dir(ws, dataset, fold_id) / "real" / f"{height}x{width}"


def new_numbered_dir(parent: Path, name: str) -> Path:
    """Create and return parent/<NNNNN>-<name>, one more than the highest number present."""
    parent.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in parent.iterdir() if (m := _NUMBERED.match(p.name))]
    for attempt in range(100):
        path = parent / f"{max(numbers, default=-1) + 1 + attempt:05d}-{name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a numbered directory under {parent}")


def _numbered(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return sorted((p for p in parent.iterdir() if p.is_dir() and _NUMBERED.match(p.name)), key=lambda p: p.name)


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def gan_runs(ws: Path, dataset: str | None = None, fold_id: str | None = None) -> list[Path]:
    """GAN run directories that hold at least one checkpoint."""
    pattern = f"{dataset or '*'}/{fold_id or '*'}/gan"
    runs = [run for parent in Path(ws).glob(pattern) for run in _numbered(parent)]
    return [r for r in runs if any((r / "checkpoints").glob("ckpt-*.pt"))]


def newest_gan_run(ws: Path, dataset: str | None = None, fold_id: str | None = None) -> Path:
    run = _newest(gan_runs(ws, dataset, fold_id))
    if run is None:
        where = f"{ws}/{dataset or '*'}/{fold_id or '*'}/gan/"
        raise UserError(f"no trained GAN run in {where}; run `pairgen train --dataset NAME` first or pass --checkpoint")
    return run


def exports(ws: Path, dataset: str | None = None, fold_id: str | None = None) -> list[Path]:
    """Complete synthetic shard directories (those with a manifest)."""
    pattern = f"{dataset or '*'}/{fold_id or '*'}/synth"
    return [d for parent in Path(ws).glob(pattern) for d in _numbered(parent) if (d / "manifest.json").is_file()]


def newest_export(ws: Path, dataset: str | None = None, fold_id: str | None = None) -> Path:
    found = _newest([d / "manifest.json" for d in exports(ws, dataset, fold_id)])
    if found is None:
        where = f"{ws}/{dataset or '*'}/{fold_id or '*'}/synth/"
        raise UserError(f"no complete synthetic export in {where}; run `pairgen export --n N` first")
    return found.parent


def parse_location(path: Path, ws: Path) -> tuple[str, str]:
    """(dataset, fold_id) of a path inside the workspace layout above."""
    try:
        rel = Path(path).resolve().relative_to(Path(ws).resolve())
    except ValueError:
        raise UserError(f"{path} is not inside the workspace {ws}") from None
    if len(rel.parts) < 2:
        raise UserError(f"{path} is not a dataset/fold directory of the workspace {ws}")
    return rel.parts[0], rel.parts[1]
