"""Early stopping on hand sequences, the losses, best-parameter restore, and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pairgen.shards import load_shards
from segbench.mixing import MixedBatches, RealSource
from segbench.presets import make_config
from segbench.rundir import RunDir
from segbench.train import EarlyStopping, segmentation_loss, train_segmentation, validate
from segbench.unet import build_unet
from tests.fixtures import make_real_split


# ------------------------------------------------------------------------------------------------ early stopping


def test_thesis_rule_on_a_hand_sequence() -> None:
    stopper = EarlyStopping(min_iters=300, patience=200)
    sequence = [(100, 1.0, True), (200, 0.5, True), (300, 0.6, False), (400, 0.4, True), (500, 0.45, False)]
    for iteration, loss, improved in sequence:
        assert stopper.update(iteration, loss) is improved
        assert not stopper.should_stop(iteration)
    assert stopper.update(600, 0.5) is False
    assert stopper.should_stop(600)                 # 200 iterations since the minimum at 400
    assert (stopper.best_iteration, stopper.best_loss) == (400, 0.4)


def test_minimum_iterations_dominate() -> None:
    stopper = EarlyStopping(min_iters=3000, patience=3000)
    stopper.update(100, 0.2)                        # section 4.2: the minimum early on …
    for iteration in (1000, 2000, 3000):
        stopper.update(iteration, 0.3)
        assert not stopper.should_stop(iteration)   # … still needs 3000 iterations after it
    assert stopper.should_stop(3100)
    short = EarlyStopping(min_iters=1000, patience=100)
    short.update(100, 0.2)
    assert not short.should_stop(500) and short.should_stop(1000)


def test_ties_and_nan_are_not_improvements() -> None:
    stopper = EarlyStopping(min_iters=0, patience=10)
    assert stopper.update(5, 0.3)
    assert not stopper.update(10, 0.3)
    assert not stopper.update(15, math.nan)
    assert stopper.best_iteration == 5 and stopper.should_stop(15)
    never = EarlyStopping(min_iters=0, patience=10)
    never.update(5, math.nan)
    assert never.best_iteration == 0 and never.should_stop(10)   # patience counts from the start


def test_state_round_trip() -> None:
    stopper = EarlyStopping(50, 20)
    stopper.update(10, 0.7)
    copy = EarlyStopping(0, 0)
    copy.load_state_dict(stopper.state_dict())
    assert copy.state_dict() == stopper.state_dict()


# ------------------------------------------------------------------------------------------------ losses


def test_losses_match_sections_2_6_3() -> None:
    torch.manual_seed(0)
    masks = torch.randint(0, 3, (2, 4, 4))
    binary = torch.randn(2, 1, 4, 4)
    expected = F.binary_cross_entropy_with_logits(binary[:, 0], (masks > 0).float())
    assert torch.allclose(segmentation_loss(binary, masks), expected)
    multi = torch.randn(2, 3, 4, 4)
    assert torch.allclose(segmentation_loss(multi, masks), F.cross_entropy(multi, masks))
    total = segmentation_loss(multi, masks, reduction="sum")
    assert torch.allclose(total / masks.numel(), F.cross_entropy(multi, masks))


# ------------------------------------------------------------------------------------------------ training loop


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("real")
    train = load_shards(make_real_split(root / "train", 12, height=16, width=16, seed=0))
    val = load_shards(make_real_split(root / "val", 4, height=16, width=16, split="val", seed=1))
    return train, val


def tiny_config(**overrides):
    values = dict(depth=2, filters=8, min_iters=10, patience=10, max_iters=30, val_every=5, real_per_batch=3,
                  synth_per_batch=0, seed=3)
    values.update(overrides)
    return make_config("test-discs", "tiny", **values)


class Interrupted(Exception):
    pass


class InterruptingBatches(MixedBatches):
    """Raises after `limit` batches: a crash in the middle of training."""

    def __init__(self, *args, limit: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit

    def __next__(self):
        if self.limit == 0:
            raise Interrupted
        self.limit -= 1
        return super().__next__()


def start(config, train, limit: int | None = None):
    torch.manual_seed(config.seed)
    model = build_unet(config, 1, 2)
    source = RealSource(train, "cpu")
    generator = torch.Generator().manual_seed(config.seed)
    if limit is None:
        return model, MixedBatches(source, None, config.real_per_batch, 0, generator)
    return model, InterruptingBatches(source, None, config.real_per_batch, 0, generator, limit=limit)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_restores_best_parameters_and_logs(splits, tmp_path: Path) -> None:
    train, val = splits
    config = tiny_config(max_iters=20, min_iters=20, lr=1e-3)
    model, batches = start(config, train)
    result = train_segmentation(config, model, batches, val, tmp_path, show_progress=False)
    log = read_log(tmp_path)
    assert [r["iteration"] for r in log] == [5, 10, 15, 20]
    assert set(log[0]) >= {"iteration", "train_loss", "val_loss", "best_val_loss", "best_iteration", "wall_s"}
    best = min(log, key=lambda r: r["val_loss"])
    assert (result["best_iteration"], result["best_val_loss"]) == (best["iteration"], best["val_loss"])
    # the model holds the parameters of the minimum: its validation loss is the best one
    again, _ = validate(model, RealSource(val, "cpu"), config.eval_batch, amp=False)
    assert again == pytest.approx(result["best_val_loss"], rel=1e-5)
    assert result["iterations"] == 20 and not result["stopped_early"]


class FixedLogits(torch.nn.Module):
    """Returns given logits (N×C×H×W) for the validation set, batch by batch, whatever the images."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits.float())
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen:self.seen + len(images)]
        self.seen += len(images)
        return out


