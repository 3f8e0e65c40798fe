"""The CLI runner both tools share: every ending a user sees is one line with a fixed prefix and exit code."""

from __future__ import annotations

import io
import sys

import pytest
import typer
from rich.console import Console

from pairgen.core.cli import run_app
from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted


def ending(monkeypatch: pytest.MonkeyPatch, failure: BaseException | None, *args: str) -> tuple[int, str]:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def go(n: int = typer.Option(1, "--n")) -> None:
        if failure is not None:
            raise failure

    monkeypatch.setattr(sys, "argv", ["tool", *args])
    console = Console(file=io.StringIO(), width=200)
    with pytest.raises(SystemExit) as exited:
        run_app(app, console)
    return int(exited.value.code or 0), console.file.getvalue().strip()


def test_every_ending_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ending(monkeypatch, None) == (0, "")
    assert ending(monkeypatch, UserError("bad --n")) == (2, "error: bad --n")
    code, text = ending(monkeypatch, None, "--n", "x")
    assert code == 2 and text.startswith("error: Invalid value for '--n'") and "--help" in text
    assert ending(monkeypatch, Interrupted("SIGINT at step 3; resume with: X")) == (
        130, "interrupted: SIGINT at step 3; resume with: X")
    assert ending(monkeypatch, KeyboardInterrupt()) == (130, "interrupted")
