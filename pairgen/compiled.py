"""The critic's WGAN-GP loss and weight gradients as one torch.compile-able function (`pairgen train --compile`).

Eager training builds the penalty with `autograd.grad(create_graph=True)` and then calls `backward()` through it:
a double backward, which AOTAutograd cannot compile. Written with torch.func instead, the same quantity is a
pure function of the parameters — `grad` over the parameters of a loss whose penalty itself takes `grad` over
the critic's input — and torch.compile traces the forward, the input gradient and the double backward as one
graph: the many small elementwise kernels of layer norm's double backward fuse, and on CUDA one compiled graph
replaces thousands of individually launched kernels per iteration (the eager step is launch-bound there: see
docs/PERFORMANCE.md). Only for critics that score each sample on its own (no batch norm: its running
statistics are state that a pure function cannot update).

Same numbers as pairgen.wgan_gp.critic_loss up to float rounding (tests/pairgen/test_compiled.py), and the same
RNG stream: ε is drawn outside the compiled function exactly as the eager penalty draws it.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value

from pairgen.wgan_gp import _at_least_fp32, batch_independent, interpolation_weights, penalty_of


def _compile(fn: Callable) -> Callable:
    """torch.compile(fn) with static shapes. The first call in a process imports inductor, and through it
    torch.utils.mkldnn, whose class bodies still use the deprecated torch.jit.script_method (14 warnings from
    torch's own code, nothing we call): those are silenced here, and only those."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script_method` is deprecated",
                                category=DeprecationWarning)
        return torch.compile(fn, dynamic=False)


class CompiledCriticLoss:
    """critic → (loss, terms, grads by parameter name) for one critic step; see the module docstring."""

    def __init__(self, critic: nn.Module, gp_lambda: float, amp: bool, compile: bool = True) -> None:
        if not batch_independent(critic):
            raise ValueError("the compiled critic step needs a critic without batch norm")
        self.critic, self.gp_lambda, self.amp = critic, gp_lambda, amp
        step = grad_and_value(self._loss, has_aux=True)
        self._step: Callable = _compile(step) if compile else step

    def _loss(self, params: dict[str, torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
              eps: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """-(E D(real) - E D(fake)) + λ·mean_i (||∇_x D(x̂_i)||₂ - 1)²: a float32 scalar, with
        (wasserstein, gp)."""
        device_type = real.device.type

        def scores(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type, torch.bfloat16, enabled=self.amp):
                return _at_least_fp32(functional_call(self.critic, params, (x,)))

        both = scores(torch.cat([real, fake]))
        wasserstein = both[:real.shape[0]].mean() - both[real.shape[0]:].mean()
        mixed = eps * real + (1.0 - eps) * fake
        penalty = penalty_of(grad(lambda x: scores(x).sum())(mixed))
        return -wasserstein + self.gp_lambda * penalty, (wasserstein, penalty)

    def __call__(self, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """real, fake: float B×(C+Kc)×H×W, eps: the penalty's weights B×1×1×1 (None: drawn here, outside the
        compiled graph, as the eager penalty draws them) → (loss, {'wasserstein', 'gp'} detached,
        {param name: gradient})."""
        eps = interpolation_weights(real) if eps is None else eps
        params = {name: p.detach() for name, p in self.critic.named_parameters()}
        grads, (loss, (wasserstein, penalty)) = self._step(params, real.detach(), fake.detach(), eps)
        return loss.detach(), {"wasserstein": wasserstein.detach(), "gp": penalty.detach()}, grads


def compiled_critic_backward(critic: nn.Module, opt_d: torch.optim.Optimizer, gp_lambda: float, amp: bool
                             ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                           tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(real, fake, ε) → (loss, terms) with the critic's weight gradients in param.grad, as
    wgan_gp.critic_backward, through one CompiledCriticLoss (compiled by torch on first use: tens of seconds,
    once per run)."""
    loss_and_grads = CompiledCriticLoss(critic, gp_lambda, amp)

    def backward(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms, grads = loss_and_grads(real, fake, eps)
        opt_d.zero_grad(set_to_none=True)
        assign_grads(critic, grads)
        return loss, terms

    return backward


def assign_grads(module: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Put torch.func gradients where an optimiser (and the finite check) looks for them: param.grad.

    A compiled graph may return a gradient with other strides than its parameter (a conv weight's gradient in
    channels-last order, say). The fused Adam kernel walks parameter and gradient memory in step, so such a
    gradient must be copied into the parameter's layout first: without it, half the weights of a conv layer
    moved the wrong way (caught by tests/pairgen/test_compiled.py).
    """
    for name, param in module.named_parameters():
        value = grads[name].to(param.dtype)
        if value.stride() != param.stride():
            value = torch.empty_like(param).copy_(value)
        param.grad = value
