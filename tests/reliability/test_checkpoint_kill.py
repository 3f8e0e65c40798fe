"""Promise 2: SIGKILL during training (and during checkpoint saves) never costs the newest complete checkpoint;
`--resume` continues from it and restores everything: N steps straight equal N/2 + SIGKILL + resume + N/2 exactly.

Saves are made slow in the killed workers (each fsync sleeps) so that random kills often land inside a save, with
a complete temp file written but not yet renamed, or between the rename and the pruning of older checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import pairgen.checkpoint as ckpt
from pairgen.core import torchio
import pairgen.train as train_module
from pairgen.train import train
from tests.fixtures import small_config
from tests.reliability import faults

ITERS = 12
KEEP = 2


def config(**overrides):
    values = dict(iters=ITERS, tick_every=1, sample_every=5, checkpoint_every=1, keep_checkpoints=KEEP,
                  critic_norm="batch")
    return small_config(**{**values, **overrides})


@pytest.fixture(scope="module")
def straight(real: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple], dict[str, Any]]:
    """(ticks, final checkpoint) of ITERS steps without interruption."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("straight") / "run"
    final = train(config(checkpoint_every=ITERS), run, real, show_progress=False)
    return effective_ticks(run), ckpt.load_checkpoint(final)


def effective_ticks(run: Path) -> list[tuple]:
    """Tick records as the finished run sees them: a tick at step s replaces every earlier tick at steps >= s
    (work after the checkpoint a resume started from, or a killed attempt that never saved, is redone)."""
    kept: list[tuple] = []
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "tick":
            kept = [t for t in kept if t[0] < record["step"]]
            kept.append(tuple(record[k] for k in ("step", "critic_loss", "wasserstein", "gp", "generator_loss",
                                                   "diversity")))
    return kept


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Bitwise equality of nested checkpoint contents (tensors, dicts, lists, numbers, strings)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def train_with_slow_saves(real: Path, run: Path) -> None:
    """Worker: train (resuming when a checkpoint exists) with every fsync delayed by 20 ms."""
    fsync = os.fsync

    def slow(fd: int) -> None:
        time.sleep(0.02)
        fsync(fd)

    os.fsync = slow   # only in this forked worker
    train(config(), run, real, resume=ckpt.newest_checkpoint(run) is not None, show_progress=False)


def check_checkpoints(run: Path, newest_before: int) -> int:
    """Every final-named checkpoint loads and is finite; the newest complete one never goes backwards."""
    found = ckpt._checkpoints(run / ckpt.CHECKPOINT_DIR)
    for step, path in found:
        state = ckpt.load_checkpoint(path)            # raises on a torn or unreadable file
        assert state["step"] == step and torchio.non_finite(state, ("generator", "critic", "opt_g", "opt_d")) is None
    newest = found[-1][0] if found else 0
    assert newest >= newest_before, f"newest checkpoint went from step {newest_before} to {newest}"
    assert len(found) <= KEEP + 1                         # a kill between rename and pruning leaves one extra
    return newest


def kill_as_a_checkpoint_file_appears(real: Path, run: Path, stream) -> None:
    """Kill training the instant the k-th new checkpoint file (temp or final name) shows up: a save that wrote
    under the final name would leave a torn checkpoint there."""
    def names() -> set[str]:
        directory = run / ckpt.CHECKPOINT_DIR
        return {p.name for p in directory.glob("*ckpt-*")} if directory.is_dir() else set()

    k, before, seen = stream.randint(1, 3), names(), set()

    def kth_file_appeared() -> bool:
        seen.update(names() - before)
        return len(seen) >= k

    process, _ = faults.start(train_with_slow_saves, real, run)
    faults.kill_when(process, kth_file_appeared)


