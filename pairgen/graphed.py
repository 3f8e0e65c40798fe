"""One whole GAN iteration (S critic steps + 1 generator step of algorithm 4) replayed as one CUDA graph.

Why: the eager thesis-scale iteration issues ~7,100 ATen calls (README "Performance": `scripts/profile_gan.py
--count`), most of them small elementwise kernels of layer norm's double backward, and on an H200 it ran at the
speed of the plain fp32 reference: the host's launch rate, not the GPU, set the pace. A CUDA graph records the
kernels of one iteration once and then launches them all with one call per iteration.

What changes against the eager loop (pairgen.wgan_gp.critic_step / generator_step), and why it is still the same
algorithm:
* the finite check cannot branch on the host inside a graph, so each step computes wgan_gp.finite_flags on the
  device and its optimiser step is skipped by the fused Adam kernel itself (found_inf) when the loss or a gradient
  is non-finite: weights, moments and step count stay untouched, as in the eager step. The host reads all steps'
  flags and loss terms once per iteration (one sync instead of the eager loop's six) and logs skips afterwards.
* the batch-norm buffers are snapshotted inside the graph at the start of the iteration; a skipped step whose
  forward poisoned them gets them restored after the iteration rather than before the next step.
* the real batches are gathered inside the graph from an S×B index buffer the host fills before each replay, and
  z and ε are drawn outside it, before each replay, into static buffers: the same calls on the same generator in
  the same order as the eager loop, so both draw the same numbers (and the checkpointed RNG state means the same).
  (Drawn inside the graph, PyTorch advances the generator per replay, but the streams differ from the eager
  loop's, and the first H200 agreement check could not tell that apart from a bug: up to 21 % difference in
  per-iteration losses against an eager loop that reproduced itself exactly.)

Without capture (CPU, or a capture that failed) `run` executes the same body eagerly: on CPU this gives exactly
the eager loop's numbers (tests/pairgen/test_graphed.py), which is how the body is tested without a GPU.
Not used under torchrun (gradients are all-reduced between steps) or with --compile.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

from pairgen.pairdata import PairData
from pairgen.presets import GANConfig
from pairgen.wgan_gp import (bad_term_of, critic_backward, finite_flags, generator_backward, interpolation_weights,
                             make_fakes, step_unless_nonfinite)

CRITIC_TERMS = ["wasserstein", "gp"]


@dataclass
class StepOutcome:
    """One step of an iteration as the host sees it: phase 'critic' | 'generator', its loss terms as floats
    (critic: critic_loss, wasserstein, gp; generator: generator_loss; floats from a graph, 0-dim device tensors
    from the eager loop) or None and the bad term's name."""

    phase: str
    terms: dict[str, float | torch.Tensor] | None
    bad: str | None


