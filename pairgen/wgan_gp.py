"""WGAN-GP losses (thesis section 3.3.1, Gulrajani et al. 2017) as pure functions of a critic and two batches.

Sign convention (the reference implementation's): the critic *minimises* E[D(fake)] - E[D(real)] + λ·GP, so
it scores real pairs high; the generator minimises -E[D(G(z))]. (Eq. 3.14 of the thesis prints the first two
terms with the opposite sign, which contradicts eq. 3.15; the reference code uses this one.)
The Wasserstein estimate reported is E[D(real)] - E[D(fake)], which should be positive and shrink as G learns.

critic_backward / generator_backward leave one update's gradients in param.grad; finite_flags and
step_unless_nonfinite then apply it unless the loss or a gradient is non-finite, decided on the device, so a bad
batch never touches the weights or Adam's moments. pairgen.step runs them as the iteration of algorithm 4.

A critic without batch norm scores real and fake in ONE forward (its samples are independent, so this is the
same function with fewer kernel launches); the interpolates stay a separate forward, because their input-gradient
pass would otherwise run over all 3B rows (docs/DECISIONS.md has the measurements).
"""

from __future__ import annotations

import torch
from torch import nn

from pairgen.presets import GANConfig


def batch_independent(critic: nn.Module) -> bool:
    """True when the critic scores each sample on its own (no batch norm in train mode mixes the rows)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def _at_least_fp32(value: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) → fp32 for reductions; fp32/fp64 unchanged."""
    return value.to(torch.promote_types(value.dtype, torch.float32))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i (||∇_x D(x̂_i)||₂ - 1)², x̂_i = ε_i·real_i + (1-ε_i)·fake_i, ε_i ~ U[0, 1] per sample.

    real, fake: float B×… (same shape); the norm runs over all non-batch dims. `generator` draws ε (it must
    live on real.device); None uses the global RNG; `eps` (B×1×…×1, from interpolation_weights) skips the
    draw. Returns a scalar tensor (fp32, or fp64 for fp64 inputs) that
    stays in the graph (create_graph=True) so that its gradient reaches the critic's weights.
    """
    eps = interpolation_weights(real, generator) if eps is None else eps
    mixed = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grads,) = torch.autograd.grad(_at_least_fp32(scores).sum(), mixed, create_graph=True)
    return penalty_of(grads)


def interpolation_weights(real: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ε ~ U[0, 1], one per sample, shaped B×1×…×1 in real's dtype (drawn in fp32 so the RNG stream does not
    depend on the dtype)."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    return torch.rand(eps_shape, generator=generator, device=real.device, dtype=torch.float32).to(real.dtype)


def penalty_of(grads: torch.Tensor) -> torch.Tensor:
    """mean_i (||grads_i||₂ - 1)² over the batch (norm over all non-batch dims), in fp32 at least."""
    return ((_at_least_fp32(grads).flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_lambda: float,
                generator: torch.Generator | None = None, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Critic loss E[D(fake)] - E[D(real)] + gp_lambda·GP (scalar float32, in the graph) and its terms.

    terms: 'wasserstein' = E[D(real)] - E[D(fake)] and 'gp' = the unweighted penalty, both detached scalars.
    `fake` is detached here: the critic step must not backpropagate into the generator.
    """
    fake = fake.detach()
    if real.shape == fake.shape and batch_independent(critic):
        scores = _at_least_fp32(critic(torch.cat([real, fake])))
        wasserstein = scores[:real.shape[0]].mean() - scores[real.shape[0]:].mean()
    else:
        wasserstein = _at_least_fp32(critic(real)).mean() - _at_least_fp32(critic(fake)).mean()
    penalty = gradient_penalty(critic, real, fake, generator, eps)
    loss = -wasserstein + gp_lambda * penalty
    return loss, {"wasserstein": wasserstein.detach(), "gp": penalty.detach()}


def generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)] (scalar float32); `fake` must carry the generator's graph."""
    return -_at_least_fp32(critic(fake)).mean()


