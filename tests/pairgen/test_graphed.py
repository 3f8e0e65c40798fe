"""pairgen.step's iteration replayed as a graph, without a GPU: a fake graph stands in for CUDA capture (the body
runs during "capture" and its effects are undone, since a real capture executes nothing; replay reruns the body
into the captured outputs), so the warm-up / capture / replay plumbing must train exactly like the eager
iterations; device-side finite checks and skips, logged as the eager ones."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

import pairgen.diffaug as diffaug_module
import pairgen.train as train_module
import pairgen.wgan_gp as wgan_gp_module
from pairgen.checkpoint import load_checkpoint
from pairgen.networks import build_critic, build_generator
from pairgen.pairdata import PairData
from pairgen.step import GanIteration, make_critic_backward
from pairgen.train import TrainingDiverged, train
from pairgen.wgan_gp import bad_term_of, finite_flags, step_unless_nonfinite
from tests.fixtures import nan_gp_at_call, nan_loss_always, small_config, ticks


class FakeGraph:
    """torch.cuda.CUDAGraph on the CPU: replay() reruns the iteration's body into the captured outputs."""

    def __init__(self, iteration: GanIteration) -> None:
        self.iteration, self.replays = iteration, 0

    def replay(self) -> None:
        values, flags = self.iteration._capture_body()
        for captured, value in zip(self.iteration.graphed.outputs, (values, flags)):
            captured.copy_(value)
        self.replays += 1


@contextlib.contextmanager
def fake_capture(iteration: GanIteration, seen: dict):
    """torch.cuda.graph on the CPU: the body runs (CPU kernels execute at once), then weights, buffers and Adam
    state are put back in place. Records what capture demands."""
    nets, optimizers = (iteration.generator, iteration.critic), (iteration.opt_g, iteration.opt_d)
    seen["capturable"] = {g["capturable"] for opt in optimizers for g in opt.param_groups}
    seen["grads_none"] = all(p.grad is None for net in nets for p in net.parameters())
    tensors = [t for net in nets for t in net.state_dict().values()]
    tensors += [t for opt in optimizers for state in opt.state.values() for t in state.values()]
    saved = [t.clone() for t in tensors]
    yield
    with torch.no_grad():
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)


def faked(iteration: GanIteration, seen: dict) -> GanIteration:
    graphed = iteration.graphed
    graphed.capture = True
    graphed.graph_factory = lambda: FakeGraph(iteration)
    graphed.capture_context = lambda graph: fake_capture(iteration, seen)
    return iteration


@pytest.fixture
def graphed_on_cpu(monkeypatch: pytest.MonkeyPatch) -> list[GanIteration]:
    """Route pairgen.train through the graph path on the CPU, with a fake graph; yields the iterations made."""
    made: list[GanIteration] = []

    def make(*args, graph: bool, **kwargs) -> GanIteration:
        assert graph   # train asked for a graph
        made.append(faked(GanIteration(*args, graph=graph, **kwargs), {}))
        return made[-1]

    monkeypatch.setattr(train_module, "use_cuda_graph", lambda config, device, world: True)
    monkeypatch.setattr(train_module, "GanIteration", make)
    return made


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("it_per_s", "wall_s")}
            for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("critic_norm,diffaug,ema_kimg,more", [
    ("layer", "", 0.0, {}), ("batch", "", 0.0, {}), ("layer", "color,translation,cutout", 0.01, {}),
    ("layer", "color,cutout", 0.0, {"diffaug_p": 0.5})])
def test_graph_replay_trains_exactly_like_eager_iterations(tmp_path: Path, real: Path, critic_norm: str,
                                                           diffaug: str, ema_kimg: float, more: dict,
                                                           request: pytest.FixtureRequest) -> None:
    config = small_config(iters=6, tick_every=1, critic_norm=critic_norm, cuda_graph=True, diffaug=diffaug,
                          ema_kimg=ema_kimg, **more)
    eager_final = train(config, tmp_path / "eager", real, show_progress=False)   # CPU: the flag is ignored
    made = request.getfixturevalue("graphed_on_cpu")
    graphed_final = train(config, tmp_path / "graphed", real, show_progress=False)
    assert len(made) == 1 and made[0].graphed.graph.replays == 3   # 3 warm-ups, capture + replay, 2 replays
    assert _log(tmp_path / "graphed") == _log(tmp_path / "eager")
    eager, graphed = load_checkpoint(eager_final), load_checkpoint(graphed_final)
    for part in ("generator", "critic") + (("generator_ema",) if ema_kimg else ()):
        for name, value in eager[part].items():
            assert torch.equal(value, graphed[part][name]), f"{part}.{name}"
    for part in ("opt_g", "opt_d"):   # same moments and step counts; the capture flag is not left behind
        for index, state in eager[part]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, graphed[part]["state"][index][key]), f"{part}[{index}].{key}"
        assert graphed[part]["param_groups"] == eager[part]["param_groups"]
    # z and ε are drawn outside the graph: the same RNG state afterwards (exact resume)
    assert torch.equal(graphed["rng"]["torch"], eager["rng"]["torch"])


