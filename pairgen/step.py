"""One GAN training iteration (thesis algorithm 4: S critic steps, then one generator step): THE body that
pairgen.train runs, eagerly or replayed as one CUDA graph (pairgen.core.cudagraph), with the eager or the
compiled critic backward (make_critic_backward, chosen once when training starts).

Every step decides on the device whether it is applied: wgan_gp.finite_flags (loss, terms and every gradient;
under torchrun after the gradients and the loss are averaged over ranks, so all ranks decide alike) and
wgan_gp.step_unless_nonfinite (fused Adam's found_inf) skip a non-finite update with weights, Adam moments and step
count untouched. The host reads all steps' flags and loss terms once per iteration (StepOutcome); the loop logs
skips from them. Because nothing in the body branches on the host, a CUDA graph can record it:
* the real batches are gathered inside the body from an S×B index buffer filled before each call, and z and ε
  are drawn before each call into static buffers from the global RNG, in a fixed order (the fakes' z, each
  critic step's ε, the generator's z): eager and graphed iterations draw the same numbers, and the checkpointed
  RNG state resumes either exactly. (Drawn inside a graph, PyTorch advances the generator per replay but with
  other streams, and the first H200 agreement check could not tell that apart from a bug.)
* the batch-norm buffers are snapshotted inside the body at the start of the iteration; the loop restores them
  after an iteration in which a skipped step's forward poisoned them.
* all critic steps' fakes come from one generator forward: G does not change during the critic steps (its batch
  norm, if any, then normalises over all S·B rows instead of each step's B).
_critic_input is the one place where the critic's inputs are formed (real, fakes, and the generator step's G(z);
the penalty's interpolates are mixed from the first two, so they are augmented too). With config.diffaug it applies
pair-consistent DiffAugment (pairgen.diffaug) with uniforms drawn after z and ε: one independent draw per batch the
critic sees (each critic step's real and fake batch, then the generator step's batch), gates included when
config.diffaug_p < 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pairgen import diffaug, wgan_gp
from pairgen.compiled import compiled_critic_backward
from pairgen.core.cudagraph import GraphedCall
from pairgen.pairdata import PairData
from pairgen.presets import GANConfig
from pairgen.wgan_gp import bad_term_of, finite_flags, interpolation_weights, make_fakes, step_unless_nonfinite

# after backward, before the finite check: averages gradients (and the loss) over ranks; see pairgen.core.distributed
GradSync = Callable[[nn.Module, torch.Tensor], torch.Tensor]
# (real, fake, ε) → (loss, {'wasserstein', 'gp'}) with the critic's weight gradients left in param.grad
CriticBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
CRITIC_TERMS = ("wasserstein", "gp")


@dataclass
class StepOutcome:
    """One step of an iteration as the host sees it: phase 'critic' | 'generator', its loss terms as floats
    (critic: critic_loss, wasserstein, gp; generator: generator_loss) or None and the bad term's name."""

    phase: str
    terms: dict[str, float] | None
    bad: str | None


