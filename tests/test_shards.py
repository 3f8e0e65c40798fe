"""Round-trips and failure modes of the shard schema (pairgen.shards)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from pairgen import shards
from pairgen.core import files
from pairgen.core.errors import UserError
from pairgen.verify import verify_directory
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
    assert verify_directory(directory) == []
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
    assert any("sha256" in p for p in verify_directory(directory))


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


def synthetic_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic shard arrays (8×12 pixels, RGB, K = 2): saturated tanh masks_raw, masks thresholded from it."""
    rng = np.random.default_rng(seed)
    raw = np.tanh(rng.normal(0, 3, (n, 8, 12, 2))).astype(np.float16)
    return {"images": rng.integers(0, 256, (n, 8, 12, 3), dtype=np.uint8), "masks": (raw[..., 0] > 0).astype(np.uint8),
            "masks_raw": raw, "latents": rng.standard_normal((n, 4), dtype=np.float32),
            "sample_index": np.arange(n, dtype=np.int64)}


SYNTHETIC_ATTRS = {"kind": "synthetic", "dataset": "x", "split": "synthetic", "fold": "fold1",
                   "class_names": ["bg", "fg"]}


@pytest.mark.parametrize("n", [1, 256, 300, 513])   # one chunk, exactly one, a zero-padded edge chunk, three
def test_deflated_chunks_read_back_with_plain_h5py_whatever_the_pool(n: int, tmp_path: Path) -> None:
    """Chunks filtered by pairgen.shardfilters are what libhdf5's shuffle + deflate pipeline reads back, and the
    file's bytes do not depend on how many threads compressed them."""
    arrays = synthetic_arrays(n)
    serial = shards.write_shard(tmp_path / "a.h5", arrays, SYNTHETIC_ATTRS)
    with ThreadPoolExecutor(3) as pool:
        threaded = shards.write_shard(tmp_path / "b.h5", arrays, SYNTHETIC_ATTRS, pool=pool)
    assert serial.sha256 == threaded.sha256 == files.sha256_file(tmp_path / "b.h5")
    with h5py.File(tmp_path / "a.h5") as h5:
        assert (h5["masks_raw"].compression, h5["masks_raw"].shuffle) == ("gzip", True)
        assert (h5["masks"].compression, h5["images"].compression) == ("gzip", None)
        for name, value in arrays.items():
            np.testing.assert_array_equal(h5[name][:], value, err_msg=name)
        np.testing.assert_array_equal(h5["masks_raw"][n - 1, 3:5], arrays["masks_raw"][n - 1, 3:5])  # partial read


@pytest.mark.parametrize("compression", ["lzf", None])
def test_other_mask_filters_still_load(compression: str | None, tmp_path: Path) -> None:
    """Shards written before the switch to shuffle + deflate (lzf) load as before."""
    arrays = synthetic_arrays(20)
    info = shards.write_shard(tmp_path / "shard-00000.h5", arrays, SYNTHETIC_ATTRS, compression=compression)
    shards.write_manifest(tmp_path, SYNTHETIC_ATTRS, [info])
    loaded = shards.load_shards(tmp_path, with_raw=True)
    np.testing.assert_array_equal(loaded.masks_raw, arrays["masks_raw"])
    with h5py.File(tmp_path / "shard-00000.h5") as h5:
        assert h5["masks_raw"].compression == compression
    with pytest.raises(ValueError, match="compression"):
        shards.write_shard(tmp_path / "shard-00001.h5", arrays, SYNTHETIC_ATTRS, compression="zstd")