def kill_loop(real: Path, run: Path, straight, rounds: int, stream) -> int:
    """Kill `rounds` training workers at random moments and `rounds` more as a checkpoint file appears, check after
    each, then resume to the end in-process. Returns how many kills left a temp file (a kill inside a save)."""
    seconds = faults.timed(train_with_slow_saves, real, run.parent / "timing")
    newest, inside_save = 0, 0
    for round_ in range(2 * rounds):
        if round_ % 2:
            kill_as_a_checkpoint_file_appears(real, run, stream)
        else:
            process, _ = faults.start(train_with_slow_saves, real, run)
            faults.kill_after(process, stream.uniform(0, seconds))
        inside_save += bool(faults.temp_files(run))
        newest = check_checkpoints(run, newest)
    train(config(), run, real, resume=ckpt.newest_checkpoint(run) is not None, show_progress=False)
    resumes = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"resume"' in line]
    if newest:   # the final resume started from the newest complete checkpoint the kills left
        assert resumes[-1]["step"] == newest and resumes[-1]["checkpoint"] == f"ckpt-{newest:07d}.pt"
    ticks, final = straight
    assert effective_ticks(run) == ticks
    assert_same_state(ckpt.load_checkpoint(ckpt.checkpoint_path(run, ITERS)), {**final, "config": config().to_json()})
    return inside_save


def test_sigkill_at_random_moments_keeps_newest_checkpoint(real: Path, straight, tmp_path: Path) -> None:
    kill_loop(real, tmp_path / "run", straight, rounds=2, stream=faults.rng("checkpoint-kill"))


def test_kill_at_half_then_resume_gives_identical_losses(real: Path, straight, tmp_path: Path) -> None:
    """N/2 steps, SIGKILL right after the N/2 checkpoint (no clean shutdown), resume, N/2 more: identical losses,
    networks, optimiser moments, step, RNG states and data order."""
    run = tmp_path / "run"

    def killed_at_half() -> None:
        save = train_module.save_checkpoint

        def save_then_die(path: Path, state: dict) -> None:
            save(path, state)
            if state["step"] == ITERS // 2:
                os.kill(os.getpid(), signal.SIGKILL)

        train_module.save_checkpoint = save_then_die   # only in this forked worker
        train(config(checkpoint_every=ITERS // 2), run, real, show_progress=False)

    process, _ = faults.start(killed_at_half)
    process.join(120)
    assert process.exitcode == -signal.SIGKILL
    assert ckpt.newest_checkpoint(run).name == f"ckpt-{ITERS // 2:07d}.pt"
    final = train(config(checkpoint_every=ITERS // 2), run, real, resume=True, show_progress=False)
    ticks, reference = straight
    assert effective_ticks(run) == ticks
    resumed = ckpt.load_checkpoint(final)
    for part in ("generator", "critic", "opt_g", "opt_d", "rng", "data_order", "step"):
        assert_same_state(resumed[part], reference[part], part)


def test_old_checkpoint_is_pruned_only_after_the_new_one_is_complete(real: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    unlink = pathlib.Path.unlink
    pruned: list[str] = []

    def checked_unlink(self: pathlib.Path, missing_ok: bool = False) -> None:
        if ckpt._NAME.match(self.name):       # pruning an old checkpoint: the newer one must be complete by now
            newest = ckpt.newest_checkpoint(self.parent)
            assert newest is not None and newest != self
            assert ckpt.load_checkpoint(newest)["step"] > int(self.name[5:12])
            pruned.append(self.name)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", checked_unlink)
    train(dataclasses.replace(config(), iters=5), run, real, show_progress=False)
    assert pruned == [f"ckpt-{s:07d}.pt" for s in (1, 2, 3)]


@pytest.mark.slow
def test_many_random_kills(real: Path, straight, tmp_path: Path) -> None:
    inside_save = kill_loop(real, tmp_path / "run", straight, rounds=20, stream=faults.rng("checkpoint-kill-many"))
    assert inside_save >= 1, "no kill landed inside a checkpoint save; widen the save window"
