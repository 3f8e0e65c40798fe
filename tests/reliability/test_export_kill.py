"""Promise 1: SIGKILL an export at random moments (also one rank of two; under `-m slow` also a real torchrun
worker); final-named shards are always complete and byte-identical to an uninterrupted export, and `--resume`
then finishes with indices 0…N-1, once each, keeping the bytes written before the kill.

Kill moments are drawn uniformly over the length of an uninterrupted export (load, generate, write, fsync, rename,
manifest), from a seeded stream (tests.reliability.faults.SEED). The fast cases kill a few times; `-m slow` many.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pairgen import shards
from pairgen.export import export
from pairgen.verify import verify_directory
from tests.fixtures import make_checkpoint
from tests.reliability import faults

N, PER_SHARD, BLOCK = 64, 8, 8


def run_export(ckpt: Path, out: Path, resume: bool = False, rank: int = 0, world_size: int = 1,
               writers: int = 1) -> None:
    export(ckpt, out, N, samples_per_shard=PER_SHARD, block_size=BLOCK, resume=resume, show_progress=False,
           rank=rank, world_size=world_size, writers=writers)


def run_export_parallel_writers(ckpt: Path, out: Path, resume: bool = False) -> None:
    """run_export with 3 compression threads: two shards are written at once when the kill comes."""
    run_export(ckpt, out, resume, writers=3)


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
    assert verify_directory(out) == []
    return {s.file: s.sha256 for s in shards.read_manifest(out).shards}, seconds


def check_after_kill(out: Path, expected: dict[str, str]) -> dict[str, bytes]:
    """Every final-named file is complete: a shard is byte-identical to the uninterrupted export's (so it matches
    that manifest's sha256), and a manifest, if written, vouches for a complete, valid directory."""
    final = {p.name: p.read_bytes() for p in out.glob("shard-*.h5")} if out.is_dir() else {}
    for name, content in final.items():
        assert hashlib.sha256(content).hexdigest() == expected[name], f"{name} is torn or differs"
    if (out / shards.MANIFEST_NAME).exists():
        assert verify_directory(out) == []
        assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    return final


def check_complete(out: Path, expected: dict[str, str], kept: dict[str, bytes]) -> None:
    """After resume: valid directory, indices 0…N-1 once each, the reference bytes, pre-kill shards unchanged."""
    assert verify_directory(out) == []
    assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    index = shards.load_shards(out).sample_index
    assert len(index) == N and np.array_equal(np.sort(index), np.arange(N))
    for name, content in kept.items():
        assert (out / name).read_bytes() == content, f"{name} changed after the kill"
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


def kill_as_a_shard_file_appears(ckpt: Path, out: Path, expected: dict[str, str], stream) -> dict[str, bytes]:
    """Kill the export the instant its k-th shard file (temp or final name, k random) shows up: a writer that
    wrote under the final name would be caught with a partial file there."""
    def names() -> set[str]:
        return {p.name for p in out.glob("*shard-*")} if out.is_dir() else set()

    k, before, seen = stream.randint(1, 4), names(), set()

    def kth_file_appeared() -> bool:
        seen.update(names() - before)
        return len(seen) >= k

    process, _ = faults.start(run_export, ckpt, out, out.is_dir())
    faults.kill_when(process, kth_file_appeared)
    return check_after_kill(out, expected)


def kill_rounds(ckpt: Path, reference, tmp_path: Path, stream_name: str, rounds: int, write_kills: int) -> None:
    """`rounds` kill+resume cycles at random moments (alternating plain / slow-fsync exports), then
    `write_kills` kills of one directory just as a shard file appears, then one resume that must finish it."""
    expected, seconds = reference
    stream = faults.rng(stream_name)
    for round_ in range(rounds):
        target = run_export_slow_fsync if round_ % 2 else run_export
        kill_and_resume(ckpt, tmp_path / f"e{round_}", expected, seconds, stream, target)
    out, kept = tmp_path / "at-write", {}
    for _ in range(write_kills):
        kept.update(kill_as_a_shard_file_appears(ckpt, out, expected, stream))
    run_export(ckpt, out, resume=True)
    check_complete(out, expected, kept)


def test_sigkill_at_random_moments_then_resume(ckpt: Path, reference, tmp_path: Path) -> None:
    kill_rounds(ckpt, reference, tmp_path, "export-kill", rounds=2, write_kills=3)


def test_sigkill_with_parallel_writers_then_resume(ckpt: Path, reference, tmp_path: Path) -> None:
    """Killed while several writer threads work, then resumed with one: the single-writer reference bytes."""
    expected, seconds = reference
    kill_and_resume(ckpt, tmp_path / "e", expected, seconds, faults.rng("export-kill-writers"),
                    target=run_export_parallel_writers)


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
    kill_rounds(ckpt, reference, tmp_path, "export-kill-many", rounds=30, write_kills=20)


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


def _rank_of(pid: int) -> int | None:
    """RANK from a process's environment (torchrun sets it for each worker), None if unreadable."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(item[5:]) for item in env if item.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def _workers(agent: subprocess.Popen) -> dict[int, int]:
    """rank → pid of torchrun's worker processes (the agent's children)."""
    children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return {rank: pid for pid in pids if (rank := _rank_of(pid)) is not None}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find torchrun's workers")
def test_real_torchrun_rank_killed_then_resume(ckpt: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m pairgen export`: SIGKILL one worker at a random moment (the agent then tears
    the group down), twice; `--resume` under torchrun then completes with the single-process bytes."""
    n = 512
    reference = export(ckpt, tmp_path / "ref", n, samples_per_shard=PER_SHARD, block_size=BLOCK, show_progress=False)
    expected = {s.file: s.sha256 for s in shards.read_manifest(reference).shards}
    out, kept, stream, interrupted = tmp_path / "e", {}, faults.rng("export-torchrun"), 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "pairgen", "export", "--checkpoint", str(ckpt), "--out", str(out), "--num-samples", str(n),
               "--samples-per-shard", str(PER_SHARD), "--block-size", str(BLOCK), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        agent = subprocess.Popen(command + (["--resume"] if attempt else []), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while len(_workers(agent)) < 2 or not list(out.glob("*shard-*")):   # workers up, export under way
                assert agent.poll() is None and time.monotonic() < deadline, "torchrun export never started"
                time.sleep(0.01)
            time.sleep(stream.uniform(0, 0.5))
            victim = _workers(agent).get(stream.randrange(2))
            if victim is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            agent.wait(120)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        kept.update(check_after_kill(out, expected))
        interrupted += not (out / shards.MANIFEST_NAME).exists()
    assert interrupted, "every kill came too late: the export had finished"
    subprocess.run(command + ["--resume"], env=env, check=True, capture_output=True, timeout=300)
    assert verify_directory(out) == []
    assert {s.file: s.sha256 for s in shards.read_manifest(out).shards} == expected
    index = shards.load_shards(out).sample_index
    assert np.array_equal(np.sort(index), np.arange(n))
    assert all((out / name).read_bytes() == content for name, content in kept.items())
