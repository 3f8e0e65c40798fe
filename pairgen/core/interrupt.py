"""Interrupts that keep work: the first SIGINT/SIGTERM asks a training loop to stop, a second one aborts.

    with StopRequest() as stop:
        while ...:
            one_step()
            if stop.requested:   # after the current step
                save_checkpoint(); raise Interrupted(...)

Outside the main thread (signal handlers cannot be installed there) the context manager does nothing and
`requested` stays False. Under torchrun every rank gets the signal but maybe between different steps, so loops
take the decision collectively (`requested_by_any`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130   # the shell's code for a command ended by Ctrl-C


class Interrupted(Exception):
    """Training stopped on request after saving its state; the message says where and how to resume."""

    exit_code = EXIT_CODE


class StopRequest:
    """Context manager: the first SIGINT/SIGTERM sets `requested`; a second one raises KeyboardInterrupt at once.

    The previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:   # the second signal: the user means it
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested_by_any(self, world: int) -> bool:
        """Whether any rank was asked to stop (a collective under torchrun: call it on every rank each step)."""
        if world == 1:
            return self.requested
        import torch

        from pairgen.core import distributed

        return bool(distributed.all_mean(torch.tensor(float(self.requested))).item() > 0)
