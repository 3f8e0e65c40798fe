"""`pairgen export`: schema, reproducibility of sample i, refusal/overwrite/resume, ranks, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pairgen import checkpoint as ckpt
from pairgen.core import files
from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.export import default_export_dir, default_writers, export, resolve_checkpoint
from pairgen.sampling import Z_CHUNK, latents
from pairgen.verify import verify_directory
from tests.fixtures import make_checkpoint, tiny_gan_config
from tests.reliability import faults

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tiny_gan_config()
ARRAYS = ("images", "masks", "masks_raw", "latents", "sample_index")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ws") / "scr-lung" / "fold1" / "gan" / "00000-tiny")


def load(directory: Path) -> shards.ShardSet:
    assert verify_directory(directory) == []
    return shards.load_shards(directory, with_raw=True)


def assert_same(a: shards.ShardSet, b: shards.ShardSet, upto: int | None = None) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name)[:upto], getattr(b, name)[:upto], err_msg=name)


def test_schema_attrs_and_values(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = export(tiny_ckpt, tmp_path / "e", 20, seed=3, samples_per_shard=8, show_progress=False)
    data = load(out)
    assert data.images.shape == (20, 32, 32, 1) and data.images.dtype == np.uint8
    assert data.masks.shape == (20, 32, 32) and set(np.unique(data.masks)) <= {0, 1}
    assert data.masks_raw.shape == (20, 32, 32, 1) and data.masks_raw.dtype == np.float16
    assert np.abs(data.masks_raw.astype(np.float32)).max() <= 1.0
    assert data.latents.dtype == np.float32 and data.sample_index.tolist() == list(range(20))
    np.testing.assert_array_equal(data.latents, latents(3, 0, 20, CONFIG.z_dim))
    # mask = thresholded raw channel (scalar encoding: > 0 is foreground)
    np.testing.assert_array_equal(data.masks, (data.masks_raw[..., 0] > 0).astype(np.uint8))
    manifest = json.loads((out / "manifest.json").read_text())
    expected = {"kind": "synthetic", "dataset": "scr-lung", "split": "synthetic", "fold": "fold1", "seed": 3,
                "class_names": ["background", "left lung"], "trained_dataset": "scr-lung", "trained_fold": "fold1",
                "generator_sha256": files.sha256_file(tiny_ckpt), "n_expected": 20}
    assert {k: manifest[k] for k in expected} == expected
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    with h5py.File(out / "shard-00002.h5") as h5:
        attrs = shards.read_attrs(h5)
        assert {k: attrs[k] for k in expected if k != "n_expected"} == {k: v for k, v in expected.items()
                                                                         if k != "n_expected"}
        assert h5["sample_index"][:].tolist() == [16, 17, 18, 19]


def test_sample_matches_single_eval_forward(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Eval mode: a sample is G(z_i) alone (batch companions and batch statistics play no part)."""
    data = load(export(tiny_ckpt, tmp_path / "e", 12, samples_per_shard=12, show_progress=False))
    generator, _, _ = ckpt.load_generator(tiny_ckpt)
    with torch.no_grad():
        alone = generator(torch.from_numpy(latents(0, 5, 6, CONFIG.z_dim)))[0]
    np.testing.assert_allclose(data.masks_raw[5, ..., 0], alone[1].numpy(), atol=2e-3)
    assert np.abs(data.images[5, ..., 0].astype(int) - np.round((alone[0].numpy() + 1) * 127.5)).max() <= 1


def test_latents_depend_on_seed_and_index_only() -> None:
    whole = latents(7, 0, 3 * Z_CHUNK, 8)
    np.testing.assert_array_equal(latents(7, 250, 530, 8), whole[250:530])
    np.testing.assert_array_equal(latents(7, Z_CHUNK + 1, Z_CHUNK + 2, 8), whole[Z_CHUNK + 1:Z_CHUNK + 2])
    assert not np.array_equal(latents(8, 0, 4, 8), whole[:4])
    assert abs(whole.mean()) < 0.05 and abs(whole.std() - 1) < 0.05


def test_block_size_and_n_do_not_change_samples(tiny_ckpt: Path, tmp_path: Path) -> None:
    a = load(export(tiny_ckpt, tmp_path / "a", 50, block_size=16, show_progress=False))
    b = load(export(tiny_ckpt, tmp_path / "b", 50, block_size=50, show_progress=False))
    assert_same(a, b)
    # sample i is the same in a shorter export with other shard boundaries (same forward batch size)
    c = load(export(tiny_ckpt, tmp_path / "c", 21, block_size=16, samples_per_shard=16, show_progress=False))
    assert_same(a, c, upto=21)
    d = load(export(tiny_ckpt, tmp_path / "d", 10, seed=1, block_size=16, show_progress=False))
    assert not np.array_equal(a.latents[:10], d.latents)