def test_capture_demands_and_failure_fall_back_to_eager(tmp_path: Path, real: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    config = small_config(critic_steps=2)
    torch.manual_seed(0)
    generator, critic = build_generator(config), build_critic(config)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in (generator, critic))
    data = PairData(real / "train", config, torch.device("cpu"))
    iteration = GanIteration(generator, critic, opt_g, opt_d, data, config, torch.device("cpu"), False,
                             make_critic_backward(critic, opt_d, config, False), graph=True, warmup=1)
    seen: dict = {}
    faked(iteration, seen)
    index = torch.arange(8).reshape(2, 4) % len(data)
    iteration.run(index)
    iteration.run(index)                                   # captured here
    assert seen == {"capturable": {True}, "grads_none": True}
    assert {g["capturable"] for opt in (opt_g, opt_d) for g in opt.param_groups} == {False}

    def failing(graph):
        raise RuntimeError("operation not permitted when stream is capturing")

    broken = GanIteration(generator, critic, opt_g, opt_d, data, config, torch.device("cpu"), False,
                          make_critic_backward(critic, opt_d, config, False), graph=True, warmup=1)
    broken.graphed.graph_factory, broken.graphed.capture_context = object, failing
    outcomes = [broken.run(index) for _ in range(3)]
    err = capsys.readouterr().err
    assert err.count("pairgen train: CUDA graph capture failed (RuntimeError: operation not permitted") == 1
    assert "--no-cuda-graph" in err and broken.graphed.failed and broken.graphed.graph is None
    assert all(o.bad is None for run in outcomes for o in run)
    assert all(float(s["step"]) == 4 + 3 * 2 for s in opt_d.state.values())   # every iteration still trained


def test_finite_flags_and_device_side_skip() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    loss = layer(torch.ones(1, 3)).sum()
    loss.backward()
    terms = {"wasserstein": torch.tensor(1.0), "gp": torch.tensor(float("nan"))}
    flags = finite_flags(loss, terms, layer)
    assert flags.tolist() == [True, False, True, True]
    assert bad_term_of(flags.tolist(), ["wasserstein", "gp"]) is None   # the loss decides, as in the eager check
    before = [p.detach().clone() for p in layer.parameters()]
    layer.weight.grad[0, 0] = float("inf")
    flags = finite_flags(loss, terms, layer)
    assert bad_term_of(flags.tolist(), ["wasserstein", "gp"]) == "gp"
    assert bad_term_of([True, True, True, False], ["wasserstein", "gp"]) == "grad"
    assert bad_term_of([True, True, False, True], ["wasserstein", "gp"]) == "loss"
    step_unless_nonfinite(optimizer, flags)   # skipped on the device: weights, moments, step count untouched
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before))
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in optimizer.state.values())
    assert not hasattr(optimizer, "found_inf")
    layer.weight.grad[0, 0] = 1.0
    step_unless_nonfinite(optimizer, finite_flags(loss, terms, layer))
    assert not torch.equal(layer.weight, before[0])
    assert all(float(s["step"]) == 1 for s in optimizer.state.values())


def test_iteration_reports_every_step(real: Path) -> None:
    config = small_config(critic_steps=3)
    torch.manual_seed(0)
    generator, critic = build_generator(config), build_critic(config)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in (generator, critic))
    data = PairData(real / "train", config, torch.device("cpu"))
    iteration = GanIteration(generator, critic, opt_g, opt_d, data, config, torch.device("cpu"), False,
                             make_critic_backward(critic, opt_d, config, False))
    outcomes = iteration.run(torch.arange(12).reshape(3, 4) % len(data))
    assert [o.phase for o in outcomes] == ["critic"] * 3 + ["generator"]
    assert all(o.bad is None for o in outcomes)
    assert set(outcomes[0].terms) == {"critic_loss", "wasserstein", "gp"}
    assert outcomes[0].terms["critic_loss"] == pytest.approx(
        -outcomes[0].terms["wasserstein"] + config.gp_lambda * outcomes[0].terms["gp"], rel=1e-5, abs=1e-6)
    assert isinstance(outcomes[-1].terms["generator_loss"], float)
    assert all(float(s["step"]) == 3 for s in opt_d.state.values())
    assert all(float(s["step"]) == 1 for s in opt_g.state.values())