def make_critic_backward(critic: nn.Module, opt_d: torch.optim.Optimizer, config: GANConfig,
                         amp: bool) -> CriticBackward:
    """The critic step's backward for this run: wgan_gp.critic_backward (autograd), or with config.compile the
    torch.func + torch.compile form (pairgen.compiled; validate() refuses it for a batch-norm critic)."""
    if config.compile:
        return compiled_critic_backward(critic, opt_d, config.gp_lambda, amp)

    def backward(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return wgan_gp.critic_backward(critic, opt_d, real, fake, eps, config.gp_lambda, amp)

    return backward


def critic_update(critic: nn.Module, opt_d: torch.optim.Optimizer, backward: CriticBackward, real: torch.Tensor,
                  fake: torch.Tensor, eps: torch.Tensor, sync: GradSync | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One critic update on `real` against `fake` (B×(C+Kc)×H×W), ε B×1×1×1, applied unless non-finite →
    (float32 [critic_loss, wasserstein, gp], bool [wasserstein, gp, loss, gradients] finite), on the device."""
    loss, terms = backward(real, fake, eps)
    flags = finite_flags(sync(critic, loss) if sync is not None else loss, terms, critic)
    step_unless_nonfinite(opt_d, flags)
    return torch.stack([loss.detach().float(), terms["wasserstein"].float(), terms["gp"].float()]), flags


def generator_update(critic: nn.Module, generator: nn.Module, opt_g: torch.optim.Optimizer, fake: torch.Tensor,
                     amp: bool, sync: GradSync | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One generator update through `fake` = G(z) (in the generator's graph), applied unless non-finite →
    (float32 [generator_loss, 0, 0], bool [True, True, loss, gradients] finite), on the device."""
    loss = wgan_gp.generator_backward(critic, opt_g, fake, amp)
    flags = finite_flags(sync(generator, loss) if sync is not None else loss, {}, generator)
    step_unless_nonfinite(opt_g, flags)
    zero, true = torch.zeros(2, device=loss.device), torch.ones(2, dtype=torch.bool, device=loss.device)
    return torch.cat([loss.detach().float().reshape(1), zero]), torch.cat([true, flags])


class GanIteration:
    """`run(index)` = one training iteration on the real pairs index[s] (int64 S×B) for critic step s.

    `graph`: replay it as a CUDA graph after `warmup` eager iterations (pairgen.core.cudagraph.GraphedCall); the
    graph owns the parameter, gradient and Adam state tensors it captured, so build this after any resume.
    Needs fused Adam optimisers (the device-side skip)."""

    def __init__(self, generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, data: PairData, config: GANConfig, device: torch.device, amp: bool,
                 critic_backward: CriticBackward, sync: GradSync | None = None, graph: bool = False,
                 warmup: int = 3) -> None:
        self.generator, self.critic, self.opt_g, self.opt_d = generator, critic, opt_g, opt_d
        self.data, self.config, self.device, self.amp = data, config, device, amp
        self.critic_backward, self.sync = critic_backward, sync
        steps, batch = config.critic_steps, config.batch_size
        self.index = torch.zeros(steps, batch, dtype=torch.long, device=device)
        # the iteration's random draws (see the module docstring): fakes' z, each critic step's ε, the generator's z
        self.z_fakes = torch.zeros(steps * batch, config.z_dim, device=device)
        self.eps = torch.zeros(steps, batch, 1, 1, 1, device=device)
        self.z_generator = torch.zeros(batch, config.z_dim, device=device)
        self.aug_ops = diffaug.parse_policy(config.diffaug)
        # slot 2s: step s's real batch, 2s + 1: its fakes, 2S: the generator step's batch; with diffaug_p < 1 each
        # operation also reads a gate column (pairgen.diffaug.augment_pairs)
        self.aug_u = torch.zeros(2 * steps + 1, batch, diffaug.n_uniforms(self.aug_ops, config.diffaug_p < 1.0),
                                 device=device)
        self.buffers = [b for net in (generator, critic) for b in net.buffers()]
        self.snapshot = [b.detach().clone() for b in self.buffers]   # the iteration's starting BN statistics
        self.graphed = GraphedCall(self._body, (opt_g, opt_d), device, graph, warmup, capture_body=self._capture_body,
                                   who="pairgen train", turn_off="rerun with --no-cuda-graph")

    def run(self, index: torch.Tensor) -> list[StepOutcome]:
        """One iteration on the real pairs `index` (int64 S×B, any device) → S + 1 StepOutcomes, critic steps
        first."""
        self.index.copy_(index)
        self._draw()
        values, flags = self.graphed()
        return self._outcomes(values.cpu().tolist(), flags.cpu().tolist())   # the iteration's one host sync

    def _critic_input(self, pairs: torch.Tensor, slot: int) -> torch.Tensor:
        """What the critic sees of a batch of pairs (B×(C+Kc)×H×W): the pairs themselves, or with config.diffaug
        the pairs augmented with the uniforms of `slot` (image and mask moved together)."""
        if not self.aug_ops:
            return pairs
        return diffaug.augment_pairs(pairs, self.config.image_channels, self.aug_ops, self.aug_u[slot],
                                     self.config.diffaug_p)

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The iteration on self.index and the drawn buffers → (values float32 (S+1)×3, flags bool (S+1)×4), one
        row per step as critic_update / generator_update return them. Every step is applied unless non-finite."""
        config, amp = self.config, self.amp
        if self.buffers:
            torch._foreach_copy_(self.snapshot, [b.detach() for b in self.buffers])
        fakes = make_fakes(self.generator, config.critic_steps * config.batch_size, config, self.device, amp,
                           z=self.z_fakes).split(config.batch_size)   # G is fixed during the critic steps
        rows = [critic_update(self.critic, self.opt_d, self.critic_backward,
                              self._critic_input(self.data.batch(self.index[step]), 2 * step),
                              self._critic_input(fake, 2 * step + 1),
                              self.eps[step], self.sync)
                for step, fake in enumerate(fakes)]
        with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
            fake = self.generator(self.z_generator)
        rows.append(generator_update(self.critic, self.generator, self.opt_g,
                                     self._critic_input(fake, 2 * config.critic_steps), amp,
                                     self.sync))
        return torch.stack([values for values, _ in rows]), torch.stack([flags for _, flags in rows])

    def _capture_body(self) -> tuple[torch.Tensor, torch.Tensor]:
        # the autocast weight cache would hold casts made during capture: not allowed in a graph
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp, cache_enabled=False):
            return self._body()

    def _draw(self) -> None:
        """This iteration's z and ε into the static buffers from the global RNG (the fakes' z, then each critic
        step's ε, then the generator's z, then the augmentation's uniforms when config.diffaug is set)."""
        self.z_fakes.copy_(torch.randn(self.z_fakes.shape, device=self.device))
        for eps in self.eps:
            eps.copy_(interpolation_weights(eps))   # eps: B×1×1×1 float32, the shape the penalty draws
        self.z_generator.copy_(torch.randn(self.z_generator.shape, device=self.device))
        if self.aug_ops:
            self.aug_u.copy_(torch.rand(self.aug_u.shape, device=self.device))

    def _outcomes(self, values: list[list[float]], flags: list[list[bool]]) -> list[StepOutcome]:
        outcomes = []
        for step, (row, ok) in enumerate(zip(values, flags)):
            critic = step < self.config.critic_steps
            bad = bad_term_of(ok, list(CRITIC_TERMS) if critic else ["", ""])
            if bad is not None:
                outcomes.append(StepOutcome("critic" if critic else "generator", None, bad))
            elif critic:
                outcomes.append(StepOutcome("critic", dict(zip(["critic_loss", *CRITIC_TERMS], row)), None))
            else:
                outcomes.append(StepOutcome("generator", {"generator_loss": row[0]}, None))
        return outcomes
