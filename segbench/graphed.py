"""Opt-in whole-step CUDA graph of segbench.step.train_step (SegConfig.cuda_graph, `segbench run --cuda-graph`).

The thesis lung step is launch-bound on a GPU (hundreds of small kernels per step). GraphedTrainStep captures
forward + loss + backward + fused Adam step once (pairgen.core.cudagraph: PyTorch's "whole network capture"
recipe) and then launches the whole step as one graph replay:
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

from typing import Any, Callable

import torch

from pairgen.core.cudagraph import GraphedCall
from segbench.step import memory_format, train_step


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
                 capture: bool | None = None, channels_last: bool = True) -> None:
        self.model, self.optimizer, self.amp, self.channels_last = model, optimizer, amp, channels_last
        self.warmup = max(1, int(warmup))   # Adam state and cuDNN algorithms must exist before capture
        if capture is None:
            capture = next(model.parameters()).device.type == "cuda"
        self.capture = bool(capture)
        self.calls = 0
        self.static_images: torch.Tensor | None = None   # float32 B×C×H×W, training memory format
        self.static_masks: torch.Tensor | None = None    # int64 B×H×W
        self.static_weights: torch.Tensor | None = None  # float32 B per-row loss weights (None: plain mean)
        self._graphed: GraphedCall[torch.Tensor] | None = None   # built with the static buffers

    @property
    def captured(self) -> bool:
        """True once a graph has been captured (and is being replayed)."""
        return self.graph is not None

    @property
    def graph(self) -> Any:
        return None if self._graphed is None else self._graphed.graph

    @property
    def failed(self) -> bool:
        """The capture raised: eager from then on."""
        return self._graphed is not None and self._graphed.failed

    @property
    def static_loss(self) -> torch.Tensor | None:
        """float32 scalar, overwritten by every replay."""
        return None if self._graphed is None else self._graphed.outputs

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
        """`weights` (float32 B or None, segbench.step.row_weights) must be given on every call or on none: the
        graph reads them from a static buffer, so they may change from call to call without a recapture."""
        self.calls += 1
        if self.failed:
            return self._step(images, masks, weights=weights)
        if self.static_images is None:
            self._make_buffers(images, masks, weights)
        if images.shape != self.static_images.shape or masks.shape != self.static_masks.shape:
            return self._step(images, masks, weights=weights)   # e.g. a short last batch: eager for this call only
        if (weights is None) != (self.static_weights is None):
            raise ValueError("GraphedTrainStep: weights given on some calls but not on others")
        self.static_images.copy_(images)
        self.static_masks.copy_(masks)
        if weights is not None:
            self.static_weights.copy_(weights)
        return self._graphed().clone()   # the next replay overwrites the graph's loss; callers accumulate losses

    def _make_buffers(self, images: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None) -> None:
        # Exactly the strides train_step's convolutions see: for one image channel NCHW is already
        # "channels-last contiguous" (65536, 65536, 256, 1), while a tensor made channels-last has
        # (65536, 1, 256, 1), from which PyTorch infers channels-last. cuDNN's algorithm cache keys on that
        # memory format, so a buffer of other strides than the warm-up's made cuDNN benchmark during
        # capture, which invalidates it: how the lung U-Net's capture failed on an H200 while the
        # 3-channel Cityscapes one worked.
        layout = images.contiguous(memory_format=memory_format(self.channels_last))
        self.static_images = torch.empty_strided(layout.size(), layout.stride(), dtype=layout.dtype,
                                                 device=layout.device)
        self.static_masks = torch.empty_like(masks)
        self.static_weights = None if weights is None else torch.empty_like(weights)
        graphed = GraphedCall(lambda: self._step(self.static_images, self.static_masks, weights=self.static_weights),
                              [self.optimizer], images.device, self.capture, self.warmup,
                              capture_body=lambda: self._step(self.static_images, self.static_masks, False,
                                                              self.static_weights),
                              who="segbench", turn_off="run without --cuda-graph")
        graphed.graph_factory, graphed.capture_context = self.graph_factory, self.capture_context
        self._graphed = graphed

    def _step(self, images: torch.Tensor, masks: torch.Tensor, cache_enabled: bool = True,
              weights: torch.Tensor | None = None) -> torch.Tensor:
        return train_step(self.model, self.optimizer, images, masks, self.amp, cache_enabled, self.channels_last,
                          weights)
