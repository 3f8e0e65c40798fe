"""The torch.func + torch.compile critic step gives the eager critic step's numbers (pairgen.compiled)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pairgen.compiled import CompiledCriticLoss
from pairgen.core.errors import UserError
from pairgen.networks import build_critic, pair_channels
from pairgen.presets import make_config
from pairgen.train import _make_optimizer
from pairgen.step import critic_update, make_critic_backward
from pairgen.wgan_gp import bad_term_of, critic_loss, interpolation_weights


def _small_config(**overrides):
    # a two-stage critic at 16×16: the compiled graph stays small, so compiling takes seconds, not a minute
    return make_config("shapes", "tiny", height=16, width=16, g_channels=(16, 8), d_channels=(4, 8),
                       batch_size=4, device="cpu", class_names=("background", "disc", "square"), **overrides)


def _pairs(config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (config.batch_size, pair_channels(config), config.height, config.width)
    return (torch.rand(shape, generator=generator) * 2 - 1, torch.rand(shape, generator=generator) * 2 - 1)


def _eager(critic, real, fake, gp_lambda, seed):
    critic.zero_grad(set_to_none=True)
    torch.manual_seed(seed)                      # ε comes from the global RNG in both paths
    loss, terms = critic_loss(critic, real, fake, gp_lambda)
    loss.backward()
    return loss.detach(), terms, {n: p.grad.clone() for n, p in critic.named_parameters()}


@pytest.mark.filterwarnings("error::DeprecationWarning")   # torch.compile's own import noise is silenced
@pytest.mark.parametrize("compile", [False, True])
def test_functional_critic_loss_matches_eager_autograd(compile: bool) -> None:
    config = _small_config()
    torch.manual_seed(0)
    critic = build_critic(config)
    real, fake = _pairs(config, 1)
    loss_e, terms_e, grads_e = _eager(critic, real, fake, config.gp_lambda, seed=7)
    torch.manual_seed(7)
    loss_c, terms_c, grads_c = CompiledCriticLoss(critic, config.gp_lambda, amp=False, compile=compile)(real, fake)
    assert terms_e["gp"] > 0.01                  # the penalty is really in play, not ~0
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms_c["gp"], terms_e["gp"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms_c["wasserstein"], terms_e["wasserstein"], rtol=1e-5, atol=1e-6)
    assert set(grads_c) == set(grads_e)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6)


def test_compiled_critic_step_updates_like_the_eager_step() -> None:
    eager_config = _small_config()
    compiled_config = dataclasses.replace(eager_config, compile=True)
    real, fake = _pairs(eager_config, 2)
    results = []
    for config in (eager_config, compiled_config):
        torch.manual_seed(0)
        critic = build_critic(config)
        initial = torch.cat([p.detach().flatten() for p in critic.parameters()])
        opt_d = _make_optimizer(critic, config, torch.device("cpu"))
        backward = make_critic_backward(critic, opt_d, config, amp=False)   # compiled for compiled_config
        torch.manual_seed(3)
        values, flags = critic_update(critic, opt_d, backward, real, fake, interpolation_weights(real))
        assert bad_term_of(flags.tolist(), ["wasserstein", "gp"]) is None
        results.append((values, torch.cat([p.detach().flatten() for p in critic.parameters()]) - initial))
    (values_e, moved_e), (values_c, moved_c) = results
    torch.testing.assert_close(values_c, values_e, rtol=1e-5, atol=1e-6)   # critic_loss, wasserstein, gp
    # Adam's first step moves every weight by lr·sign(gradient): the paths agree except where a gradient is
    # ~0 and its sign is decided by rounding (then the two moves differ by at most 2·lr)
    assert float(moved_e.abs().max()) == pytest.approx(eager_config.lr, rel=1e-3)
    differ = (moved_c - moved_e).abs() > 1e-6            # 1 % of lr; float32 rounding of w + Δw is ~1e-8
    assert float(differ.float().mean()) < 0.01
    assert float((moved_c - moved_e).abs().max()) <= 2 * eager_config.lr * 1.001


def test_compile_refuses_a_batch_norm_critic() -> None:
    with pytest.raises(UserError, match="--compile needs a critic without batch norm"):
        _small_config(critic_norm="batch", compile=True)
