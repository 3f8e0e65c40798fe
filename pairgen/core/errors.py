"""User-facing errors: the CLIs print these as one line and exit non-zero, never a traceback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class UserError(Exception):
    """Bad input from the user (path, flag, file). Message must name the file or argument at fault."""

    exit_code = 2


class StorageError(UserError):
    """Writing an output failed in the environment (disk full, quota, read-only or forbidden directory, I/O error).

    Raised from the OSError (kept as __cause__), never instead of reporting it: a save that fails is never
    swallowed, it stops the command with the path and the system's reason on one line.
    """

    exit_code = 1


def storage_error(path: Path | str, exc: OSError) -> StorageError:
    """One-line StorageError for an OSError raised while writing `path`."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    return StorageError(f"{path}: cannot write ({reason}); everything written before is intact")


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised in the block (while writing `path`) into a StorageError naming `path`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(path, exc) from exc
