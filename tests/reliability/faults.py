"""Fault-injection helpers shared by the reliability tests: forked workers killed with SIGKILL at chosen moments,
a full disk (a small tmpfs, or RLIMIT_FSIZE where mounting is not allowed) and a read-only directory.

Workers are forked from the test process (no interpreter start-up, so a kill loop stays cheap), run with one
torch thread, and report back through a pipe, never through the file system under test.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import resource
import shutil
import signal
import subprocess
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

SEED = int(os.environ.get("RELIABILITY_SEED", "20240611"))   # fixed by default: a failing moment is reproducible
_FORK = multiprocessing.get_context("fork")


def rng(name: str) -> random.Random:
    """A per-test random stream derived from SEED (set RELIABILITY_SEED to explore other moments)."""
    return random.Random(f"{SEED}-{name}")


def _child(target: Callable[..., Any], args: tuple, conn: Connection | None) -> None:
    import torch

    torch.set_num_threads(1)   # forked from a process with an OpenMP pool: stay single-threaded
    try:
        result = ("ok", target(*args))
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, which decides)
        result = ("error", f"{exc.__class__.__module__}.{exc.__class__.__qualname__}", str(exc),
                  traceback.format_exc())
    if conn is not None:
        conn.send(result)
        conn.close()
    os._exit(0 if result[0] == "ok" else 1)   # skip pytest's atexit handlers inherited through fork


def start(target: Callable[..., Any], *args: Any, report: bool = False) -> tuple[Any, Connection | None]:
    """Fork a worker running target(*args); with `report`, also a pipe end that receives its outcome."""
    receiver, sender = _FORK.Pipe(duplex=False) if report else (None, None)
    process = _FORK.Process(target=_child, args=(target, args, sender), daemon=True)
    process.start()
    if sender is not None:
        sender.close()
    return process, receiver


def run(target: Callable[..., Any], *args: Any, timeout: float = 120.0) -> tuple:
    """Run target(*args) in a forked worker and return ('ok', value) or ('error', type, message, traceback)."""
    process, receiver = start(target, *args, report=True)
    assert receiver is not None
    if not receiver.poll(timeout):
        kill(process)
        raise AssertionError(f"worker {target.__name__} hung for {timeout} s")
    outcome = receiver.recv()
    process.join(10)
    return outcome


def kill(process: Any) -> None:
    """SIGKILL a worker (no clean-up of any kind runs in it) and reap it."""
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)
    process.join(10)


def kill_after(process: Any, seconds: float) -> bool:
    """Let a worker run `seconds`, then SIGKILL it; True when it was killed, False when it had already ended."""
    process.join(seconds)
    alive = process.is_alive()
    kill(process)
    return alive


def kill_when(process: Any, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """SIGKILL a worker as soon as `condition()` holds (polled every 0.2 ms); True when it was killed, False when
    it ended first."""
    deadline = time.monotonic() + timeout
    while process.is_alive() and not condition():
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.0002)
    alive = process.is_alive()
    kill(process)
    return alive


def wait_for(condition: Callable[[], bool], process: Any, timeout: float = 60.0) -> None:
    """Poll until `condition()` holds; fail when the worker ended first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.is_alive(), "worker ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.002)


def timed(target: Callable[..., Any], *args: Any) -> float:
    """Wall seconds of target(*args) run to completion in a forked worker (sets the range of kill moments)."""
    began = time.perf_counter()
    outcome = run(target, *args)
    assert outcome[0] == "ok", outcome
    return time.perf_counter() - began


# ------------------------------------------------------------------------------------------------ full disk


def _mount_tmpfs(directory: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True)
    return done.returncode == 0


def _umount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], capture_output=True)


class FullDisk:
    """A directory whose disk can be filled on demand.

    'tmpfs': the directory is a small tmpfs; fill() writes a filler file until ENOSPC, empty() deletes it.
    'rlimit': fill() lowers RLIMIT_FSIZE of the *calling process* (call it in a forked worker) so that any
    write past `limit` bytes fails with EFBIG (SIGXFSZ ignored so the write raises instead of killing).
    """

    def __init__(self, mechanism: str, directory: Path, limit: int = 4096) -> None:
        self.mechanism, self.directory, self.limit = mechanism, Path(directory), limit

    def fill(self) -> None:
        if self.mechanism == "rlimit":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            return
        fd = os.open(self.directory / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for block in (b"\0" * (1 << 16), b"\0"):   # big blocks, then byte by byte: the last page too
                with contextlib.suppress(OSError):
                    while os.write(fd, block):
                        pass
        finally:
            os.close(fd)

    def empty(self) -> None:
        if self.mechanism == "tmpfs":
            (self.directory / ".filler").unlink(missing_ok=True)


@contextlib.contextmanager
def full_disk(mechanism: str, directory: Path, size: str = "4m") -> Iterator[FullDisk]:
    """A FullDisk over `directory` (created); skips a 'tmpfs' case where mounting is not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    if mechanism == "tmpfs":
        if not _mount_tmpfs(directory, size):
            pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the rlimit case still runs")
        try:
            yield FullDisk(mechanism, directory)
        finally:
            _umount(directory)
    else:
        yield FullDisk(mechanism, directory)


# ------------------------------------------------------------------------------------------------ read-only dir


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[str]:
    """Make `directory` read-only for this process and its children; yields the mechanism used.

    Root ignores permission bits, so as root the directory is bind-mounted read-only onto itself (EROFS);
    otherwise chmod 0o555 (EACCES). Skips when neither applies.
    """
    directory = Path(directory)
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield "chmod"
        finally:
            directory.chmod(mode)
        return
    bound = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip("running as root without mount rights: cannot make a directory read-only")
    remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True)
    try:
        if remounted.returncode != 0:
            pytest.skip("cannot remount a bind mount read-only here")
        yield "ro-bind-mount"
    finally:
        _umount(directory)


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Relative path → content of every file below `directory` (to show that nothing complete was touched)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def temp_files(directory: Path) -> list[str]:
    """Hidden temp files (.NAME.XXXX.tmp) left below `directory`."""
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob(".*.tmp"))


# ------------------------------------------------------------------------------------------------ command line


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tool: str, *args: str) -> tuple[int, str]:
    """Run `pairgen`/`segbench` ARGS in-process through its real entry point (run_app: one-line errors);
    returns (exit code, stderr)."""
    from tests.fixtures import run_cli

    code, _, err = run_cli(monkeypatch, capsys, tool, *args)
    return code, err
