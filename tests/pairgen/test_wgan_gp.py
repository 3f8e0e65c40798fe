"""The WGAN-GP terms against direct computations (analytic gradient, finite differences) and their signs."""

from __future__ import annotations

import torch
from torch import nn

from pairgen.wgan_gp import critic_loss, generator_loss, gradient_penalty


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b: ∇_x D = w everywhere, so the penalty is (||w|| - 1)² for every sample."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True) + self.bias


class MeanCritic(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1, keepdim=True)


def test_penalty_of_linear_critic_is_analytic() -> None:
    weight = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    critic = LinearCritic(weight.clone())
    real, fake = torch.randn(5, 2, 3, 4), torch.randn(5, 2, 3, 4)
    expected = (weight.norm() - 1) ** 2
    assert torch.allclose(gradient_penalty(critic, real, fake), expected, rtol=1e-5)
    critic.weight.data /= weight.norm()            # unit-norm gradient: no penalty
    assert gradient_penalty(critic, real, fake).item() < 1e-10


def test_penalty_gradient_reaches_critic_weights() -> None:
    critic = LinearCritic(torch.full((1, 2, 2), 2.0))  # ||w|| = 4 → d/dw (||w||-1)² = 2·3·w/4
    gradient_penalty(critic, torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)).backward()
    assert torch.allclose(critic.weight.grad, torch.full((1, 2, 2), 2 * 3 * 2.0 / 4))


def test_penalty_matches_finite_differences_on_conv_critic() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.GroupNorm(1, 3), nn.Tanh(),
                           nn.Flatten(), nn.Linear(3 * 2 * 2, 1)).double()
    real, fake = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    # the same ε the function drew, then ∇_x D by central differences at each interpolate
    eps = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(7)).double()
    mixed = eps * real + (1 - eps) * fake
    step, norms = 1e-6, []
    with torch.no_grad():
        for sample in mixed:
            grad = torch.zeros_like(sample).flatten()
            for j in range(grad.numel()):
                delta = torch.zeros_like(grad)
                delta[j] = step
                delta = delta.view_as(sample)
                grad[j] = (critic((sample + delta)[None]) - critic((sample - delta)[None])).item() / (2 * step)
            norms.append(grad.norm())
    expected = ((torch.stack(norms) - 1) ** 2).mean()
    assert torch.allclose(penalty, expected, rtol=1e-6), (penalty.item(), expected.item())


def test_loss_signs() -> None:
    critic = MeanCritic()
    real, fake = torch.ones(4, 2, 3, 3), -torch.ones(4, 2, 3, 3)
    loss, terms = critic_loss(critic, real, fake, gp_lambda=10.0)
    # D(real)=1, D(fake)=-1: Wasserstein estimate 2; ||∇D|| = 1/sqrt(18) for the mean of 18 values
    gp = (1 / 18 ** 0.5 - 1) ** 2
    assert abs(terms["wasserstein"].item() - 2.0) < 1e-6 and abs(terms["gp"].item() - gp) < 1e-6
    assert abs(loss.item() - (-2.0 + 10.0 * gp)) < 1e-5
    assert abs(generator_loss(critic, fake).item() - 1.0) < 1e-6   # G is rewarded for raising D(fake)
    assert not terms["wasserstein"].requires_grad and loss.requires_grad is False  # no parameters involved


def test_critic_loss_does_not_reach_generator() -> None:
    weight = nn.Parameter(torch.tensor(2.0))
    fake = torch.ones(2, 1, 2, 2) * weight
    loss, _ = critic_loss(LinearCritic(torch.ones(1, 2, 2)), torch.zeros(2, 1, 2, 2), fake, 10.0)
    loss.backward()
    assert weight.grad is None