def test_every_critic_input_gets_fresh_uniforms_and_the_generator_step_an_augmented_graph(
        real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each critic batch (real and fake apart) and the generator step's batch are augmented, with uniforms drawn
    anew every iteration, gates included (diffaug_p < 1); the generator step's augmented fakes carry the
    generator's graph (its gradient flows through the augmentation)."""
    config = small_config(critic_steps=2, diffaug="translation,cutout", diffaug_p=0.5)
    generator, critic = build_generator(config), build_critic(config)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in (generator, critic))
    data = PairData(real / "train", config, torch.device("cpu"))
    iteration = GanIteration(generator, critic, opt_g, opt_d, data, config, torch.device("cpu"), False,
                             make_critic_backward(critic, opt_d, config, False))
    seen: list[tuple[bool, torch.Tensor]] = []
    augment = diffaug_module.augment_pairs
    monkeypatch.setattr(diffaug_module, "augment_pairs",
                        lambda pair, channels, ops, u, p: seen.append((pair.requires_grad, u.clone()))
                        or augment(pair, channels, ops, u, p))
    index = torch.arange(8).reshape(2, 4) % len(data)
    iteration.run(index)
    first, seen[:] = list(seen), []
    iteration.run(index)
    assert [grad for grad, _ in first] == [False] * 4 + [True] and len(seen) == 5
    assert first[0][1].shape == (4, 6)                                   # 2 + 2 uniforms and a gate each
    assert len({tuple(u.flatten().tolist()) for _, u in first}) == 5     # one draw per batch
    assert not any(torch.equal(a, b) for (_, a), (_, b) in zip(first, seen))


def test_injected_nan_is_skipped_and_logged_like_the_eager_loop(tmp_path: Path, real: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                request: pytest.FixtureRequest) -> None:
    def runs(name: str) -> Path:
        monkeypatch.setattr(wgan_gp_module, "critic_loss", nan_gp_at_call(3))
        final = train(small_config(iters=2, tick_every=2), tmp_path / name, real, show_progress=False)
        assert all(torch.isfinite(v).all() for v in load_checkpoint(final)["critic"].values()
                   if v.is_floating_point())
        return tmp_path / name

    eager = runs("eager")
    request.getfixturevalue("graphed_on_cpu")
    graphed = runs("graphed")
    skips = [line for line in _log(graphed) if line["event"] == "skip"]
    assert skips == [{"event": "skip", "step": 1, "phase": "critic", "term": "gp"}]
    assert skips == [line for line in _log(eager) if line["event"] == "skip"]
    assert ticks(graphed)[-1]["skipped"] == 1
    assert ticks(graphed)[-1]["critic_loss"] == pytest.approx(ticks(eager)[-1]["critic_loss"], rel=1e-6)


def test_graphed_divergence_stops_training(tmp_path: Path, real: Path, graphed_on_cpu: list,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wgan_gp_module, "critic_loss", nan_loss_always)
    with pytest.raises(TrainingDiverged, match="10 consecutive non-finite critic steps"):
        train(small_config(iters=5, checkpoint_every=100), tmp_path / "run", real, show_progress=False)
    skips = [line for line in _log(tmp_path / "run") if line["event"] == "skip"]
    assert len(skips) == train_module.MAX_BAD_STEPS and {s["term"] for s in skips} == {"loss"}


def test_use_cuda_graph_only_where_it_can_work() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    config = small_config(cuda_graph=True)
    assert train_module.use_cuda_graph(config, cuda, 1)
    assert not train_module.use_cuda_graph(config, cpu, 1)
    assert not train_module.use_cuda_graph(config, cuda, 2)                   # ranks all-reduce between steps
    assert not train_module.use_cuda_graph(small_config(cuda_graph=True, compile=True), cuda, 1)
    assert not train_module.use_cuda_graph(small_config(cuda_graph=False), cuda, 1)   # --no-cuda-graph
