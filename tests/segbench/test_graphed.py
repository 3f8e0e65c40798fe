"""GraphedTrainStep on the CPU: the eager static-buffer path, a fake graph standing in for CUDA capture, the
capture-failure fallback, SegConfig.cuda_graph through train_segmentation, and bench.graph_agreement."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import segbench.graphed
import segbench.step
from pairgen.shards import load_shards
from segbench.perf.unet_bench import graph_agreement
from segbench.graphed import GraphedTrainStep, use_graph
from segbench.mixing import MixedBatches, RealSource
from segbench.presets import SegConfig, make_config
from segbench.rundir import RunDir
from segbench.step import make_optimizer, prepare_model, train_step
from segbench.train import train_segmentation
from segbench.unet import build_unet
from tests.fixtures import make_real_split

CPU = torch.device("cpu")


def tiny_config(**overrides) -> SegConfig:
    values = dict(depth=2, filters=4, min_iters=6, patience=6, max_iters=12, val_every=3, real_per_batch=3,
                  synth_per_batch=0, seed=3, lr=1e-3)
    values.update(overrides)
    return make_config("test-discs", "tiny", **values)


def fresh(config: SegConfig):
    torch.manual_seed(config.seed)
    model = prepare_model(build_unet(config, 1, 2), CPU)
    return model, make_optimizer(model, config)


def batches(n: int, size: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, 1, 16, 16, generator=generator) * 2 - 1,
             torch.randint(0, 2, (size, 16, 16), generator=generator)) for _ in range(n)]


def eager_run(config: SegConfig, data) -> tuple[list[torch.Tensor], torch.nn.Module, torch.optim.Optimizer]:
    model, optimizer = fresh(config)
    losses = [train_step(model, optimizer, images, masks, config.amp) for images, masks in data]
    return losses, model, optimizer


def assert_same_training(losses, model, optimizer, ref_losses, ref_model, ref_optimizer) -> None:
    assert torch.equal(torch.stack(losses), torch.stack(ref_losses))
    for (name, value), ref in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(value, ref), name
    state, ref_state = optimizer.state_dict(), ref_optimizer.state_dict()
    assert state["param_groups"] == ref_state["param_groups"]   # capturable restored after capture
    for key, per_param in state["state"].items():
        for field, value in per_param.items():
            assert torch.equal(value, ref_state["state"][key][field]), (key, field)


class FakeGraph:
    """torch.cuda.CUDAGraph on the CPU: replay() reruns train_step on the step's static buffers and writes the
    loss into the captured static_loss in place, as a real replay does."""

    def __init__(self, step: GraphedTrainStep) -> None:
        self.step, self.replays = step, 0

    def replay(self) -> None:
        s = self.step
        loss = train_step(s.model, s.optimizer, s.static_images, s.static_masks, s.amp)
        s.static_loss.copy_(loss)
        self.replays += 1


@contextlib.contextmanager
def fake_capture(step: GraphedTrainStep, seen: dict):
    """torch.cuda.graph on the CPU: the body runs (CPU kernels execute at once), then its effect on parameters and
    Adam state is undone, since a real capture executes nothing. Records what capture demands."""
    seen["capturable"] = [g["capturable"] for g in step.optimizer.param_groups]
    seen["grads_none"] = all(p.grad is None for p in step.model.parameters())
    params = [p.detach().clone() for p in step.model.parameters()]
    state = copy.deepcopy(step.optimizer.state_dict()["state"])
    yield
    with torch.no_grad():
        for p, saved in zip(step.model.parameters(), params):
            p.copy_(saved)
    for key, p in enumerate(step.model.parameters()):
        for field, value in step.optimizer.state[p].items():
            value.copy_(state[key][field])


def faked(step: GraphedTrainStep, seen: dict | None = None, fail: bool = False) -> GraphedTrainStep:
    """Force capture=True on the CPU with a fake graph (or a capture that raises)."""
    seen = {} if seen is None else seen
    step.capture = True
    step.graph_factory = lambda: FakeGraph(step)

    def failing(graph):
        raise RuntimeError("operation not permitted when stream is capturing")

    step.capture_context = failing if fail else (lambda graph: fake_capture(step, seen))
    return step


# ------------------------------------------------------------------------------------------------ the step


def test_eager_static_buffer_path_equals_train_step() -> None:
    config, data = tiny_config(), batches(6)
    reference = eager_run(config, data)
    model, optimizer = fresh(config)
    step = GraphedTrainStep(model, optimizer, config.amp, warmup=2)
    assert step.capture is False                              # None → capture only on CUDA
    losses = [step(images, masks) for images, masks in data]
    assert step.static_images is not None and not step.captured
    assert step.static_images.is_contiguous(memory_format=segbench.step.memory_format())
    assert_same_training(losses, model, optimizer, *reference)


def test_returned_losses_are_independent_tensors() -> None:
    config, data = tiny_config(), batches(6)
    for make in (lambda s: s, faked):   # the eager static path and the (fake) replayed graph
        model, optimizer = fresh(config)
        step = make(GraphedTrainStep(model, optimizer, config.amp, warmup=1))
        losses = [step(images, masks) for images, masks in data]
        kept = [loss.clone() for loss in losses]
        losses[-1].add_(100.0)                                # mutating a later loss …
        step(*data[0])                                        # … or replaying again …
        for loss, value in zip(losses[:-1], kept[:-1]):
            assert torch.equal(loss, value)                   # … leaves earlier ones alone
        assert all(loss.requires_grad is False and loss.dim() == 0 for loss in losses)
        assert len({loss.data_ptr() for loss in losses}) == len(losses)


def test_fake_graph_trains_each_batch_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = tiny_config(), batches(7)
    reference = eager_run(config, data)
    cache_flags: list[bool] = []
    autocast_for = segbench.step.autocast_for

    def recording(device, amp, cache_enabled=True):
        cache_flags.append(cache_enabled)
        return autocast_for(device, amp, cache_enabled)

    monkeypatch.setattr(segbench.step, "autocast_for", recording)
    model, optimizer = fresh(config)
    seen: dict = {}
    step = faked(GraphedTrainStep(model, optimizer, config.amp, warmup=3), seen)
    losses = [step(images, masks) for images, masks in data]
    assert step.captured and step.graph.replays == len(data) - 3   # capture call replays its own batch
    assert seen == {"capturable": [True], "grads_none": True}
    assert cache_flags[3] is False and cache_flags.count(False) == 1   # only the capture runs without the cache
    assert_same_training(losses, model, optimizer, *reference)


def test_other_batch_shape_runs_eagerly_for_that_call() -> None:
    config = tiny_config()
    data = batches(4) + batches(1, size=2, seed=1) + batches(2, seed=2)
    reference = eager_run(config, data)
    model, optimizer = fresh(config)
    step = faked(GraphedTrainStep(model, optimizer, config.amp, warmup=2))
    losses = [step(images, masks) for images, masks in data]
    assert step.graph.replays == 4                            # calls 3, 4, 6, 7; call 5 (batch of 2) eager
    assert_same_training(losses, model, optimizer, *reference)


def test_capture_failure_falls_back_to_eager(capsys: pytest.CaptureFixture) -> None:
    config, data = tiny_config(), batches(6)
    reference = eager_run(config, data)
    model, optimizer = fresh(config)
    step = faked(GraphedTrainStep(model, optimizer, config.amp, warmup=2), fail=True)
    losses = [step(images, masks) for images, masks in data]
    err = capsys.readouterr().err
    assert err.count("segbench: CUDA graph capture failed (RuntimeError: operation not permitted") == 1
    assert "training eagerly" in err
    assert step.failed and not step.captured
    assert_same_training(losses, model, optimizer, *reference)   # incl. capturable restored to False


def test_use_graph_rule() -> None:
    assert use_graph(True, torch.device("cuda", 0), 1)
    assert not use_graph(True, CPU, 1)
    assert not use_graph(True, torch.device("cuda"), 2)
    assert not use_graph(False, torch.device("cuda"), 1)


# ------------------------------------------------------------------------------------------------ config, training


def test_config_round_trip_and_old_configs(tmp_path: Path) -> None:
    config = tiny_config(cuda_graph=True)
    config.save(tmp_path / "config.json")
    assert SegConfig.load(tmp_path / "config.json") == config
    old = json.loads((tmp_path / "config.json").read_text())
    del old["cuda_graph"]                                     # a run directory from before the option
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert SegConfig.load(tmp_path / "old.json").cuda_graph is False


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("real")
    train = load_shards(make_real_split(root / "train", 8, height=16, width=16, seed=0))
    val = load_shards(make_real_split(root / "val", 3, height=16, width=16, split="val", seed=1))
    return train, val


def train_run(config: SegConfig, splits, run_dir: Path):
    train, val = splits
    torch.manual_seed(config.seed)
    model = build_unet(config, 1, 2)
    source = MixedBatches(RealSource(train, "cpu"), None, config.real_per_batch, 0,
                          torch.Generator().manual_seed(config.seed))
    result = train_segmentation(config, model, source, val, run_dir, show_progress=False, checkpoint_seconds=0)
    log = [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
           for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {k: v for k, v in result.items() if k != "wall_s"}, log, model


def assert_same_run(a, b) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    for key, value in a[2].state_dict().items():
        assert torch.equal(value, b[2].state_dict()[key]), key


def test_cuda_graph_option_on_cpu_trains_like_without(splits, tmp_path: Path) -> None:
    config = tiny_config(aug="flip")
    assert_same_run(train_run(dataclasses.replace(config, cuda_graph=True), splits, tmp_path / "on"),
                    train_run(config, splits, tmp_path / "off"))


def test_training_loop_with_a_fake_graph(splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph path of train_segmentation (validation, best-state restore and checkpoints between replays)."""
    config = tiny_config()
    reference = train_run(config, splits, tmp_path / "eager")
    made: list[GraphedTrainStep] = []

    def make_step(model, optimizer, amp):
        made.append(faked(GraphedTrainStep(model, optimizer, amp)))
        return made[-1]

    monkeypatch.setattr(segbench.graphed, "use_graph", lambda enabled, device, world: enabled)
    monkeypatch.setattr(segbench.graphed, "GraphedTrainStep", make_step)
    graphed = train_run(dataclasses.replace(config, cuda_graph=True), splits, tmp_path / "graph")
    assert len(made) == 1 and made[0].graph.replays == config.max_iters - 3
    assert_same_run(graphed, reference)
    state = torch.load(RunDir(tmp_path / "graph").training_state, weights_only=True)
    assert state["optimizer"]["param_groups"][0]["capturable"] is False


