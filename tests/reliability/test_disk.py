"""Promise 7: a full disk or a read-only output directory during export or training stops the command with one
clear line (path + the system's reason), leaves every complete file untouched, and is never swallowed.

Full disk: a real 4 MiB tmpfs filled to the last byte (needs root + mount; skipped otherwise) and RLIMIT_FSIZE
(EFBIG: works anywhere), both applied inside a forked worker at a chosen moment. Read-only: a read-only bind
mount as root (root ignores permission bits), chmod 0o555 otherwise.
"""

from __future__ import annotations

import errno
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import typer
from rich.console import Console

import pairgen.train as train_module
from pairgen import checkpoint as ckpt
from pairgen.core import files
from pairgen import shardfilters, shards
from pairgen.core.cli import run_app
from pairgen.core.errors import StorageError, writing
from pairgen.export import export
from pairgen.train import train
from pairgen.verify import verify_directory
from tests.fixtures import make_checkpoint, small_config
from tests.reliability import faults

REASONS = {"tmpfs": "No space left on device", "rlimit": "File too large"}
READ_ONLY_REASONS = ("Read-only file system", "Permission denied")


@pytest.fixture(scope="module")
def gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "00000-tiny")


def run_export(gan: Path, out: Path, n: int, resume: bool = False, writers: int | None = None) -> Path:
    return export(gan, out, n, samples_per_shard=8, block_size=8, resume=resume, show_progress=False,
                  writers=writers)


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.h5"))}


def assert_storage_error(outcome: tuple, path: Path, reasons: tuple[str, ...]) -> str:
    """The worker stopped with a one-line StorageError naming something under `path` and the system's reason."""
    assert outcome[0] == "error", outcome
    kind, message = outcome[1], outcome[2]
    assert kind == "pairgen.core.errors.StorageError", outcome[3]
    assert "\n" not in message and str(path) in message and any(r in message for r in reasons), message
    return message


@pytest.mark.parametrize("writers", [1, 3])
@pytest.mark.parametrize("mechanism", ["tmpfs", "rlimit"])
def test_export_on_a_full_disk(mechanism: str, writers: int, gan: Path, tmp_path: Path) -> None:
    """With 3 writers two shards are written at once, both fail; the first one's error is reported."""
    with faults.full_disk(mechanism, tmp_path / "disk") as disk:
        out = run_export(gan, disk.directory / "e", 16)
        complete = shard_bytes(out)

        def extend_on_full_disk() -> None:
            disk.fill()
            run_export(gan, out, 40, resume=True, writers=writers)

        outcome = faults.run(extend_on_full_disk)
        disk.empty()
        message = assert_storage_error(outcome, out / "shard-00002.h5", (REASONS[mechanism],))
        assert "shard-00002.h5" in message
        assert shard_bytes(out) == complete and faults.temp_files(out) == []
        assert not (out / shards.MANIFEST_NAME).exists()          # incomplete, and marked so
        run_export(gan, out, 40, resume=True)                     # space is back: resume finishes
        assert verify_directory(out) == []
        assert sorted(shards.load_shards(out).sample_index.tolist()) == list(range(40))
        assert all((out / name).read_bytes() == content for name, content in complete.items())


