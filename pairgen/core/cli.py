"""The runner both CLIs share: user errors become one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted


try:  # typer >= 0.2x vendors click; older versions use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException


def run_app(typer_app: typer.Typer, err_console: Console) -> None:
    """Run a typer app; user errors become one line and exit code 2 (storage errors: one line, exit code 1).

    Usage errors (unknown option, bad value) are printed the same way, `error: ...` plus where help is, instead of
    click's boxed "Error" panel, so every error a user sees starts alike.
    """
    try:
        code = typer_app(standalone_mode=False)   # returns the exit code of --help, typer.Exit, Ctrl-C (130)
        if code == 130:   # typer turned a KeyboardInterrupt (a second Ctrl-C, or one outside training) into it
            err_console.print("[yellow]interrupted[/]")
        sys.exit(code if isinstance(code, int) else 0)
    except ClickException as exc:
        if exc.__class__.__name__ == "NoArgsIsHelpError":   # no arguments: the help text, as before
            exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err_console.print(f"[red]error:[/] {exc.format_message()}{hint}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
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