class ValStub:
    """The slice of RealSource that validation reads: images uint8 N×1×H×W, masks uint8 N×H×W."""

    def __init__(self, masks: list[list[list[int]]]) -> None:
        self.masks = torch.tensor(masks, dtype=torch.uint8)
        self.images = torch.zeros(len(masks), 1, *self.masks.shape[1:], dtype=torch.uint8)
        self.device, self.shape = torch.device("cpu"), tuple(self.masks.shape[1:])

    def __len__(self) -> int:
        return len(self.masks)


def test_validation_score_by_hand() -> None:
    # one foreground class: image 0 predicts 1 of its 2 foreground pixels (Dice 2·1 / (1 + 2) = 2/3), image 1 is
    # empty in both (Dice 1): the score is the mean over images, 5/6
    val = ValStub([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    logits = torch.tensor([[[[4.0, -4.0], [-4.0, -4.0]]], [[[-4.0, -4.0], [-4.0, -4.0]]]])
    loss, score = validate(FixedLogits(logits), val, batch_size=1, amp=False)
    assert score == pytest.approx(5 / 6)
    assert loss == pytest.approx(float(segmentation_loss(logits, val.masks.long())), rel=1e-6)
    # three classes, class 0 void: gt [[0, 1], [2, 2]], prediction [[1, 1], [2, 1]]
    val = ValStub([[[0, 1], [2, 2]]])
    logits = 5.0 * F.one_hot(torch.tensor([[[1, 1], [2, 1]]]), 3).permute(0, 3, 1, 2)
    # void ignored: class 1 IoU 1/2 (one false positive from a class-2 pixel), class 2 IoU 1/2 → mIoU 1/2
    assert validate(FixedLogits(logits), val, 4, False, ignore_void=True)[1] == pytest.approx(0.5)
    # void counted: the void pixel predicted as 1 is one more false positive, class 1 IoU 1/3 → mIoU 5/12
    assert validate(FixedLogits(logits), val, 4, False, ignore_void=False)[1] == pytest.approx(5 / 12)


def test_select_by_score_keeps_the_best_scoring_parameters(splits, tmp_path: Path) -> None:
    train, val = splits
    config = tiny_config(max_iters=30, min_iters=30, lr=1e-3, select_by="score")
    model, batches = start(config, train)
    result = train_segmentation(config, model, batches, val, tmp_path, show_progress=False)
    log = read_log(tmp_path)
    best = max(log, key=lambda r: r["val_score"])   # the first maximum: only a strict improvement counts
    assert all(0.0 <= r["val_score"] <= 1.0 for r in log) and len({r["val_score"] for r in log}) > 1
    assert (result["best_iteration"], result["best_val_score"]) == (best["iteration"], best["val_score"])
    assert result["best_val_loss"] == best["val_loss"] and log[-1]["best_val_loss"] == best["val_loss"]
    loss, score = validate(model, RealSource(val, "cpu"), config.eval_batch, amp=False)
    assert (loss, score) == (pytest.approx(best["val_loss"], rel=1e-5), pytest.approx(best["val_score"]))


@pytest.mark.parametrize("select_by, best_iteration, stop", [("loss", 10, 20), ("score", 20, 30)])
def test_select_by_picks_and_stops_by_its_criterion(splits, tmp_path: Path, monkeypatch, select_by, best_iteration,
                                                    stop) -> None:
    # scripted validation figures at iterations 5, 10, …: the loss is lowest at 10, the score highest at 20
    figures = iter([(0.5, 0.1), (0.3, 0.2), (0.4, 0.3), (0.6, 0.9), (0.7, 0.5), (0.8, 0.4), (0.9, 0.3)])
    monkeypatch.setattr("segbench.train.validate", lambda *args, **kwargs: next(figures))
    train, val = splits
    config = tiny_config(max_iters=35, min_iters=10, patience=10, select_by=select_by)
    model, batches = start(config, train)
    result = train_segmentation(config, model, batches, val, tmp_path, show_progress=False)
    assert (result["best_iteration"], result["iterations"]) == (best_iteration, stop)
    log = read_log(tmp_path)
    assert [r["val_score"] for r in log] == [0.1, 0.2, 0.3, 0.9, 0.5, 0.4][:len(log)]
    assert result["best_val_loss"] == log[best_iteration // 5 - 1]["val_loss"]


def test_stops_patience_after_the_last_minimum(splits, tmp_path: Path) -> None:
    train, val = splits
    config = tiny_config(lr=0.0, min_iters=10, patience=10, max_iters=100)   # frozen net: only the first improves
    model, batches = start(config, train)
    result = train_segmentation(config, model, batches, val, tmp_path, show_progress=False)
    assert result["best_iteration"] == 5
    assert result["iterations"] == 15 and result["stopped_early"]


def test_resume_continues_exactly(splits, tmp_path: Path) -> None:
    train, val = splits
    # augmentation on, so the augmentation generator's state must survive the restart too
    config = tiny_config(aug="flip,noise=0.05", lr=1e-3)
    straight_model, batches = start(config, train)
    reference = train_segmentation(config, straight_model, batches, val, tmp_path / "straight",
                                   show_progress=False, checkpoint_seconds=0)

    crashed = tmp_path / "crashed"
    crashed_model, batches = start(config, train, limit=22)   # dies after iteration 22; last checkpoint at 20
    with pytest.raises(Interrupted):
        train_segmentation(config, crashed_model, batches, val, crashed, show_progress=False, checkpoint_seconds=0)
    state = torch.load(RunDir(crashed).training_state, weights_only=True)
    assert state["iteration"] == 20 and not state["finished"]

    model_resumed, batches = start(dataclasses.replace(config, seed=99), train)   # fresh objects, other seed
    resumed = train_segmentation(config, model_resumed, batches, val, crashed, resume=True, show_progress=False,
                                 checkpoint_seconds=0)
    assert resumed["iterations"] == reference["iterations"]
    assert resumed["best_iteration"] == reference["best_iteration"]
    assert resumed["best_val_loss"] == reference["best_val_loss"]
    for key, value in straight_model.state_dict().items():
        assert torch.equal(value, model_resumed.state_dict()[key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(read_log(crashed)) == strip(read_log(tmp_path / "straight"))


def test_resume_of_a_finished_training_only_restores(splits, tmp_path: Path) -> None:
    train, val = splits
    config = tiny_config(max_iters=10)
    model, batches = start(config, train)
    first = train_segmentation(config, model, batches, val, tmp_path, show_progress=False)
    again_model, batches = start(config, train, limit=0)   # any batch drawn would raise
    second = train_segmentation(config, again_model, batches, val, tmp_path, resume=True, show_progress=False)
    assert second["iterations"] == first["iterations"] == 10
    for key, value in model.state_dict().items():
        assert torch.equal(value, again_model.state_dict()[key])
