"""Promise 8: nothing in a shard directory is trusted. The manifest's shard names must be plain file names inside
the folder, its fields must have their types, every shard's own attributes must agree with the manifest and with
what the command asked for, declared sizes are checked before any array is read, and the value ranges training
and evaluation rely on are checked at load, before training starts (each case ended late or wrong before).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.verify import verify_directory
from tests.fixtures import make_real_split, make_real_tree
from tests.segbench.test_run import DATASET, make_synthetic_export, quick

ROOT = Path(__file__).resolve().parents[2]


def edit_manifest(directory: Path, **changes) -> None:
    """Rewrite manifest.json with top-level `changes`; 'shard0' changes the first shard entry."""
    path = directory / shards.MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["shards"][0].update(changes.pop("shard0", {}))
    raw.update(changes)
    path.write_text(json.dumps(raw))


def resign(directory: Path) -> None:
    """Record every shard's current sha256, so that only the checks after the checksum see the change."""
    manifest = shards.read_manifest(directory)
    from pairgen.core.files import sha256_file

    infos = [dataclasses.replace(s, sha256=sha256_file(directory / s.file)) for s in manifest.shards]
    shards.write_manifest(directory, manifest.attrs, infos)


@pytest.fixture
def split(tmp_path: Path) -> Path:
    return make_real_split(tmp_path / "test", 4, split="test")


