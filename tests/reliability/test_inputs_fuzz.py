"""Promise 6: a preflight (`pairgen prepare --check`) reports every problem of a dataset tree at once, the same
problems stop prepare and train before any work, and every loader survives mutated bytes with a clean error.

The fuzz loop runs in a forked worker (a segfault or hang cannot take the test run down, and is reported with the
mutation that caused it). Each attempt: mutate a valid file (bit flips, random header bytes, truncation, zeroed
runs, inserted/deleted/spliced bytes, extreme integers), load it, and classify: accepted (then the result must be
sane), a UserError naming the file (clean), or anything else (a failure). The fast run tries FAST mutations per
loader; `-m slow` tries SLOW.

HDF5: libhdf5 itself can spin forever on some damaged bytes (the fuzzer found a corrupt global heap that does).
So no reader hands unverified bytes to it: load_shards checks the manifest's sha256 first (verify_checksums=False
is for files the caller trusts), and `pairgen verify` inspects a shard that failed its checksum in a forked
child with a time limit. Those are the entry points fuzzed here.
"""

from __future__ import annotations

import faulthandler
import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from pairgen import shards
from pairgen import verify as verify_module
from pairgen.core import images
from pairgen.datasets import imageio
from pairgen.core.errors import UserError
from pairgen.prepare import check_dataset, prepare
from tests.fixtures import make_real_split
from tests.pairgen import dataset_trees as trees
from tests.reliability import faults

FAST, SLOW = 25, 400
ATTEMPT_TIMEOUT_S = 20      # a single load taking longer counts as a hang


# ------------------------------------------------------------------------------------------------ preflight


