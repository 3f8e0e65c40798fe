"""Files that are whole or absent: atomic writes (temp name, fsync, rename) and sha256 checksums."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pairgen.core.errors import writing


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems cannot fsync a directory (EINVAL); a real I/O error must not be swallowed
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask_mode() -> int:
    """0o666 minus the process umask: mkstemp creates 0o600 files, which would hide outputs from other users."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()  # read once: os.umask is process-global, so never toggle it while threads write


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, rename. Never leaves a torn file.

    A failing write (disk full, read-only or forbidden directory, quota) raises StorageError naming `path`; the
    temp file is removed and whatever `path` held before is untouched.
    """
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