def test_non_empty_output_refused_and_overwrite_keeps_foreign_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = export(tiny_ckpt, tmp_path / "e", 20, samples_per_shard=8, show_progress=False)
    with pytest.raises(UserError, match="not empty"):
        export(tiny_ckpt, out, 10, show_progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other: output directory is not empty"):
        export(tiny_ckpt, tmp_path / "other", 10, show_progress=False)
    (out / "notes.txt").write_text("mine")
    (out / ".shard-00007.h5.x1.tmp").write_bytes(b"torn")
    export(tiny_ckpt, out, 10, samples_per_shard=4, seed=2, overwrite=True, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "shard-00000.h5",
                                                      "shard-00001.h5", "shard-00002.h5"]
    assert (out / "notes.txt").read_text() == "mine" and load(out).sample_index.tolist() == list(range(10))


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "--n"), ({"block_size": 0}, "--block-size"), ({"samples_per_shard": 0}, "--samples-per-shard"),
    ({"seed": -1}, "--seed"), ({"resume": True, "overwrite": True}, "--resume"), ({"rank": 2, "world_size": 2}, "rank"),
    ({"writers": 0}, "--writers"),
])
def test_bad_arguments(tiny_ckpt: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        export(tiny_ckpt, tmp_path / "e", **{"n": 4, "show_progress": False, **kwargs})


def test_output_does_not_depend_on_the_number_of_writers(tiny_ckpt: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Same seed, 1, 2 or 3 writer threads (also through the CLI flag): byte-identical shards and checksums."""
    checksums = []
    for writers in (1, 2, 3):
        out = export(tiny_ckpt, tmp_path / f"w{writers}", 44, seed=4, samples_per_shard=8, block_size=8,
                     show_progress=False, writers=writers)
        assert verify_directory(out) == []
        checksums.append([(s.file, s.sha256) for s in shards.read_manifest(out).shards])
    assert len(checksums[0]) == 6 and checksums[0] == checksums[1] == checksums[2]
    code, err = faults.cli(monkeypatch, capsys, "pairgen", "export", "--checkpoint", str(tiny_ckpt), "--out",
                           str(tmp_path / "cli"), "--n", "44", "--seed", "4", "--samples-per-shard", "8",
                           "--block-size", "8", "--device", "cpu", "--writers", "2")
    assert code == 0, err
    assert [(s.file, s.sha256) for s in shards.read_manifest(tmp_path / "cli").shards] == checksums[0]


@pytest.mark.parametrize("cores, local_ranks, expected", [(1, None, 1), (2, None, 1), (4, None, 3), (16, None, 8),
                                                         (64, None, 8), (16, "2", 7), (16, "8", 1)])
def test_default_writers(cores: int, local_ranks: str | None, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert default_writers() == expected


def test_resume_repairs_partial_export(tiny_ckpt: Path, tmp_path: Path) -> None:
    ref = load(export(tiny_ckpt, tmp_path / "ref", 40, samples_per_shard=8, show_progress=False))
    out = export(tiny_ckpt, tmp_path / "e", 40, samples_per_shard=8, show_progress=False)
    kept = (out / "shard-00001.h5").stat().st_mtime_ns
    (out / "manifest.json").unlink()
    (out / "shard-00002.h5").unlink()
    (out / ".shard-00003.h5.abc.tmp").write_bytes(b"half a shard")            # torn temp of a killed writer
    (out / ".manifest.json.def.tmp").write_bytes(b"{")
    (out / "shard-00004.h5").write_bytes(b"not hdf5")                       # corrupted final name: rewritten
    (out / "shard-00009.h5").write_bytes((out / "shard-00000.h5").read_bytes())  # past the end (larger --n)
    with pytest.raises(UserError, match="not empty"):
        export(tiny_ckpt, out, 40, samples_per_shard=8, show_progress=False)
    export(tiny_ckpt, out, 40, samples_per_shard=8, resume=True, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"shard-{k:05d}.h5" for k in range(5)]
    assert (out / "shard-00001.h5").stat().st_mtime_ns == kept                 # complete shards are kept
    assert_same(load(out), ref)
    # resuming a complete export only rewrites the manifest; another seed or checkpoint is refused
    export(tiny_ckpt, out, 40, samples_per_shard=8, resume=True, show_progress=False)
    with pytest.raises(UserError, match="shard-00000.h5: written with seed=0"):
        export(tiny_ckpt, out, 40, seed=5, samples_per_shard=8, resume=True, show_progress=False)


def test_resume_with_other_layout_rewrites(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = export(tiny_ckpt, tmp_path / "e", 20, samples_per_shard=8, block_size=8, show_progress=False)
    export(tiny_ckpt, out, 30, samples_per_shard=8, block_size=8, resume=True, show_progress=False)
    ref = load(export(tiny_ckpt, tmp_path / "ref", 30, samples_per_shard=8, block_size=8, show_progress=False))
    assert_same(load(out), ref)


def test_ranks_split_shards_and_rank0_writes_manifest(tiny_ckpt: Path, tmp_path: Path) -> None:
    ref = load(export(tiny_ckpt, tmp_path / "ref", 36, samples_per_shard=8, show_progress=False))
    out = tmp_path / "e"
    export(tiny_ckpt, out, 36, samples_per_shard=8, rank=1, world_size=2, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00001.h5", "shard-00003.h5"]   # no manifest yet
    export(tiny_ckpt, out, 36, samples_per_shard=8, rank=0, world_size=2, show_progress=False)
    assert_same(load(out), ref)


def test_workspace_defaults(tiny_ckpt: Path, tmp_path: Path) -> None:
    ws = tiny_ckpt.parents[5]
    assert resolve_checkpoint(ws, None) == tiny_ckpt
    assert resolve_checkpoint(ws, None, "scr-lung") == tiny_ckpt
    assert resolve_checkpoint(ws, tiny_ckpt.parents[1]) == tiny_ckpt                   # a run dir
    with pytest.raises(UserError, match="nope.pt: no such file"):
        resolve_checkpoint(ws, tmp_path / "nope.pt")
    with pytest.raises(UserError, match="no trained GAN run"):
        resolve_checkpoint(tmp_path, None)
    with pytest.raises(UserError, match="no unfinished export of GAN run 00000-tiny"):
        default_export_dir(ws, tiny_ckpt, resume=True)
    target = default_export_dir(ws, tiny_ckpt)
    assert target.parent == ws / "scr-lung" / "fold1" / "synth" and target.name.endswith("-00000-tiny")
    (target / ".shard-00000.h5.x.tmp").write_bytes(b"killed")                          # an interrupted export
    assert default_export_dir(ws, tiny_ckpt, resume=True) == target
    assert export(tiny_ckpt, target, 4, resume=True) == target  # with the progress bar
    assert default_export_dir(ws, tiny_ckpt).name.startswith("00001-") and (target / "manifest.json").is_file()


KILLED_EXPORT = """
import sys, time
from pathlib import Path
import pairgen.shards as shards
write = shards.write_shard
def slow_write(*args, **kwargs):  # give the parent time to kill between shards
    info = write(*args, **kwargs)
    time.sleep(0.15)
    return info
shards.write_shard = slow_write
from pairgen.export import export
export(Path(sys.argv[1]), Path(sys.argv[2]), 64, samples_per_shard=8, block_size=8, show_progress=False,
       resume=sys.argv[3] == "resume")
"""


def kill_after_first_shard(ckpt_path: Path, out: Path, shards_before_kill: int = 1, resume: bool = False) -> None:
    """Run an export (n=64, 8 per shard) in a subprocess and SIGKILL it once `shards_before_kill` shards exist."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(ckpt_path), str(out),
                             "resume" if resume else "fresh"], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    try:
        while len(list(out.glob("shard-*.h5"))) < shards_before_kill:
            assert proc.poll() is None, "export exited before it could be killed"
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_sigkill_then_resume(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    kill_after_first_shard(tiny_ckpt, out)
    assert not (out / "manifest.json").exists()
    assert verify_directory(out)  # incomplete: reported, not silently accepted
    written = {p.name: p.read_bytes() for p in out.glob("shard-*.h5")}
    assert 1 <= len(written) < 8
    export(tiny_ckpt, out, 64, samples_per_shard=8, block_size=8, resume=True, show_progress=False)
    ref = load(export(tiny_ckpt, tmp_path / "ref", 64, samples_per_shard=8, block_size=8, show_progress=False))
    data = load(out)
    assert sorted(data.sample_index.tolist()) == list(range(64))
    assert_same(data, ref)
    assert all((out / name).read_bytes() == content for name, content in written.items())


@pytest.mark.slow
def test_repeated_kills_converge(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Kill resumed exports again and again, each time a little further on; the end result is still exact."""
    out = tmp_path / "e"
    for shards_before_kill in range(1, 8):
        kill_after_first_shard(tiny_ckpt, out, shards_before_kill, resume=shards_before_kill > 1)
        assert not (out / "manifest.json").exists()
    export(tiny_ckpt, out, 64, samples_per_shard=8, block_size=8, resume=True, show_progress=False)
    ref = load(export(tiny_ckpt, tmp_path / "ref", 64, samples_per_shard=8, block_size=8, show_progress=False))
    assert_same(load(out), ref)
