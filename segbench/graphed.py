"""Opt-in whole-step CUDA graph of segbench.train.train_step (SegConfig.cuda_graph, `segbench run --cuda-graph`).

The thesis lung step is launch-bound on a GPU (hundreds of small kernels per step). GraphedTrainStep captures
forward + loss + backward + fused Adam step once, following PyTorch's "whole network capture" recipe, and then
launches the whole step as one graph replay:
  calls 1 … warmup   copy the batch into static buffers, eager train_step on them on a side stream (cuDNN
                     autotuning for exactly these tensors, Adam state, lazy initialisations)
  call warmup + 1    copy the batch into the static buffers, capture the step, replay it once (capture executes
                     nothing: the replay is this batch's step)
  later calls        copy the batch into the static buffers, replay
Every call is one real optimiser step on its own batch, as train_step's. Eager instead: a batch of another shape
(that call only; MixedBatches never yields one) and, for good, after a capture that raised (one line on stderr).
With capture=False (the CPU) the "replay" is train_step on the static buffers: the CPU tests run the bookkeeping.

While a graph lives it owns the parameter, gradient and Adam state tensors it captured: change them in place only
(Module.load_state_dict does; Optimizer.load_state_dict does not, so resume before building the step), and the
learning rate is frozen into it. Single process only (DDP would need PyTorch's DDP capture recipe).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from tqdm import tqdm

from segbench.train import memory_format, train_step


def use_graph(enabled: bool, device: torch.device, world: int) -> bool:
    """SegConfig.cuda_graph's rule: a graph only on CUDA and in a single process; ignored otherwise."""
    return bool(enabled) and torch.device(device).type == "cuda" and world == 1


class GraphedTrainStep:
    """`step(images, masks) -> loss` with train_step's contract: images float32 B×C×H×W in [-1, 1], masks int64
    B×H×W (both on the model's device); one optimiser step; returns a detached float32 scalar on the device,
    a fresh tensor every call (no host sync). capture None: capture when the model is on CUDA."""

    # injectable (tests on the CPU put fakes here): a graph object with .replay(), and the capture context
    graph_factory: Callable[[], Any] = torch.cuda.CUDAGraph
    capture_context: Callable[[Any], Any] = torch.cuda.graph

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, amp: bool, warmup: int = 3,
                 capture: bool | None = None) -> None:
        self.model, self.optimizer, self.amp = model, optimizer, amp
        self.warmup = max(1, int(warmup))   # Adam state and cuDNN algorithms must exist before capture
        if capture is None:
            capture = next(model.parameters()).device.type == "cuda"
        self.capture = bool(capture)
        self.calls = 0
        self.failed = False                 # capture raised: eager from then on
        self.graph: Any = None
        self.static_images: torch.Tensor | None = None   # float32 B×C×H×W, training memory format
        self.static_masks: torch.Tensor | None = None    # int64 B×H×W
        self.static_loss: torch.Tensor | None = None     # float32 scalar, overwritten by every replay
        self._side_stream: Any = None

    @property
    def captured(self) -> bool:
        """True once a graph has been captured (and is being replayed)."""
        return self.graph is not None

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.failed:
            return self._eager(images, masks)
        if self.static_images is None:
            # Exactly the strides train_step's convolutions see: for one image channel NCHW is already
            # "channels-last contiguous" (65536, 65536, 256, 1), while a tensor made channels-last has
            # (65536, 1, 256, 1), from which PyTorch infers channels-last. cuDNN's algorithm cache keys on that
            # memory format, so a buffer of other strides than the warm-up's made cuDNN benchmark during
            # capture, which invalidates it: how the lung U-Net's capture failed on an H200 while the
            # 3-channel Cityscapes one worked.
            layout = images.contiguous(memory_format=memory_format())
            self.static_images = torch.empty_strided(layout.size(), layout.stride(), dtype=layout.dtype,
                                                     device=layout.device)
            self.static_masks = torch.empty_like(masks)
        if images.shape != self.static_images.shape or masks.shape != self.static_masks.shape:
            return self._eager(images, masks)   # e.g. a short last batch: eager for this call only
        self._fill(images, masks)
        if self.calls <= self.warmup:   # warm up on the very buffers the graph will read
            return self._eager(self.static_images, self.static_masks, side_stream=self.capture)
        if self.capture and self.graph is None and not self._capture():
            return self._eager(images, masks)
        return self._replay()

    def _fill(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.static_images.copy_(images)
        self.static_masks.copy_(masks)

    def _eager(self, images: torch.Tensor, masks: torch.Tensor, side_stream: bool = False) -> torch.Tensor:
        """The plain train_step; warm-up before a capture runs it on a side stream (PyTorch's recipe)."""
        if not (side_stream and images.device.type == "cuda"):
            return train_step(self.model, self.optimizer, images, masks, self.amp)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(images.device)
        current = torch.cuda.current_stream(images.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream):
            loss = train_step(self.model, self.optimizer, images, masks, self.amp)
        current.wait_stream(self._side_stream)
        loss.record_stream(current)   # made on the side stream, read on the current one
        return loss

    def _capture(self) -> bool:
        """Capture train_step on the static buffers into self.graph; False (and eager for good) if it raises."""
        groups = self.optimizer.param_groups
        flags = [group.get("capturable", False) for group in groups]
        try:
            # Optimizer.step's capture check demands capturable (fused Adam's kernels ignore it); restored after,
            # so checkpoints hold the same optimiser state_dict as eager training
            for group in groups:
                group["capturable"] = True
            self.optimizer.zero_grad(set_to_none=True)   # backward allocates .grad in the graph's memory pool
            graph = self.graph_factory()
            with self.capture_context(graph):
                loss = train_step(self.model, self.optimizer, self.static_images, self.static_masks, self.amp,
                                  cache_enabled=False)
            self.graph, self.static_loss = graph, loss
            return True
        except Exception as exc:   # training must never die because of the graph
            self.failed, self.graph = True, None
            self.static_images = self.static_masks = self.static_loss = None
            self.optimizer.zero_grad(set_to_none=True)
            tqdm.write(f"segbench: CUDA graph capture failed ({exc.__class__.__name__}: {exc}); training eagerly "
                       "(if CUDA then reports a capturing stream, run without --cuda-graph)", file=sys.stderr)
            return False
        finally:
            for group, flag in zip(groups, flags):
                group["capturable"] = flag

    def _replay(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:   # capture=False: the same step, run eagerly on the static buffers
            self.static_loss = train_step(self.model, self.optimizer, self.static_images, self.static_masks,
                                          self.amp)
        return self.static_loss.clone()   # the next replay overwrites static_loss; callers accumulate losses
