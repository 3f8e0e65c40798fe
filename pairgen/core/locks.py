"""Advisory locks: one process at a time owns a run or output folder.

`with lock(directory):` creates `directory/.lock`, a symbolic link to "host:pid" (atomic and exclusive). A second writer
(another `pairgen export --out`, `train --resume`, `segbench run --resume` on the same folder) gets a one-line
UserError naming the owner. A lock left by a process that died on this host is taken over, with a message on
stderr; a lock held from another host is never taken over (its pid means nothing here): remove it by hand.
Advisory: readers (report, verify) ignore it; it guards writers against each other, not against `rm`.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pairgen.core.errors import UserError, writing

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> dict | None:
    """{'pid', 'host'} of a lock, None when `path` is not a lock this module wrote."""
    try:
        host, _, pid = os.readlink(path).rpartition(":")
        return {"pid": int(pid), "host": host}
    except (OSError, ValueError):
        return None


def acquire(directory: Path) -> Path:
    """Create directory/.lock for this process (the directory is created); UserError when another owns it.

    The lock is a symbolic link whose target names the owner ("host:pid"): created atomically and exclusively
    like an O_EXCL file, and it needs no data block, so it works on a full disk (where the command must still
    get as far as its one-line "disk full" error)."""
    directory = Path(directory)
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        with writing(path):   # a read-only folder: one StorageError line
            try:
                os.symlink(f"{me['host']}:{me['pid']}", path)
                return path
            except FileExistsError:
                pass
        owner = _owner(path)
        if owner is None:
            raise UserError(f"{directory}: {path} exists but is not a lock of this tool; remove it if no process is "
                            "using this folder")
        if owner == me:
            raise UserError(f"{directory}: already locked by this process")
        if owner["host"] != me["host"] or _alive(owner["pid"]):
            raise UserError(f"{directory}: in use by process {owner['pid']} on {owner['host']} "
                            f"(lock {path}); wait for it to finish")
        print(f"taking over the stale lock {path} of process {owner['pid']} (no longer running)", file=sys.stderr)
        path.unlink(missing_ok=True)
    raise UserError(f"{directory}: could not take the lock {path} (another process keeps taking it)")


def release(path: Path) -> None:
    """Remove a lock file this process holds (a lock taken over by someone else is left alone)."""
    owner = _owner(path)
    if owner is not None and owner.get("pid") == os.getpid():
        Path(path).unlink(missing_ok=True)


@contextmanager
def lock(directory: Path) -> Iterator[Path]:
    """Own `directory` for the duration of the block (module docstring)."""
    path = acquire(directory)
    try:
        yield path
    finally:
        release(path)