def _grads_finite(grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-dim bool tensor: every gradient entry is finite (NaN and ±inf propagate through sums and maxima).

    CPU: one sum per tensor (cheaper there than isfinite or |g|-max reductions: docs/DECISIONS.md); a sum that
    overflows float range also counts as non-finite, which only a diverged step reaches. CUDA: one foreach
    max-|g| launch over all tensors.
    """
    if grads[0].is_cuda:
        return torch.isfinite(torch.nn.utils.get_total_norm(grads, float("inf"), foreach=True))
    return torch.isfinite(torch.stack([g.sum() for g in grads]).sum())


def make_fakes(generator: nn.Module, n: int, config: GANConfig, device: torch.device, amp: bool,
               z: torch.Tensor | None = None) -> torch.Tensor:
    """n fakes float32 n×(C+Kc)×H×W from z ~ N(0, I) (or the given z, n×z_dim), without a graph (the critic
    steps' inputs).

    The training loop draws all critic steps' fakes of an iteration in one call: the generator does not change
    during the critic steps, so this is the same distribution as one forward per step, except that the
    generator's batch norm (train mode) normalises over all n rows instead of each step's B.
    """
    z = torch.randn(n, config.z_dim, device=device) if z is None else z
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
        return generator(z).float()


def critic_backward(critic: nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor,
                    eps: torch.Tensor | None, gp_lambda: float, amp: bool
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss on `real` against `fake` (both B×(C+Kc)×H×W), with its weight gradients left in
    param.grad (zeroed first) → (loss, {'wasserstein', 'gp'} detached). No host sync. `eps`: the penalty's
    interpolation weights (B×1×1×1; None: drawn here). The eager form of pairgen.step's critic backward."""
    with torch.autocast(real.device.type, torch.bfloat16, enabled=amp):
        loss, terms = critic_loss(critic, real, fake, gp_lambda, eps=eps)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    return loss, terms


def generator_backward(critic: nn.Module, opt_g: torch.optim.Optimizer, fake: torch.Tensor, amp: bool
                       ) -> torch.Tensor:
    """-E[D(fake)] for `fake` = G(z) carrying the generator's graph, its gradients left in the generator's
    param.grad (zeroed first; the critic's weights get none) → the loss, in the graph. No host sync."""
    critic.requires_grad_(False)  # the critic's weight gradients are not needed here
    try:
        with torch.autocast(fake.device.type, torch.bfloat16, enabled=amp):
            loss = generator_loss(critic, fake)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        critic.requires_grad_(True)
    return loss


def finite_flags(loss: torch.Tensor, terms: dict[str, torch.Tensor], module: nn.Module) -> torch.Tensor:
    """bool tensor [each term finite…, loss finite, every gradient of `module` finite], on the device, no host
    sync: what a step that cannot branch on the host (a CUDA graph) decides with; see bad_term_of. Under
    torchrun pass the loss averaged over ranks (with the gradients), so that every rank decides the same."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    finite = [torch.isfinite(_at_least_fp32(v.detach())).reshape(()) for v in (*terms.values(), loss)]
    all_grads = _grads_finite(grads) if grads else torch.ones((), dtype=torch.bool, device=loss.device)
    return torch.stack([*finite, all_grads.reshape(())])


def bad_term_of(flags: list[bool], names: list[str]) -> str | None:
    """finite_flags read on the host → None if the step is good (loss and gradients finite), else the first
    non-finite term's name, else 'loss', else 'grad'."""
    *term_flags, loss_ok, grads_ok = flags
    if loss_ok and grads_ok:
        return None
    for name, ok in zip(names, term_flags):
        if not ok:
            return name
    return "loss" if not loss_ok else "grad"


def step_unless_nonfinite(optimizer: torch.optim.Optimizer, flags: torch.Tensor) -> None:
    """optimizer.step() that leaves weights, moments and step count untouched when flags (finite_flags) says the
    loss or a gradient is non-finite, decided on the device: fused Adam's found_inf (the mechanism GradScaler
    uses). Needs a fused optimiser."""
    bad = ~(flags[-2] & flags[-1])
    optimizer.found_inf = bad.float()  # type: ignore[attr-defined]  # read by the fused kernel
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # type: ignore[attr-defined]
