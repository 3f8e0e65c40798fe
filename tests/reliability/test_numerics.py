"""Promise 5: a non-finite loss or gradient skips the step without touching the weights and is logged (step, term);
K bad steps in a row stop training naming the last good checkpoint; a non-finite state is never saved; a collapsed
generator is flagged in the log.

Complements tests/pairgen/test_train.py (critic-loss NaN skipped and logged, K consecutive critic failures).
Faults are injected from outside the update code: a gradient hook on a generator parameter, a poisoned weight
after an update, a generator whose output ignores z.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import pairgen.train as train_module
from pairgen import checkpoint as ckpt
from pairgen.train import COLLAPSE_THRESHOLD, MAX_BAD_STEPS, TrainingDiverged, train
from tests.fixtures import make_state, small_config


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def nan_gradients(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None) -> None:
    """Generators built from now on get a NaN gradient in their first parameter on the given backward passes
    (counted from 1; None = every one) while the loss stays finite."""
    build = train_module.build_generator

    def build_with_hook(config):
        generator = build(config)
        calls = {"n": 0}

        def poison(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad * float("nan") if bad_calls is None or calls["n"] in bad_calls else grad

        next(generator.parameters()).register_hook(poison)
        return generator

    monkeypatch.setattr(train_module, "build_generator", build_with_hook)


def parameters(state: dict, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: state["generator"][n] for n in names}


def test_non_finite_gradient_skips_the_step_untouched_and_logs_it(real: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nan_gradients(monkeypatch, {2})
    run = tmp_path / "run"
    train(small_config(iters=3, tick_every=1, checkpoint_every=1, keep_checkpoints=0), run, real,
          show_progress=False)
    skips = [r for r in log(run) if r["event"] == "skip"]
    assert skips == [{"event": "skip", "step": 2, "phase": "generator", "term": "grad"}]
    assert [r["skipped"] for r in log(run) if r["event"] == "tick"] == [0, 1, 0]
    names = [n for n, _ in train_module.build_generator(small_config()).named_parameters()]
    before, after = (ckpt.load_checkpoint(ckpt.checkpoint_path(run, s)) for s in (1, 2))
    for name in names:       # the skipped generator step changed no weight and no Adam moment
        assert torch.equal(before["generator"][name], after["generator"][name]), name
    assert all(torch.equal(before["opt_g"]["state"][i][k], after["opt_g"]["state"][i][k])
               for i in before["opt_g"]["state"] for k in before["opt_g"]["state"][i])
    assert not torch.equal(before["critic"]["score.weight"], after["critic"]["score.weight"])  # critic still learnt


def test_consecutive_bad_generator_steps_stop_naming_the_last_good_checkpoint(real: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(small_config(iters=2, checkpoint_every=1), run, real, show_progress=False)
    nan_gradients(monkeypatch, None)
    with pytest.raises(TrainingDiverged) as stopped:
        train(small_config(iters=40, checkpoint_every=100), run, real, resume=True, show_progress=False)
    message = str(stopped.value)
    assert "generator" in message and str(ckpt.checkpoint_path(run, 2)) in message and "\n" not in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-0000001.pt", "ckpt-0000002.pt"]
    skips = [r for r in log(run) if r["event"] == "skip"]
    assert len(skips) == MAX_BAD_STEPS and {r["term"] for r in skips} == {"grad"}


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # the NaN sample sheet
def test_non_finite_weights_are_never_saved(real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update that leaves a NaN in the weights (finite loss and gradients, e.g. an overflowing step): the next
    checkpoint is refused and training stops naming the last good one; nothing non-finite reaches the disk."""
    build, make_optimizer = train_module.build_generator, train_module._make_optimizer
    generators: list[nn.Module] = []

    def poisoning_optimizer(module, *args):
        optimizer = make_optimizer(module, *args)
        if generators and module is generators[-1]:
            calls = {"n": 0}

            def after_step(*_):
                calls["n"] += 1
                if calls["n"] == 3:   # the third generator update leaves an inf in a weight
                    with torch.no_grad():
                        next(module.parameters()).view(-1)[0] = float("inf")

            optimizer.register_step_post_hook(after_step)
        return optimizer

    monkeypatch.setattr(train_module, "build_generator", lambda config: generators.append(build(config)) or
                        generators[-1])
    monkeypatch.setattr(train_module, "_make_optimizer", poisoning_optimizer)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"non-finite.*last good checkpoint: .*ckpt-0000002\.pt"):
        train(small_config(iters=4, checkpoint_every=1), run, real, show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-0000001.pt", "ckpt-0000002.pt"]


def test_non_finite_optimiser_state_is_refused(tmp_path: Path) -> None:
    state = make_state(1)
    next(iter(state["opt_g"]["state"].values()))["exp_avg_sq"].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="opt_g.state"):
        ckpt.save_checkpoint(tmp_path / "ckpt-0000001.pt", state)
    assert list(tmp_path.iterdir()) == []


class ConstantGenerator(nn.Module):
    """A generator that ignores z (complete mode collapse); gradients stay finite (zero)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) * 0.0 + 0.25


def test_collapsed_generator_is_flagged(real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    healthy = tmp_path / "healthy"
    train(small_config(iters=4, tick_every=2), healthy, real, show_progress=False)
    ticks = [r for r in log(healthy) if r["event"] == "tick"]
    assert [t["collapse_suspected"] for t in ticks] == [False, False]
    assert all(t["diversity"] > 5 * COLLAPSE_THRESHOLD for t in ticks)
    build = train_module.build_generator
    monkeypatch.setattr(train_module, "build_generator", lambda config: ConstantGenerator(build(config)))
    capsys.readouterr()
    collapsed = tmp_path / "collapsed"
    train(small_config(iters=4, tick_every=2), collapsed, real, show_progress=False)
    ticks = [r for r in log(collapsed) if r["event"] == "tick"]
    assert [t["collapse_suspected"] for t in ticks] == [True, True]
    assert all(t["diversity"] < COLLAPSE_THRESHOLD for t in ticks)
    assert "mode collapse suspected" in capsys.readouterr().err
