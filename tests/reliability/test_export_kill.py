"""Promise 1: SIGKILL an export at random moments (also one rank of two); final-named shards are always complete
and byte-identical to an uninterrupted export, and `--resume` then finishes with indices 0…N-1, once each.

Kill moments are drawn uniformly over the length of an uninterrupted export (load, generate, write, fsync, rename,
manifest), from a seeded stream (tests.reliability.faults.SEED). The fast cases kill a few times; `-m slow` many.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pairgen import shards
from pairgen.export import export
from tests.pairgen.test_export import make_checkpoint
from tests.reliability import faults

N, PER_SHARD, BLOCK = 64, 8, 8


def run_export(ckpt: Path, out: Path, resume: bool = False, rank: int = 0, world_size: int = 1) -> None:
    export(ckpt, out, N, samples_per_shard=PER_SHARD, block_size=BLOCK, resume=resume, show_progress=False,
           rank=rank, world_size=world_size)


def run_export_slow_fsync(ckpt: Path, out: Path, resume: bool = False) -> None:
    """run_export with every fsync delayed: written-but-not-renamed temp files live long enough to be killed."""
    fsync = os.fsync

    def slow(fd: int) -> None:
        time.sleep(0.03)
        fsync(fd)

    os.fsync = slow   # only in this forked worker
    run_export(ckpt, out, resume)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "00000-tiny")


@pytest.fixture(scope="module")
def reference(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], float]:
    """(file → sha256 of an uninterrupted export, its wall time in a forked worker)."""
    out = tmp_path_factory.mktemp("reference") / "e"
    seconds = faults.timed(run_export, ckpt, out)
    assert shards.verify_directory(out) == []
    return {s.file: s.sha256 for s in shards.read_manifest(out).shards}, seconds


def check_after_kill(out: Path, expected: dict[str, str]) -> dict[str, bytes]:
    """Every final-named file is complete: a shard is byte-identical to the uninterrupted export's (so it matches
    that manifest's sha256), and a manifest, if written, vouches for a complete, valid directory."""
    final = {p.name: p.read_bytes() for p in out.glob("shard-*.h5")} if out.is_dir() else {}
    for name, content in final.items():
        assert hashlib.sha256(content).hexdigest() == expected[name], f"{name} is torn or differs"
    if (out / shards.MANIFEST_NAME).exists():
        assert shards.verify_directory(out) == []
        assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    return final


def check_complete(out: Path, expected: dict[str, str], kept: dict[str, bytes]) -> None:
    """After resume: valid directory, indices 0…N-1 once each, the reference bytes, and pre-kill shards untouched."""
    assert shards.verify_directory(out) == []
    assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    index = shards.load_shards(out).sample_index
    assert len(index) == N and np.array_equal(np.sort(index), np.arange(N))
    for name, content in kept.items():
        assert (out / name).read_bytes() == content, f"{name} was rewritten by the resume"
    assert faults.temp_files(out) == []


def kill_and_resume(ckpt: Path, out: Path, expected: dict[str, str], seconds: float, stream,
                    target=run_export) -> None:
    """One fresh export killed at a random moment, one resume killed at another, then a resume to the end."""
    kept: dict[str, bytes] = {}
    for resume in (False, True):
        moment = stream.uniform(0, 1.2 * seconds * (4 if target is run_export_slow_fsync else 1))
        process, _ = faults.start(target, ckpt, out, resume)
        faults.kill_after(process, moment)
        kept.update(check_after_kill(out, expected))
    run_export(ckpt, out, resume=True)
    check_complete(out, expected, kept)


def test_sigkill_at_random_moments_then_resume(ckpt: Path, reference, tmp_path: Path) -> None:
    expected, seconds = reference
    stream = faults.rng("export-kill")
    for round_, target in enumerate((run_export, run_export_slow_fsync)):
        kill_and_resume(ckpt, tmp_path / f"e{round_}", expected, seconds, stream, target)


def test_one_rank_of_two_killed_then_resume(ckpt: Path, reference, tmp_path: Path) -> None:
    """Rank 1 dies at a random moment; rank 0 is torn down a little later (as torchrun's agent does)."""
    expected, seconds = reference
    stream = faults.rng("export-rank-kill")
    out = tmp_path / "e"
    ranks = [faults.start(run_export, ckpt, out, False, rank, 2)[0] for rank in (0, 1)]
    faults.kill_after(ranks[1], stream.uniform(0, seconds))
    faults.kill_after(ranks[0], stream.uniform(0, seconds / 2))
    kept = check_after_kill(out, expected)
    resumed = [faults.start(run_export, ckpt, out, True, rank, 2)[0] for rank in (0, 1)]
    for process in resumed:
        process.join(120)
        assert process.exitcode == 0
    check_complete(out, expected, kept)


@pytest.mark.slow
def test_many_random_kills(ckpt: Path, reference, tmp_path: Path) -> None:
    expected, seconds = reference
    stream = faults.rng("export-kill-many")
    for round_ in range(30):
        target = run_export if round_ % 2 else run_export_slow_fsync
        kill_and_resume(ckpt, tmp_path / f"e{round_}", expected, seconds, stream, target)


@pytest.mark.slow
def test_repeated_kills_of_one_directory_and_ranks(ckpt: Path, reference, tmp_path: Path) -> None:
    """Kill the same export again and again (fresh, then resumed, alternating world sizes 1 and 3)."""
    expected, seconds = reference
    stream = faults.rng("export-kill-chain")
    out, kept = tmp_path / "e", {}
    for attempt in range(30):
        world_size = 1 if attempt % 2 == 0 else 3
        workers = [faults.start(run_export, ckpt, out, attempt > 0, rank, world_size)[0] for rank in range(world_size)]
        victim = stream.randrange(world_size)
        faults.kill_after(workers[victim], stream.uniform(0, 1.2 * seconds))
        for process in workers:
            faults.kill_after(process, stream.uniform(0, seconds / 3))
        kept.update(check_after_kill(out, expected))
    run_export(ckpt, out, resume=True)
    check_complete(out, expected, kept)