def test_graph_agreement_on_cpu_is_exact() -> None:
    result = graph_agreement("scr-lung", "tiny", CPU, steps=5)
    assert result["graph_captured"] is False and result["agreement_steps"] == 5
    for key in ("graph_loss_max_rel_diff", "graph_weight_max_rel_diff", "eager_loss_max_rel_diff",
                "eager_weight_max_rel_diff"):
        assert result[key] == pytest.approx(0.0, abs=1e-6), key


@pytest.mark.parametrize("channels", [1, 3])
def test_static_buffers_have_the_strides_the_convolutions_saw(channels: int) -> None:
    # One channel: NCHW is already "channels-last contiguous" with NCHW strides, and a buffer *made* channels-last
    # has other strides; cuDNN keys its algorithm cache on strides, so such a buffer made the H200 benchmark
    # inside the capture, which failed (the lung U-Net; 3-channel Cityscapes captured fine).
    config = tiny_config()
    model = prepare_model(build_unet(config, channels, 2), CPU)
    step = GraphedTrainStep(model, make_optimizer(model, config), amp=False, capture=False)
    images = torch.rand(3, channels, 16, 16) * 2 - 1
    step(images, torch.randint(0, 2, (3, 16, 16)))
    expected = images.contiguous(memory_format=segbench.step.memory_format()).stride()
    assert step.static_images.stride() == expected
    if channels == 1:
        assert expected != torch.empty_like(images, memory_format=torch.channels_last).stride()
