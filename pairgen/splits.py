"""Train/val/test splits: a deterministic function of a dataset's manifest (seed + protocol) and the cases present.

Manifests live in `<checkout>/manifests/<dataset>.json`. Shuffling is done by sorting on
sha256(f"{seed}:{purpose}:{case_id}") instead of a random generator: the order never changes with the
numpy/Python version, and a partial tree keeps the relative order of the cases it has. Protocols:

  kfold    (scr-lung, thesis 5.1.2) cut the shuffled cases into `folds` test blocks (247 → 83/82/82); of the
           rest, ceil(rest·135/165) train and the others val (165 → 135/30, 164 → 135/29): train always has
           the thesis' 135 images, so the fold with 83 test cases has 29 validation cases.
  holdout  (cityscapes, camvid, thesis 5.2.2) test = the official `val`; val = round(pool·400/2975) shuffled
           cases of the official `train` (cityscapes 400, camvid 49), train = the rest. Other source splits
           (camvid's official test) are not used.
  random   (shapes; default for datasets without a manifest) shuffled, round(n·f) test and val, rest train.

When the cases present are exactly the ones recorded in the manifest, the recorded lists are returned (the
thesis folds cannot drift); otherwise the split is computed from the cases present and a warning says so.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import pairgen
from pairgen.datasets.base import Case
from pairgen.core.errors import UserError

MANIFEST_DIR = Path(pairgen.__file__).resolve().parents[1] / "manifests"
SPLIT_NAMES = ("train", "val", "test")
# built-in datasets whose protocol must come from a checked-in manifest (a silent default would change folds)
MANIFEST_REQUIRED = ("scr-lung", "cityscapes", "camvid", "shapes")
DEFAULT_PROTOCOL: dict[str, Any] = {"protocol": "random", "seed": 0, "folds": 1, "fractions": {"val": 0.2, "test": 0.2}}


def load_protocol(dataset: str) -> dict[str, Any]:
    """The manifest of `dataset` (protocol, seed, folds, expected counts, recorded case lists)."""
    path = MANIFEST_DIR / f"{dataset}.json"
    if not path.is_file():
        if dataset in MANIFEST_REQUIRED:
            raise UserError(f"{path}: split manifest missing (run from a source checkout or editable install)")
        return dict(DEFAULT_PROTOCOL, dataset=dataset)
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: unreadable split manifest ({exc})") from None


def _order(ids: Sequence[str], seed: int, purpose: str) -> list[str]:
    """`ids` in a seeded pseudo-random order that depends only on (seed, purpose, id)."""
    return sorted(ids, key=lambda c: hashlib.sha256(f"{seed}:{purpose}:{c}".encode()).hexdigest())


def _round_ratio(n: int, num: int, den: int) -> int:
    """round(n·num/den) with halves up, in integers (no float or banker's-rounding surprises)."""
    return (2 * n * num + den) // (2 * den)


def _blocks(items: list[str], k: int) -> list[list[str]]:
    """Cut into k contiguous blocks, the first ones one longer when k does not divide len(items)."""
    size, extra = divmod(len(items), k)
    bounds = [i * size + min(i, extra) for i in range(k + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(k)]


def used_cases(protocol: dict[str, Any], cases: Sequence[Case]) -> list[str]:
    """Case ids the protocol draws from (holdout ignores source splits other than pool and test)."""
    if protocol["protocol"] == "holdout":
        sources = (protocol["pool_source"], protocol["test_source"])
        return sorted(c.case_id for c in cases if c.source_split in sources)
    return sorted(c.case_id for c in cases)


def compute_split(protocol: dict[str, Any], cases: Sequence[Case], fold: int) -> dict[str, list[str]]:
    """Apply the protocol to the cases present (no recorded lists, no train_fraction). Lists sorted by id."""
    seed, kind = protocol["seed"], protocol["protocol"]
    ids = used_cases(protocol, cases)
    if kind == "kfold":
        order = _order(ids, seed, "kfold")
        blocks = _blocks(order, protocol["folds"])
        test = blocks[fold - 1]
        rest = [c for i, block in enumerate(blocks) if i != fold - 1 for c in block]
        num, den = protocol["train_ratio"]
        n_train = -(-len(rest) * num // den)           # ceil: 165 → 135, 164 → 135
        split = {"train": rest[len(rest) - n_train:], "val": rest[:len(rest) - n_train], "test": test}
    elif kind == "holdout":
        test = [c.case_id for c in cases if c.source_split == protocol["test_source"]]
        pool = _order([c.case_id for c in cases if c.source_split == protocol["pool_source"]], seed, "holdout")
        num, den = protocol["val_ratio"]
        n_val = _round_ratio(len(pool), num, den)
        split = {"train": pool[n_val:], "val": pool[:n_val], "test": test}
    elif kind == "random":
        order = _order(ids, seed, "random")
        n_test = round(len(order) * protocol["fractions"]["test"])
        n_val = round(len(order) * protocol["fractions"]["val"])
        split = {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}
    else:
        raise UserError(f"manifest of {protocol.get('dataset')!r}: unknown protocol {kind!r}")
    return {name: sorted(split[name]) for name in SPLIT_NAMES}


def split_cases(dataset: str, cases: list[Case], fold: int, train_fraction: float = 1.0) -> dict[str, list[str]]:
    """case_ids of 'train', 'val', 'test' for `fold` (1-based); `train_fraction` < 1 keeps a seeded train subset.

    Subsets are nested (the 25 % subset is inside the 50 % one) and never empty.
    """
    protocol = load_protocol(dataset)
    folds = int(protocol.get("folds", 1))
    if not isinstance(fold, int) or not 1 <= fold <= folds:
        raise UserError(f"--fold {fold}: dataset {dataset!r} has folds 1..{folds}")
    if not 0.0 < train_fraction <= 1.0:
        raise UserError(f"--train-fraction must be in (0, 1], not {train_fraction}")
    if not cases:
        raise UserError(f"dataset {dataset!r}: no cases to split")
    recorded = protocol.get("cases", {}).get(str(fold))
    present = used_cases(protocol, cases)
    if recorded and sorted(c for names in recorded.values() for c in names) == present:
        split = {name: sorted(recorded[name]) for name in SPLIT_NAMES}
    else:
        split = compute_split(protocol, cases, fold)
        expected = protocol.get("expected_total")
        if expected is not None and len(present) != expected:
            warnings.warn(f"{dataset}: {len(present)} cases present, the protocol expects {expected}; "
                          f"split computed from the cases present: "
                          + ", ".join(f"{len(split[n])} {n}" for n in SPLIT_NAMES), stacklevel=2)
    if train_fraction < 1.0:
        keep = max(1, round(len(split["train"]) * train_fraction))
        split["train"] = sorted(_order(split["train"], protocol["seed"], "fraction")[:keep])
    return split


def record_case_lists(dataset: str, cases: list[Case]) -> dict[str, Any]:
    """Maintainer tool: recompute every fold from the full dataset and write the lists into the manifest."""
    protocol = load_protocol(dataset)
    protocol.pop("cases", None)
    lists = {str(f): compute_split(protocol, cases, f) for f in range(1, int(protocol["folds"]) + 1)}
    protocol["counts"] = {f: {n: len(v) for n, v in s.items()} for f, s in lists.items()}
    protocol["cases"] = lists
    from pairgen.core.files import atomic_write_json

    atomic_write_json(MANIFEST_DIR / f"{dataset}.json", protocol)
    return protocol
