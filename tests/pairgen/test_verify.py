"""`pairgen verify` (pairgen.verify.verify_directory) on a synthetic export broken in many ways at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.export import Source, export_source
from pairgen.networks import build_generator
from pairgen.presets import make_config
from pairgen.verify import verify_directory

CONFIG = make_config("scr-lung", "tiny", class_names=("background", "left lung"), g_channels=(16, 8, 4),
                     d_channels=(4, 8, 16), z_dim=8)
META = {"sha256": "0" * 64, "dataset": "scr-lung", "fold_id": "fold1", "class_names": list(CONFIG.class_names),
        "step": 0}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid synthetic export: n=40, 8 per shard → shard-00000 … shard-00004."""
    torch.manual_seed(0)
    source = Source(build_generator(CONFIG).eval(), CONFIG, META, torch.device("cpu"))
    out = export_source(source, tmp_path_factory.mktemp("clean") / "e", 40, samples_per_shard=8, show_progress=False)
    assert verify_directory(out) == []
    return out


@pytest.fixture
def export_dir(clean: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean, tmp_path / "e"))


def flip_readable_byte(path: Path) -> None:
    """Flip one byte inside the first images chunk such that HDF5 still decodes it (data changed, file readable)."""
    with h5py.File(path) as h5:
        chunk = h5["images"].id.get_chunk_info(0)
        before = h5["images"][:]
    original = path.read_bytes()
    for offset in range(chunk.byte_offset + chunk.size // 2, chunk.byte_offset + chunk.size):
        data = bytearray(original)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            with h5py.File(path) as h5:
                if not np.array_equal(h5["images"][:], before):
                    return
        except OSError:  # landed on an lzf control byte: try the next one
            continue
    raise AssertionError("no readable single-byte flip found")


def rewrite_dataset(path: Path, name: str, value: np.ndarray) -> None:
    with h5py.File(path, "a") as h5:
        del h5[name]
        h5.create_dataset(name, data=value)


def test_reports_every_problem_at_once(export_dir: Path) -> None:
    d = export_dir
    (d / "shard-00001.h5").unlink()                                          # missing shard
    flip_readable_byte(d / "shard-00002.h5")                                 # bit rot
    with h5py.File(d / "shard-00000.h5") as h5:                              # shard 3 rewritten with shard 0's
        arrays = {name: h5[name][:] for name in h5}                          # indices: duplicates
        attrs = shards.read_attrs(h5)
    shards.write_shard(d / "shard-00003.h5", arrays, {k: v for k, v in attrs.items()
                                                        if k not in ("height", "width", "channels")})
    shutil.copy(d / "shard-00004.h5", d / "shard-00005.h5")                  # stray shard
    with h5py.File(d / "shard-00004.h5") as h5:                              # wrong dtype
        raw = h5["masks_raw"][:].astype(np.float32)
    rewrite_dataset(d / "shard-00004.h5", "masks_raw", raw)

    problems = verify_directory(d)
    text = "\n".join(problems)
    expected = [
        "shard-00001.h5: listed in the manifest but missing",
        "shard-00002.h5: sha256 does not match the manifest",
        "shard-00003.h5: sha256 does not match the manifest",
        "shard-00003.h5: sample_index 0 also in shard-00000.h5",
        "shard-00005.h5: not listed in the manifest",
        "shard-00004.h5: sha256 does not match the manifest",
        "shard-00004.h5: dataset 'masks_raw' is float32 rank 4, schema says float16 rank 4",
        "sample indices are not exactly 0…39",
    ]
    for needle in expected:
        assert needle in text, f"{needle!r} not reported:\n{text}"
    assert sum("also in shard-00000.h5" in p for p in problems) == 8        # every duplicated index, once
    assert all(p.startswith(str(d)) for p in problems)                      # each names the file at fault


def test_missing_manifest(export_dir: Path) -> None:
    (export_dir / "manifest.json").unlink()
    assert len(problems := verify_directory(export_dir)) == 1 and "no manifest" in problems[0]


def test_attribute_count_and_class_problems(export_dir: Path) -> None:
    d = export_dir
    with h5py.File(d / "shard-00000.h5", "a") as h5:
        h5.attrs["kind"] = "real"                                            # disagrees with the manifest
    with h5py.File(d / "shard-00001.h5") as h5:
        masks = h5["masks"][:]
    masks[0, 0, 0] = 7                                                       # only 2 classes
    rewrite_dataset(d / "shard-00001.h5", "masks", masks)
    with h5py.File(d / "shard-00002.h5", "a") as h5:
        del h5["latents"]                                                    # synthetic shards need latents
    text = "\n".join(verify_directory(d))
    assert "shard-00000.h5: attribute kind='real', manifest says 'synthetic'" in text
    assert "shard-00001.h5: mask value 7 but only 2 classes" in text
    assert "shard-00002.h5: missing dataset 'latents'" in text


def test_truncated_shard(export_dir: Path) -> None:
    path = export_dir / "shard-00003.h5"
    path.write_bytes(path.read_bytes()[:1000])
    text = "\n".join(verify_directory(export_dir))
    assert "shard-00003.h5: sha256 does not match" in text and "shard-00003.h5: not readable as HDF5" in text


def test_any_single_byte_flip_is_reported_not_raised(export_dir: Path) -> None:
    manifest = shards.read_manifest(export_dir)  # one shard only, so ~100 verify calls stay fast
    for info in manifest.shards[1:]:
        (export_dir / info.file).unlink()
    shards.write_manifest(export_dir, {**manifest.attrs, "n_expected": 8}, manifest.shards[:1])
    path = export_dir / "shard-00000.h5"
    original = path.read_bytes()
    for offset in range(0, len(original), len(original) // 100):
        data = bytearray(original)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        assert verify_directory(export_dir), f"flip at {offset} not reported"


def test_shard_of_another_resolution_is_reported(export_dir: Path) -> None:
    d = export_dir
    with h5py.File(d / "shard-00004.h5") as h5:
        arrays = {name: h5[name][:] for name in h5}
        attrs = {k: v for k, v in shards.read_attrs(h5).items() if k not in ("height", "width", "channels")}
    arrays.update(images=arrays["images"][:, ::2, ::2].copy(), masks=arrays["masks"][:, ::2, ::2].copy(),
                  masks_raw=arrays["masks_raw"][:, ::2, ::2].copy())
    info = shards.write_shard(d / "shard-00004.h5", arrays, attrs)
    manifest = shards.read_manifest(d)
    shards.write_manifest(d, manifest.attrs, [s if s.file != info.file else info for s in manifest.shards])
    assert any("shard-00004.h5" in p and "differs" in p for p in verify_directory(d))
    with pytest.raises(UserError, match="shard-00004.h5"):
        shards.load_shards(d)
