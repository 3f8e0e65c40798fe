"""Round-trips and failure modes of the shard schema (pairgen.shards)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from pairgen import shards
from pairgen.errors import UserError
from tests.fixtures import make_real_split


def test_round_trip_real_test_split(tmp_path: Path) -> None:
    directory = make_real_split(tmp_path / "test", 5, height=16, width=24, channels=3, split="test", full_scale=3)
    loaded = shards.load_shards(directory)
    assert loaded.images.shape == (5, 16, 24, 3) and loaded.images.dtype == np.uint8
    assert loaded.masks.shape == (5, 16, 24)
    assert loaded.sample_index.tolist() == [0, 1, 2, 3, 4]
    assert loaded.case_id == [f"case{i:03d}" for i in range(5)]
    assert loaded.full_masks[2].shape == (48, 72)
    np.testing.assert_array_equal(loaded.full_masks[2][::3, ::3], loaded.masks[2])
    assert loaded.class_names == ["background", "left lung"]
    assert shards.verify_directory(directory) == []
    # readable with plain h5py, attributes as documented
    with h5py.File(directory / "shard-00000.h5") as h5:
        assert h5.attrs["kind"] == "real" and h5.attrs["schema_version"] == shards.SCHEMA_VERSION
        assert h5["images"].dtype == np.uint8 and h5["sample_index"].dtype == np.int64


def test_corrupt_shard_is_refused_with_file_name(tmp_path: Path) -> None:
    directory = make_real_split(tmp_path / "train", 4)
    path = directory / "shard-00000.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="shard-00000.h5.*sha256"):
        shards.load_shards(directory)
    assert any("sha256" in p for p in shards.verify_directory(directory))


def test_truncated_shard_gives_one_line_error(tmp_path: Path) -> None:
    directory = make_real_split(tmp_path / "train", 4)
    path = directory / "shard-00000.h5"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="shard-00000.h5"):
        shards.load_shards(directory, verify_checksums=False)


def test_wrong_schema_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no manifest"):
        shards.read_manifest(tmp_path)
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h5:
        h5["images"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(UserError, match="bad.h5"):
        shards.open_shard(bad)


def test_write_shard_rejects_inconsistent_arrays(tmp_path: Path) -> None:
    arrays = {"images": np.zeros((3, 4, 4, 1), np.uint8), "masks": np.zeros((2, 4, 4), np.uint8),
              "sample_index": np.arange(3, dtype=np.int64)}
    attrs = {"kind": "real", "dataset": "x", "split": "train", "fold": "fold1", "class_names": ["bg", "fg"]}
    with pytest.raises(ValueError, match="masks"):
        shards.write_shard(tmp_path / "shard-00000.h5", arrays, attrs)
    assert list(tmp_path.iterdir()) == []  # no temp file left behind