class GraphedIteration:
    """`run(index)` = one training iteration on the real pairs index[s] (int64 S×B) for critic step s."""

    def __init__(self, generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, data: PairData, config: GANConfig, device: torch.device, amp: bool,
                 warmup: int = 3, capture: bool | None = None) -> None:
        self.generator, self.critic, self.opt_g, self.opt_d = generator, critic, opt_g, opt_d
        self.data, self.config, self.device, self.amp = data, config, device, amp
        self.capture = device.type == "cuda" if capture is None else capture
        self.warmup = warmup
        steps, batch = config.critic_steps, config.batch_size
        self.index = torch.zeros(steps, batch, dtype=torch.long, device=device)
        # the iteration's random draws (see the module docstring): fakes' z, each critic step's ε, the generator's z
        self.z_fakes = torch.zeros(steps * batch, config.z_dim, device=device)
        self.eps = torch.zeros(steps, batch, 1, 1, 1, device=device)
        self.z_generator = torch.zeros(batch, config.z_dim, device=device)
        self.buffers = [b for net in (generator, critic) for b in net.buffers()]
        self.snapshot = [b.detach().clone() for b in self.buffers]   # the iteration's starting BN statistics
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The iteration on self.index → (values float32 (S+1)×3, flags bool (S+1)×4); row s < S: critic step s
        [critic_loss, wasserstein, gp] and [wasserstein, gp, loss, grads finite]; row S: the generator step
        [generator_loss, 0, 0] and [True, True, loss, grads finite]. Every step is applied unless non-finite."""
        config, amp = self.config, self.amp
        if self.buffers:
            torch._foreach_copy_(self.snapshot, [b.detach() for b in self.buffers])
        fakes = make_fakes(self.generator, config.critic_steps * config.batch_size, config, self.device, amp,
                           z=self.z_fakes).split(config.batch_size)   # G is fixed during the critic steps
        values, flags = [], []
        for step, fake in enumerate(fakes):
            real = self.data.batch(self.index[step])
            loss, terms = critic_backward(self.generator, self.critic, self.opt_d, real, config, amp, fake,
                                          eps=self.eps[step])
            ok = finite_flags(loss, terms, self.critic)
            step_unless_nonfinite(self.opt_d, ok)
            values.append(torch.stack([loss.detach().float(), terms["wasserstein"].float(), terms["gp"].float()]))
            flags.append(ok)
        g_loss = generator_backward(self.generator, self.critic, self.opt_g, config, self.device, amp,
                                    z=self.z_generator)
        ok = finite_flags(g_loss, {}, self.generator)
        step_unless_nonfinite(self.opt_g, ok)
        zero = torch.zeros((), device=self.device)
        values.append(torch.stack([g_loss.detach().float(), zero, zero]))
        flags.append(torch.cat([torch.ones(2, dtype=torch.bool, device=self.device), ok]))
        return torch.stack(values), torch.stack(flags)

    def _capture(self) -> None:
        """Record _body into self.graph (nothing executes during capture); on failure, warn and stay eager."""
        optimizers = (self.opt_g, self.opt_d)
        for group in (g for opt in optimizers for g in opt.param_groups):
            group["capturable"] = True   # the optimisers' capture check; the fused kernel ignores it
        graph = torch.cuda.CUDAGraph()
        try:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)   # gradients are then allocated from the graph's pool
            # the autocast weight cache would hold casts made during capture: not allowed in a graph
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp, cache_enabled=False), \
                    torch.cuda.graph(graph):
                self.outputs = self._body()
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - training goes on eagerly; the reason is printed
            self.capture, self.graph, self.outputs = False, None, None
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            print(f"pairgen train: CUDA graph capture failed ({exc.__class__.__name__}: {str(exc)[:200]}); "
                  "training eagerly (if CUDA then reports a capturing stream, rerun with --no-cuda-graph)",
                  file=sys.stderr)
        finally:
            for group in (g for opt in optimizers for g in opt.param_groups):
                group["capturable"] = False   # checkpoints keep the eager optimiser's settings

    def run(self, index: torch.Tensor) -> list[StepOutcome]:
        """One iteration on the real pairs `index` (int64 S×B, any device) → S + 1 StepOutcomes, critic steps
        first. The first `warmup` calls run eagerly (on a side stream on CUDA, as capture requires), the next
        captures and replays, later ones replay."""
        self.index.copy_(index)
        self._draw()
        if not self.capture:
            values, flags = self._body()
        elif self.calls < self.warmup:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                values, flags = self._body()
            torch.cuda.current_stream(self.device).wait_stream(stream)
        else:
            if self.graph is None:
                torch.cuda.synchronize(self.device)
                self._capture()
            if self.graph is not None:
                self.graph.replay()
                values, flags = self.outputs  # type: ignore[misc]
            else:
                values, flags = self._body()
        self.calls += 1
        return self._outcomes(values.cpu().tolist(), flags.cpu().tolist())   # the iteration's one host sync

    def _draw(self) -> None:
        """This iteration's z and ε into the static buffers, drawn as the eager loop draws them (the fakes' z,
        then each critic step's ε, then the generator's z) from the global RNG."""
        self.z_fakes.copy_(torch.randn(self.z_fakes.shape, device=self.device))
        for eps in self.eps:
            eps.copy_(interpolation_weights(eps))   # eps: B×1×1×1 float32, the shape the penalty draws
        self.z_generator.copy_(torch.randn(self.z_generator.shape, device=self.device))

    def _outcomes(self, values: list[list[float]], flags: list[list[bool]]) -> list[StepOutcome]:
        outcomes = []
        for step, (row, ok) in enumerate(zip(values, flags)):
            critic = step < self.config.critic_steps
            bad = bad_term_of(ok, CRITIC_TERMS if critic else ["", ""])
            if bad is not None:
                outcomes.append(StepOutcome("critic" if critic else "generator", None, bad))
            elif critic:
                outcomes.append(StepOutcome("critic", dict(zip(["critic_loss", *CRITIC_TERMS], row)), None))
            else:
                outcomes.append(StepOutcome("generator", {"generator_loss": row[0]}, None))
        return outcomes
