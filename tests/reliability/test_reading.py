"""Promise 3: a shard that fails its checksum, is truncated, or breaks the schema stops every reader with a one-line
error naming the file (never a traceback, never a batch of garbage); no HDF5 handle outlives a load.

Readers: pairgen.shards.load_shards (segbench's only way in), pairgen.train.PairData (GAN training) and
`pairgen verify`. Shards are read once, whole, in the main process: there are no DataLoader workers, so there is
no file handle to share with them (checked below, so that this stays true).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import torch

from pairgen import shards
from pairgen.core import files
from pairgen.core.errors import UserError
from pairgen.train import PairData
from pairgen.verify import verify_directory
from tests.fixtures import make_real_split, small_config
from tests.reliability import faults

ROOT = Path(__file__).resolve().parents[2]


def resign(path: Path) -> None:
    """Record a shard's current sha256 in its manifest, so that only the schema check stands between the damage
    and the reader."""
    directory = path.parent
    manifest = shards.read_manifest(directory)
    infos = [dataclasses.replace(s, sha256=files.sha256_file(directory / s.file)) for s in manifest.shards]
    shards.write_manifest(directory, manifest.attrs, infos)


def rewrite(path: Path, change: Callable[[h5py.File], Any]) -> None:
    """Change a shard in place with h5py, then re-sign it."""
    with h5py.File(path, "r+") as h5:
        change(h5)
    resign(path)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncate_and_resign(path: Path) -> None:
    truncate(path)
    resign(path)


def images_float(h5: h5py.File) -> None:
    images = h5["images"][:]
    del h5["images"]
    h5["images"] = images.astype(np.float32)


def masks_other_count(h5: h5py.File) -> None:
    del h5["masks"]
    h5["masks"] = np.zeros((3, 16, 16), np.uint8)


FAULTS: dict[str, Callable[[Path], None]] = {
    "checksum": flip_byte,
    "truncated": truncate,
    "truncated-and-resigned": truncate_and_resign,
    "images-float32": lambda p: rewrite(p, images_float),
    "masks-missing": lambda p: rewrite(p, lambda h5: h5.__delitem__("masks")),
    "masks-other-count": lambda p: rewrite(p, masks_other_count),
    "kind-unknown": lambda p: rewrite(p, lambda h5: h5.attrs.__setitem__("kind", "mystery")),
    "schema-version": lambda p: rewrite(p, lambda h5: h5.attrs.__setitem__("schema_version", 99)),
}


@pytest.fixture
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(train directory with one damaged shard, that shard)."""
    directory = make_real_split(tmp_path / "train", 6, height=16, width=16)
    path = directory / "shard-00000.h5"
    FAULTS[request.param](path)
    return directory, path


def one_line_naming(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert str(path) in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("damaged", sorted(FAULTS), indirect=True)
def test_every_reader_refuses_with_one_line_naming_the_file(damaged: tuple[Path, Path], monkeypatch, capsys) -> None:
    directory, path = damaged
    with pytest.raises(UserError) as caught:
        shards.load_shards(directory)
    one_line_naming(caught.value, path)
    with pytest.raises(UserError) as caught:
        PairData(directory, small_config(), torch.device("cpu"))
    one_line_naming(caught.value, path)
    problems = verify_directory(directory)
    assert problems and all("\n" not in p for p in problems) and any(str(path) in p for p in problems)
    code, err = faults.cli(monkeypatch, capsys, "pairgen", "verify", str(directory))
    assert code == 2 and "Traceback" not in err
    assert any(str(path) in line for line in err.splitlines()) and err.splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("damaged", ["truncated", "images-float32", "masks-missing", "kind-unknown"], indirect=True)
def test_schema_is_checked_even_without_checksums(damaged: tuple[Path, Path]) -> None:
    """The checksum is the first line of defence; the schema check alone still refuses (no garbage batches)."""
    directory, path = damaged
    with pytest.raises(UserError) as caught:
        shards.load_shards(directory, verify_checksums=False)
    one_line_naming(caught.value, path)


def test_no_hdf5_handle_outlives_a_load(tmp_path: Path) -> None:
    """Shards are read whole in the calling process; nothing stays open that a forked worker could inherit."""
    directory = make_real_split(tmp_path / "train", 6, height=16, width=16)
    before = len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))
    shards.load_shards(directory)
    verify_directory(directory)
    with pytest.raises(UserError):
        shards.open_shard(tmp_path / "missing.h5")
    assert len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)) == before


def _imports_and_calls(package: str) -> list[tuple[str, str, int]]:
    """(file, dotted name, line) of every import and attribute call in a package's source."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                found += [(path.name, f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
            elif isinstance(node, ast.Attribute):
                found.append((path.name, node.attr, node.lineno))
    return found


def test_readers_have_no_dataloader_workers_and_segbench_reads_only_through_load_shards() -> None:
    """If this fails, someone added a DataLoader or a second shard reader: make it open files lazily per worker
    (never share an h5py handle across fork) and check checksums/schema as load_shards does, then update this."""
    for package in ("pairgen", "segbench"):
        names = _imports_and_calls(package)
        assert not [n for n in names if n[1] in ("DataLoader", "torch.utils.data", "torch.utils.data.DataLoader")]
    # perf/unet_bench.py times a per-sample h5py reader as the baseline to beat; it reads no training data
    assert not [n for n in _imports_and_calls("segbench") if n[1].split(".")[0] == "h5py" and n[0] != "unet_bench.py"]
