"""A training step replayed as a CUDA graph: warm-up on a side stream, capture, replay, eager fallback.

PyTorch's "whole network capture" recipe, in one place for pairgen's GAN iteration (pairgen.step), segbench's
U-Net step (segbench.graphed) and the capture probe (segbench.perf.unet_bench). A graph records the kernels of
one call of `body` once and then launches them all with one call: what a launch-bound step needs. The body must
read its inputs from, and write its results to, tensors that live as long as the graph (static buffers), and
must not branch on the host.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")


def on_side_stream(body: Callable[[], T], device: torch.device) -> T:
    """body() on a fresh CUDA side stream that waits for the current stream, which then waits for it (warm-up
    before a capture: cuDNN autotuning, optimiser state and lazy initialisations happen off the capture's
    stream); tensors body() returns are marked as used on the current stream. Not CUDA: just body()."""
    if torch.device(device).type != "cuda":
        return body()
    side, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        outputs = body()
    current.wait_stream(side)
    for value in (outputs if isinstance(outputs, (tuple, list)) else (outputs,)):
        if isinstance(value, torch.Tensor):
            value.record_stream(current)   # made on the side stream, read on the current one
    return outputs


@contextmanager
def capturable(optimizers: Sequence[torch.optim.Optimizer]) -> Iterator[None]:
    """Optimizer.step's capture check demands capturable=True (the fused Adam kernel ignores it); the previous
    values come back afterwards, so checkpoints hold the same optimiser state_dict as eager training."""
    groups = [group for optimizer in optimizers for group in optimizer.param_groups]
    before = [group.get("capturable", False) for group in groups]
    for group in groups:
        group["capturable"] = True
    try:
        yield
    finally:
        for group, flag in zip(groups, before):
            group["capturable"] = flag


def capture(body: Callable[[], T], optimizers: Sequence[torch.optim.Optimizer],
            graph_factory: Callable[[], Any] = torch.cuda.CUDAGraph,
            capture_context: Callable[[Any], Any] = torch.cuda.graph, zero_grads: bool = True) -> tuple[Any, T]:
    """Record body() into a new graph → (graph, body's outputs, overwritten by every replay). Capture executes
    nothing: replay once for the first real call. With `zero_grads` the optimisers' gradients are set to None
    first, so backward allocates them from the graph's memory pool (a body without backward keeps them). Raises
    what capture raises."""
    with capturable(optimizers):
        for optimizer in optimizers if zero_grads else ():
            optimizer.zero_grad(set_to_none=True)
        graph = graph_factory()
        with capture_context(graph):
            outputs = body()
    return graph, outputs


class GraphedCall(Generic[T]):
    """`call()` = `body()`, from the (warmup + 1)-th call on as a CUDA graph replay.

      calls 1 … warmup   body() eagerly (on a side stream when capturing, as capture requires)
      call warmup + 1    capture `capture_body` (default: body; e.g. with autocast's weight cache off) and replay
      later calls        replay; the same output tensors every time (copy what must outlive the next call)
    capture=False (a CPU): body() every call. A capture that raises: one line on stderr and body() for good.
    graph_factory and capture_context are injectable: the CPU tests put fakes there."""

    graph_factory: Callable[[], Any] = torch.cuda.CUDAGraph
    capture_context: Callable[[Any], Any] = torch.cuda.graph

    def __init__(self, body: Callable[[], T], optimizers: Sequence[torch.optim.Optimizer], device: torch.device,
                 capture: bool, warmup: int = 3, capture_body: Callable[[], T] | None = None,
                 who: str = "", turn_off: str = "") -> None:
        self.body, self.capture_body = body, capture_body or body
        self.optimizers, self.device = list(optimizers), torch.device(device)
        self.capture, self.warmup = bool(capture), max(1, int(warmup))
        self.who, self.turn_off = who, turn_off   # the failure message: whose graph, how to turn it off
        self.calls = 0
        self.failed = False
        self.graph: Any = None
        self.outputs: T | None = None

    def __call__(self) -> T:
        self.calls += 1
        if not self.capture or self.failed:
            return self.body()
        if self.calls <= self.warmup:
            return on_side_stream(self.body, self.device)
        if self.graph is None and not self._capture():
            return self.body()
        self.graph.replay()
        return self.outputs  # type: ignore[return-value]

    def _capture(self) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)   # the warm-up's side stream has finished
        try:
            self.graph, self.outputs = capture(self.capture_body, self.optimizers, self.graph_factory,
                                               self.capture_context)
            return True
        except Exception as exc:  # noqa: BLE001 - training goes on eagerly; the reason is printed
            self.failed, self.graph, self.outputs = True, None, None
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            tqdm.write(f"{self.who}: CUDA graph capture failed ({exc.__class__.__name__}: {str(exc)[:200]}); "
                       f"training eagerly (if CUDA then reports a capturing stream, {self.turn_off})",
                       file=sys.stderr)
            return False