@pytest.mark.parametrize("where", ["shard-writer", "compress"])
def test_export_writer_thread_failure(where: str, gan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails in a writer thread (an I/O error in a shard writer, or any error in a compression
    thread) stops the export with that error, leaves no manifest and no temp file, keeps the complete shards, and
    a resume then writes exactly the bytes of an uninterrupted export."""
    reference = run_export(gan, tmp_path / "ref", 40, writers=1)
    expected = {s.file: s.sha256 for s in shards.read_manifest(reference).shards}
    threads: list[str] = []
    if where == "shard-writer":
        atomic_write = files.atomic_write_bytes

        def failing_write(path: Path, data: bytes) -> None:
            if path.name == "shard-00003.h5":
                threads.append(threading.current_thread().name)
                with writing(path):
                    raise OSError(errno.EIO, "Input/output error")
            atomic_write(path, data)

        monkeypatch.setattr(shards, "atomic_write_bytes", failing_write)
        error, match = StorageError, "shard-00003.h5: cannot write \\(Input/output error\\)"
    else:
        encode = shardfilters.encode_chunk
        calls = iter(range(1_000_000))

        def failing_encode(block: np.ndarray, rows: int) -> bytes:
            if next(calls) == 5:   # a chunk of the third shard (two compressed datasets per shard)
                threads.append(threading.current_thread().name)
                raise MemoryError("injected")
            return encode(block, rows)

        monkeypatch.setattr(shardfilters, "encode_chunk", failing_encode)
        error, match = MemoryError, "injected"
    out = tmp_path / "e"
    with pytest.raises(error, match=match):
        run_export(gan, out, 40, writers=3)
    assert threads and all(name.startswith(where) for name in threads), threads
    assert not (out / shards.MANIFEST_NAME).exists() and faults.temp_files(out) == []
    written = shard_bytes(out)
    assert written and all(files.sha256_file(out / name) == expected[name] for name in written)
    monkeypatch.undo()
    run_export(gan, out, 40, resume=True, writers=2)
    assert verify_directory(out) == []
    assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    assert all((out / name).read_bytes() == content for name, content in written.items())


@pytest.mark.parametrize("mechanism", ["tmpfs", "rlimit"])
def test_training_checkpoint_on_a_full_disk(mechanism: str, real: Path, tmp_path: Path) -> None:
    config = small_config(iters=4, checkpoint_every=1, sample_every=100, keep_checkpoints=2)
    with faults.full_disk(mechanism, tmp_path / "disk") as disk:
        run = disk.directory / "run"
        train(small_config(iters=2, checkpoint_every=1, sample_every=100, keep_checkpoints=2), run, real,
              show_progress=False)
        complete = faults.tree_bytes(run / "checkpoints")

        def disk_fills_before_the_next_save() -> None:
            save = train_module.save_checkpoint

            def full_then_save(path: Path, state: dict) -> None:
                disk.fill()
                save(path, state)

            train_module.save_checkpoint = full_then_save   # only in this forked worker
            train(config, run, real, resume=True, show_progress=False)

        outcome = faults.run(disk_fills_before_the_next_save)
        disk.empty()
        message = assert_storage_error(outcome, ckpt.checkpoint_path(run, 3), (REASONS[mechanism],))
        assert "ckpt-0000003.pt" in message
        assert faults.tree_bytes(run / "checkpoints") == complete          # nothing torn, nothing pruned
        assert ckpt.load_checkpoint(ckpt.newest_checkpoint(run))["step"] == 2
        assert train(config, run, real, resume=True, show_progress=False) == ckpt.checkpoint_path(run, 4)


def test_export_into_a_read_only_directory(gan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    out = run_export(gan, tmp_path / "e", 16)
    before = faults.tree_bytes(out)
    with faults.read_only(out):
        with pytest.raises(StorageError) as caught:
            run_export(gan, out, 40, resume=True)
        message = str(caught.value)
        assert str(out) in message and "\n" not in message and any(r in message for r in READ_ONLY_REASONS)
        code, err = faults.cli(monkeypatch, capsys, "pairgen", "export", "--checkpoint", str(gan), "--out",
                               str(out), "--n", "40", "--resume", "--device", "cpu")
        assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and str(out) in err
        fresh = tmp_path / "e" / "new"                            # a new --out below a read-only directory
        with pytest.raises(StorageError, match="new"):
            run_export(gan, fresh, 8)
    assert faults.tree_bytes(out) == before


def test_training_into_a_read_only_directory(real: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(small_config(iters=2, checkpoint_every=1, sample_every=100), run, real, show_progress=False)
    before = faults.tree_bytes(run)
    with faults.read_only(run / "checkpoints"):                   # logs still work; the next save cannot
        with pytest.raises(StorageError) as caught:
            train(small_config(iters=4, checkpoint_every=1, sample_every=100), run, real, resume=True,
                  show_progress=False)
        assert "ckpt-0000003.pt" in str(caught.value) and "\n" not in str(caught.value)
    assert faults.tree_bytes(run / "checkpoints") == {k[len("checkpoints/"):]: v for k, v in before.items()
                                                      if k.startswith("checkpoints/")}
    with faults.read_only(run):                                   # the whole run directory
        with pytest.raises(StorageError, match="log.jsonl"):
            train(small_config(iters=4, checkpoint_every=1), run, real, resume=True, show_progress=False)
    assert ckpt.load_checkpoint(ckpt.newest_checkpoint(run))["step"] == 2


def test_command_line_reports_unnamed_os_errors_in_one_line(capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The last safety net: an OSError no code path named still ends as one line and a non-zero exit."""
    app = typer.Typer()

    @app.command()
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/file.bin")

    monkeypatch.setattr(sys, "argv", ["tool"])
    with pytest.raises(SystemExit) as exited:
        run_app(app, Console(stderr=True))
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err == "error: /data/out/file.bin: No space left on device\n"


def test_atomic_writes_report_and_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (here: the fsync, as on a failing device) is reported, not swallowed, and
    neither a temp file nor a torn final file is left; the previous content stays."""
    target = tmp_path / "manifest.json"
    target.write_text("previous")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="manifest.json: cannot write \\(Input/output error\\)"):
        files.atomic_write_json(target, {"new": True})
    with pytest.raises(StorageError, match="shard-00000.h5"):
        shards.write_shard(tmp_path / "shard-00000.h5", {"images": np.zeros((1, 2, 2, 1), np.uint8),
                                                         "masks": np.zeros((1, 2, 2), np.uint8),
                                                         "sample_index": np.zeros(1, np.int64)},
                           {"kind": "real", "dataset": "x", "split": "train", "fold": "f", "class_names": ["a"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] and target.read_text() == "previous"