def broken_folder_tree(root: Path) -> dict[str, str]:
    """A folder tree with one of each problem; returns file name → the text its problem line must contain."""
    trees.folder_tree(root, 9)
    (root / "masks" / "img00.png").unlink()                                        # image without mask
    (root / "images" / "img01.png").unlink()                                       # mask without image
    trees.write_png(root / "masks" / "img02.png", np.zeros((8, 16), np.uint8))     # size mismatch
    trees.write_png(root / "masks" / "img03.png", np.where(trees.disc(16, 8, 8, 4), 7, 200).astype(np.uint8))
    whole = (root / "images" / "img04.png").read_bytes()
    (root / "images" / "img04.png").write_bytes(whole[: len(whole) // 2])          # truncated image
    (root / "masks" / "img05.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # unreadable mask
    return {"img00.png": "no mask", "img01.png": "mask without an image", "img02.png": "mask is 8x16",
            "img03.png": "unexpected label values 7, 200", "img04.png": "unreadable or corrupt image",
            "img05.png": "unreadable or corrupt image"}


def test_check_reports_every_problem_at_once_and_prepare_train_stop_before_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    expected = broken_folder_tree(root)
    problems = check_dataset("folder", str(root))
    assert len(problems) == len(expected), problems
    for name, text in expected.items():
        assert any(name in p and text in p for p in problems), (name, problems)
    code, err = faults.cli(monkeypatch, capsys, "pairgen", "prepare", "--dataset", "folder", "--root", str(root),
                           "--check")
    assert code == 2 and "Traceback" not in err
    for name, text in expected.items():          # each problem on its own line, naming its file
        assert any(name in line and text in line for line in err.splitlines()), (name, err)
    # the same tree stops prepare and train before anything is written
    ws = tmp_path / "ws"
    with pytest.raises(UserError, match=r"folder"):
        prepare("folder", str(root), 1, 8, 8, workspace=ws, show_progress=False)
    code, err = faults.cli(monkeypatch, capsys, "pairgen", "train", "--dataset", "folder", "--root", str(root),
                           "--preset", "tiny", "--workspace", str(ws))
    assert code == 2 and "img00.png: no mask" in err and len(err.splitlines()) == 1
    assert not ws.exists() or [p for p in ws.rglob("*") if p.is_file()] == []


def test_check_reports_broken_jsrt_and_scr_files(tmp_path: Path) -> None:
    root = trees.scr_official_tree(tmp_path / "scr")
    image = root / "JSRT" / "All247images" / "JPCLN002.IMG"
    image.write_bytes(image.read_bytes()[:-2])                                     # truncated .IMG
    other = root / "JSRT" / "All247images" / "JPCNN001.IMG"
    other.write_bytes(np.full((64, 64), 0xFFFF, ">u2").tobytes())                  # not 12-bit data
    gif = root / "scratch" / "fold1" / "masks" / "heart" / "JPCLN002.gif"
    gif.write_bytes(gif.read_bytes()[:20])                                         # truncated GIF
    problems = check_dataset("scr-lung", str(root), ("left lung", "heart"))
    text = "\n".join(problems)
    assert "JPCLN002.IMG" in text and "not a square 16-bit JSRT image" in text
    assert "JPCNN001.IMG" in text and "exceeds 12 bits" in text
    assert len(problems) == 2, text   # one error per case: the .IMG fails before its masks are read


# ------------------------------------------------------------------------------------------------ fuzzing


def mutate(data: bytes, r: random.Random) -> bytes:
    """One random structural mutation of `data` (never the identity for non-empty input)."""
    b = bytearray(data)
    kind = r.choice(["flip", "header", "truncate", "zero-run", "insert", "delete", "splice", "extreme"])
    if kind == "flip":
        for _ in range(r.randint(1, 16)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
    elif kind == "header":
        for _ in range(r.randint(1, 8)):
            b[r.randrange(min(len(b), 256))] = r.randrange(256)
    elif kind == "truncate":
        b = b[: r.randrange(len(b))]
    elif kind == "zero-run":
        at = r.randrange(len(b))
        run = min(len(b) - at, r.randint(1, 512))
        b[at:at + run] = bytes(run)
    elif kind == "insert":
        at = r.randrange(len(b) + 1)
        b[at:at] = bytes(r.randrange(256) for _ in range(r.randint(1, 64)))
    elif kind == "delete":
        at = r.randrange(len(b))
        del b[at:at + r.randint(1, 64)]
    elif kind == "splice":
        src, dst, size = r.randrange(len(b)), r.randrange(len(b)), r.randint(4, 256)
        b[dst:dst + size] = data[src:src + size]
    else:   # a size or offset field set to an extreme
        value = r.choice([0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF])
        width = r.choice([2, 4, 8])
        at = r.randrange(max(1, len(b) - width))
        b[at:at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, r.choice(["little", "big"]))
    return bytes(b) if bytes(b) != data else bytes(b) + b"\0"


def _sane_image(array: np.ndarray) -> None:
    assert array.dtype == np.float32 and array.ndim == 3 and np.isfinite(array).all()
    assert array.min() >= 0.0 and array.max() <= 1.0


def _sane_mask(array: np.ndarray) -> None:
    assert array.dtype == np.uint8 and array.ndim == 2


def _sane_shards(result: shards.ShardSet) -> None:
    assert result.images.dtype == np.uint8 and result.images.ndim == 4
    assert len(result.masks) == len(result.images) == len(result.sample_index)


def build_corpus(directory: Path) -> dict[str, tuple[Path, Callable[[Path], Any], Callable[[Any], None]]]:
    """loader name → (valid file to mutate, load(path), sanity check of an accepted result)."""
    from pairgen import checkpoint as ckpt
    from segbench.predict import load_weights, save_weights
    from segbench.unet import UNet
    from tests.fixtures import make_state

    gray = trees.write_png(directory / "png" / "gray.png", trees.chest_like(16))
    rgb = trees.write_png(directory / "png" / "rgb.png", np.dstack([trees.chest_like(16)] * 3))
    label = trees.write_png(directory / "png" / "label.png", (np.arange(256) % 5).astype(np.uint8).reshape(16, 16))
    gif = trees.write_gif(directory / "gif" / "JPCLN001.gif", trees.disc(16, 8, 8, 5))
    raw = trees.write_jsrt_img(directory / "img" / "JPCLN001.IMG", np.arange(32 * 32).reshape(32, 32) % 4096)
    real = make_real_split(directory / "h5real", 3, height=8, width=8, split="test")
    synthetic = directory / "h5synth"
    synthetic.mkdir()
    attrs = {"kind": "synthetic", "dataset": "x", "split": "synthetic", "fold": "fold1", "class_names": ["a", "b"]}
    rng = np.random.default_rng(0)
    info = shards.write_shard(synthetic / "shard-00000.h5", {
        "images": rng.integers(0, 255, (3, 8, 8, 1), dtype=np.uint8), "masks": np.zeros((3, 8, 8), np.uint8),
        "sample_index": np.arange(3, dtype=np.int64), "masks_raw": np.zeros((3, 8, 8, 1), np.float16),
        "latents": np.zeros((3, 4), np.float32)}, attrs)
    shards.write_manifest(synthetic, attrs, [info])
    checkpoint = ckpt.checkpoint_path(directory / "run", 1)
    ckpt.save_checkpoint(checkpoint, make_state(1))
    seg_run = directory / "seg"
    seg_run.mkdir()
    meta = {"in_channels": 1, "n_classes": 2, "depth": 1, "filters": 2, "pooling": "max",
            "class_names": ["a", "b"], "height": 8, "width": 8}
    save_weights(seg_run / "weights.pt", UNet(1, 1, 1, 2, "max"), meta)

    def verify(path: Path) -> list[str]:
        problems = verify_module.verify_directory(path.parent)
        assert isinstance(problems, list) and all(isinstance(p, str) and "\n" not in p for p in problems)
        if problems:   # report, never raise: turn the findings into the clean outcome
            raise UserError(f"{path}: {problems[0]}")
        return problems

    return {
        "png-image-gray": (gray, lambda p: images.read_image(p, 1), _sane_image),
        "png-image-rgb": (rgb, lambda p: images.read_image(p, 3), _sane_image),
        "png-label": (label, images.read_label_image, _sane_mask),
        "gif-mask": (gif, images.read_label_image, _sane_mask),
        "jsrt-img": (raw, imageio.read_jsrt_raw, _sane_image),
        "jsrt-img-shape": (raw, imageio.image_shape, lambda s: None),
        "hdf5-load": (real / "shard-00000.h5", lambda p: shards.load_shards(p.parent), _sane_shards),
        "hdf5-load-synthetic": (synthetic / "shard-00000.h5", lambda p: shards.load_shards(p.parent, with_raw=True),
                                _sane_shards),
        "hdf5-verify": (real / "shard-00000.h5", verify, lambda r: None),
        "hdf5-verify-synthetic": (synthetic / "shard-00000.h5", verify, lambda r: None),
        "manifest": (real / shards.MANIFEST_NAME, lambda p: shards.load_shards(p.parent), _sane_shards),
        "checkpoint": (checkpoint, ckpt.load_checkpoint, lambda s: None),
        "checkpoint-generator": (checkpoint, ckpt.load_generator, lambda r: None),
        "segbench-weights": (seg_run / "weights.pt", lambda p: load_weights(p.parent, torch.device("cpu")),
                             lambda r: None),
    }


def fuzz_worker(directory: Path, attempts: int, conn) -> None:
    """Forked worker: for each loader, `attempts` mutated files; sends ('try', loader, i) before each attempt and
    ('done', results) at the end, so a crash or hang names the mutation that caused it."""
    torch.set_num_threads(1)
    verify_module.UNTRUSTED_PARSE_TIMEOUT_S = 5.0   # verify's isolated parse of a damaged shard: report hangs quickly
    corpus = build_corpus(directory)
    results: dict[str, dict[str, Any]] = {}
    for name, (path, load, sane) in corpus.items():
        pristine = path.read_bytes()
        tally: dict[str, Any] = {"accepted": 0, "clean": 0, "failures": []}
        for i in range(attempts):
            r = faults.rng(f"fuzz-{name}-{i}")
            path.write_bytes(mutate(pristine, r))
            conn.send(("try", name, i))
            faulthandler.dump_traceback_later(ATTEMPT_TIMEOUT_S, exit=True)
            try:
                sane(load(path))
                tally["accepted"] += 1
            except UserError as exc:
                if "\n" in str(exc) or not str(exc):
                    tally["failures"].append((i, f"multi-line or empty UserError: {exc!r}"))
                else:
                    tally["clean"] += 1
            except BaseException as exc:  # noqa: BLE001 (exactly what the test looks for)
                tally["failures"].append((i, f"{exc.__class__.__name__}: {str(exc)[:200]}"))
            finally:
                faulthandler.cancel_dump_traceback_later()
        path.write_bytes(pristine)
        results[name] = tally
    conn.send(("done", results))
    conn.close()


def run_fuzz(tmp_path: Path, attempts: int) -> dict[str, dict[str, Any]]:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=fuzz_worker, args=(tmp_path / "corpus", attempts, sender), daemon=True)
    process.start()
    sender.close()
    last, results = None, None
    while results is None:
        if not receiver.poll(ATTEMPT_TIMEOUT_S + 30):
            faults.kill(process)
            raise AssertionError(f"fuzz worker silent (hang?) after {last}")
        try:
            message = receiver.recv()
        except EOFError:
            process.join(10)
            raise AssertionError(f"fuzz worker died (exit code {process.exitcode}) on attempt {last} "
                                 f"(reproduce: mutate(..., faults.rng('fuzz-{last[1]}-{last[2]}')))") from None
        if message[0] == "try":
            last = message
        else:
            results = message[1]
    process.join(30)
    assert process.exitcode == 0
    shutil.rmtree(tmp_path / "corpus", ignore_errors=True)
    return results


def check_results(results: dict[str, dict[str, Any]], attempts: int) -> None:
    failures = {name: tally["failures"] for name, tally in results.items() if tally["failures"]}
    assert failures == {}, json.dumps(failures, indent=1)
    for name, tally in results.items():
        assert tally["accepted"] + tally["clean"] == attempts, name
    # checksummed readers never accept a mutated shard; verify always finds something wrong with one
    for name in ("hdf5-load", "hdf5-load-synthetic", "hdf5-verify", "hdf5-verify-synthetic"):
        assert results[name]["accepted"] == 0, name


def test_every_loader_survives_mutated_bytes(tmp_path: Path) -> None:
    check_results(run_fuzz(tmp_path, FAST), FAST)


@pytest.mark.slow
def test_every_loader_survives_many_mutated_bytes(tmp_path: Path) -> None:
    check_results(run_fuzz(tmp_path, SLOW), SLOW)
