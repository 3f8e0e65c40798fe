"""User-facing errors: the CLIs print these as one line and exit non-zero, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (path, flag, file). Message must name the file or argument at fault."""

    exit_code = 2