@pytest.mark.parametrize("name", ["../outside.h5", "/abs/shard.h5", "sub/shard.h5", "link.h5"])
def test_shard_names_must_be_plain_files_inside_the_folder(split: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside.h5"
    shutil.copy(split / "shard-00000.h5", outside)
    if name == "/abs/shard.h5":
        name = str(outside)
    if name == "link.h5":
        os.symlink(outside, split / name)
    edit_manifest(split, shard0={"file": name})
    with pytest.raises(UserError, match="not a plain file name|symbolic link leading out"):
        shards.load_shards(split)
    assert any("plain file name" in p or "symbolic link" in p for p in verify_directory(split))


def test_a_shard_listed_twice_is_refused(split: Path) -> None:
    raw = json.loads((split / shards.MANIFEST_NAME).read_text())
    raw["shards"] = raw["shards"] * 3   # would triple its weight in the training mix
    (split / shards.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(UserError, match="listed twice"):
        shards.load_shards(split)


@pytest.mark.parametrize("key, value", [("dataset", "other"), ("fold", "fold2"), ("split", "train"),
                                        ("class_names", '["background", "heart"]')])
def test_shard_attributes_must_agree_with_the_manifest(split: Path, key: str, value: str) -> None:
    with h5py.File(split / "shard-00000.h5", "a") as h5:
        h5.attrs[key] = value
    resign(split)
    with pytest.raises(UserError, match=f"attribute {key}="):
        shards.load_shards(split)
    assert any(f"attribute {key}=" in p for p in verify_directory(split))


@pytest.mark.parametrize("changes, match", [
    ({"shard0": {"file": 5}}, "'file' is 5"),
    ({"class_names": None}, None),
    ({"class_names": "background"}, "class_names"),
    ({"n_expected": "abc"}, "n_expected"),
    ({"n_expected": 10 ** 10}, "n_expected"),
    ({"shard0": {"n": -1}}, "declares -1 samples"),
    ({"shards": {"a": 1}}, "'shards' list"),
])
def test_manifest_fields_of_the_wrong_type_are_one_line_errors(split: Path, changes: dict, match: str | None) -> None:
    edit_manifest(split, **changes)
    if match is None:   # class_names: null is "absent": the shards' own class names must then agree
        edit_manifest(split, class_names=["x", "y"])
        match = "class_names"
    with pytest.raises(UserError, match=match):
        shards.load_shards(split)
    problems = verify_directory(split)   # never a traceback (n_expected 1e10 was a MemoryError)
    assert problems and match in problems[0]


def _damage(directory: Path, name: str, change) -> None:
    with h5py.File(directory / "shard-00000.h5", "a") as h5:
        value = h5[name][:]
        change(value)
        attrs = dict(h5[name].attrs)
        del h5[name]
        h5.create_dataset(name, data=value)
        h5[name].attrs.update(attrs)
    resign(directory)


@pytest.mark.parametrize("name, change, match", [
    ("spacing_mm", lambda v: v.__setitem__((1, 0), np.nan), "spacing_mm of sample 1"),
    ("spacing_mm", lambda v: v.__setitem__((0, 1), -0.5), "spacing_mm of sample 0"),
    ("masks", lambda v: v.__setitem__((0, 0, 0), 7), "mask value 7 but only 2 classes"),
])
def test_values_training_and_evaluation_rely_on_are_checked_at_load(split: Path, name: str, change,
                                                                     match: str) -> None:
    _damage(split, name, change)
    with pytest.raises(UserError, match=match):
        shards.load_shards(split)
    assert any(match in p for p in verify_directory(split))


def test_full_mask_ids_are_checked_at_load(split: Path) -> None:
    with h5py.File(split / "shard-00000.h5", "a") as h5:
        first = h5["full_masks"][0]
        first[0] = 200
        h5["full_masks"][0] = first
    resign(split)
    with pytest.raises(UserError, match="full-resolution mask value 200"):
        shards.load_shards(split)


def test_declared_sizes_are_checked_before_reading(split: Path) -> None:
    """A tiny file declaring 20000×20000 images (a compressed fill) is refused from its metadata."""
    with h5py.File(split / "shard-00000.h5", "a") as h5:
        n = h5["images"].shape[0]
        for name, shape in (("images", (n, 20000, 20000, 1)), ("masks", (n, 20000, 20000))):
            del h5[name]
            h5.create_dataset(name, shape=shape, dtype=np.uint8, chunks=(1, 500, 500, 1)[:len(shape)],
                              compression="gzip")
    assert (split / "shard-00000.h5").stat().st_size < 1 << 20
    resign(split)
    with pytest.raises(UserError, match="20000×20000"):
        shards.load_shards(split)


def test_a_synthetic_manifest_cannot_smuggle_in_the_real_test_split(tmp_path: Path) -> None:
    """`segbench run` with a "synthetic" manifest listing a copy of the real test shard: refused, no run dir."""
    ws = tmp_path / "ws"
    real = make_real_tree(ws / DATASET / "fold1" / "real" / "32x32")
    synth = make_synthetic_export(ws / DATASET / "fold1" / "synth" / "00000-00000-tiny")
    shutil.copy(real / "test" / "shard-00000.h5", synth / "shard-00000.h5")
    resign(synth)   # the manifest still says kind=synthetic, trained on this dataset and fold
    from segbench.run import run

    with pytest.raises(UserError, match="attribute kind='real', the manifest says 'synthetic'"):
        run(quick(), ws, show_progress=False)
    assert not (ws / DATASET / "fold1" / "seg").exists()


def test_real_splits_must_be_what_the_run_asked_for(tmp_path: Path) -> None:
    """A val/ folder holding test shards (or another dataset's) is refused before training."""
    ws = tmp_path / "ws"
    real = make_real_tree(ws / DATASET / "fold1" / "real" / "32x32")
    make_synthetic_export(ws / DATASET / "fold1" / "synth" / "00000-00000-tiny")
    shutil.rmtree(real / "val")
    shutil.copytree(real / "test", real / "val")
    from segbench.run import run

    with pytest.raises(UserError, match="val/manifest.json: attribute split='test', the command says 'val'"):
        run(quick(), ws, show_progress=False)


def test_late_crash_is_now_an_early_one_line_error(tmp_path: Path) -> None:
    """A NaN spacing in the test split used to crash `segbench run` after training (ValueError traceback)."""
    ws = tmp_path / "ws"
    real = make_real_tree(ws / DATASET / "fold1" / "real" / "32x32")
    _damage(real / "test", "spacing_mm", lambda v: v.__setitem__((2, 0), np.nan))
    proc = subprocess.run([sys.executable, "-m", "segbench", "run", "--workspace", str(ws), "--dataset", DATASET,
                           "--fold", "1", "--real", "2", "--synth", "0", "--max-iters", "2", "--preset", "tiny"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "spacing_mm of sample 2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (ws / DATASET / "fold1" / "seg").exists()   # refused before any run directory exists


def test_shards_larger_than_the_free_memory_are_refused(split: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 samples: images 4×32×32, masks 4×32×32, full masks 4×64×64, index/spacing/case ids: about 27 KB declared
    monkeypatch.setattr("pairgen.core.limits.available_memory", lambda: 40_000)
    with pytest.raises(UserError, match=r"its shards declare 2\d\.\d KB of arrays, which: needs about"):
        shards.load_shards(split)
    monkeypatch.setattr("pairgen.core.limits.available_memory", lambda: 60_000)
    assert len(shards.load_shards(split)) == 4
