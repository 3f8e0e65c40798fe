"""The runner both CLIs share: user errors become one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted


def run_app(typer_app: typer.Typer, err_console: Console) -> None:
    """Run a typer app; user errors become one line and exit code 2 (storage errors: one line, exit code 1)."""
    try:
        typer_app()
    except Interrupted as exc:   # the state was saved: say where and how to resume
        err_console.print(f"[yellow]interrupted:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # an environment failure the code did not name (disk full, read-only, permission): one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[red]error:[/] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
