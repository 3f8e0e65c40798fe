"""The training loop on a tiny fixture: outputs, exact resume, non-finite steps, divergence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pairgen.train as train_module
import pairgen.wgan_gp as wgan_gp_module
from pairgen.checkpoint import load_checkpoint, load_generator
from pairgen.core.errors import UserError
from pairgen.networks import build_critic, build_generator
from pairgen.presets import GANConfig, make_config
from pairgen.train import TrainingDiverged, train
from pairgen.wgan_gp import critic_step, generator_step
from tests.fixtures import make_real_tree

CLASSES = ("background", "left lung")
ORIGINAL_CRITIC_LOSS = wgan_gp_module.critic_loss


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_tree(tmp_path_factory.mktemp("real"), n_train=10, n_val=2, n_test=2, height=16, width=16)


def small_config(**overrides) -> GANConfig:
    values = dict(class_names=CLASSES, height=16, width=16, g_channels=(16, 8, 4), d_channels=(4, 8, 16), z_dim=16,
                  batch_size=4, iters=6, tick_every=2, sample_every=3, checkpoint_every=3, device="cpu", seed=3)
    return make_config("scr-lung", "tiny", **{**values, **overrides})


def ticks(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [line for line in lines if line["event"] == "tick"]


def test_train_writes_config_log_sheets_and_checkpoints(tmp_path: Path, real: Path) -> None:
    config = small_config(mask_encoding="onehot")
    final = train(config, tmp_path / "run", real, show_progress=False)
    run = tmp_path / "run"
    assert final == run / "checkpoints" / "ckpt-0000006.pt"
    assert GANConfig.load(run / "config.json") == config
    logged = ticks(run)
    assert [t["step"] for t in logged] == [2, 4, 6]
    for tick in logged:
        for key in ("critic_loss", "wasserstein", "gp", "generator_loss", "it_per_s", "wall_s"):
            assert isinstance(tick[key], float) and tick[key] == tick[key], key
        assert tick["skipped"] == 0
    sheets = sorted(p.name for p in (run / "samples").iterdir())
    assert sheets == ["step-0000003.png", "step-0000006.png"]
    with Image.open(run / "samples" / sheets[-1]) as image:
        assert image.format == "PNG" and image.width >= 8 * 3 * 16
    with Image.open(run / "curves.png") as image:    # redrawn with every sheet from log.jsonl
        assert image.format == "PNG" and image.width > image.height
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-0000003.pt", "ckpt-0000006.pt"]
    generator, loaded, meta = load_generator(final)
    assert loaded == config and meta["step"] == 6 and meta["fold_id"] == "fold1"
    with pytest.raises(UserError, match="already holds checkpoints"):
        train(config, run, real, show_progress=False)


def test_resume_is_exact(tmp_path: Path, real: Path) -> None:
    config = small_config(tick_every=1, sample_every=100, checkpoint_every=100, critic_norm="batch")
    train(config, tmp_path / "straight", real, show_progress=False)
    train(dataclasses.replace(config, iters=3), tmp_path / "split", real, show_progress=False)
    final = train(config, tmp_path / "split", real, resume=True, show_progress=False)

    def losses(run: Path) -> list[tuple]:
        return [(t["step"], t["critic_loss"], t["wasserstein"], t["gp"], t["generator_loss"]) for t in ticks(run)]

    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "ckpt-0000006.pt")
    resumed = load_checkpoint(final)
    for part in ("generator", "critic"):
        for name, value in straight[part].items():
            assert torch.equal(value, resumed[part][name]), f"{part}.{name}"
    assert straight["data_order"] == resumed["data_order"]


def test_resume_refusals(tmp_path: Path, real: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        train(small_config(), tmp_path / "empty", real, resume=True, show_progress=False)
    train(small_config(iters=1), tmp_path / "run", real, show_progress=False)
    with pytest.raises(UserError, match="z_dim"):
        train(small_config(z_dim=8), tmp_path / "run", real, resume=True, show_progress=False)
    with pytest.raises(UserError, match="channels"):
        train(small_config(image_channels=3), tmp_path / "other", real, show_progress=False)


def _copies(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_non_finite_steps_leave_weights_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config()
    torch.manual_seed(0)
    generator, critic = build_generator(config), build_critic(config)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (generator, critic))
    real = torch.zeros(4, 2, 16, 16)
    assert critic_step(generator, critic, opt_d, real, config, amp=False)[1] is None   # Adam now has moments
    before, moments = _copies(critic), {k: v.clone() for k, v in opt_d.state_dict()["state"][0].items()}
    real[1, 0, 3, 3] = float("nan")
    terms, bad = critic_step(generator, critic, opt_d, real, config, amp=False)
    assert terms is None and bad == "wasserstein"
    assert all(torch.equal(v, before[k]) for k, v in critic.named_parameters())
    assert all(torch.equal(v, moments[k]) for k, v in opt_d.state_dict()["state"][0].items())
    monkeypatch.setattr(wgan_gp_module, "generator_loss", lambda critic, fake: critic(fake).mean() * float("inf"))
    before = _copies(generator)
    loss, bad = generator_step(generator, critic, opt_g, config, torch.device("cpu"), amp=False)
    assert loss is None and bad == "loss"
    assert all(torch.equal(v, before[k]) for k, v in generator.named_parameters())
    assert all(p.requires_grad for p in critic.parameters())


def nan_gp_at_call(call: int):
    """wgan_gp.critic_loss whose penalty (and so loss) is NaN at its `call`-th call (1-based)."""
    calls, original = {"n": 0}, ORIGINAL_CRITIC_LOSS   # not a patched one left by an earlier call

    def flaky(critic, real_batch, fake, gp_lambda, **kwargs):
        loss, terms = original(critic, real_batch, fake, gp_lambda, **kwargs)
        calls["n"] += 1
        if calls["n"] == call:
            terms["gp"] = terms["gp"] * float("nan")
            loss = loss + terms["gp"]
        return loss, terms

    return flaky


def nan_loss_always(*args, **kwargs):
    """wgan_gp.critic_loss with a NaN loss (finite terms) at every call."""
    loss, terms = ORIGINAL_CRITIC_LOSS(*args, **kwargs)
    return loss * float("nan"), terms


def test_injected_nan_is_logged_and_skipped(tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wgan_gp_module, "critic_loss", nan_gp_at_call(3))
    final = train(small_config(iters=2, tick_every=2), tmp_path / "run", real, show_progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"event": "skip", "step": 1, "phase": "critic", "term": "gp"} in lines
    assert ticks(tmp_path / "run")[-1]["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(final)["critic"].values() if v.is_floating_point())


def test_divergence_names_last_good_checkpoint(tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(small_config(iters=1, checkpoint_every=1), run, real, show_progress=False)
    monkeypatch.setattr(wgan_gp_module, "critic_loss", nan_loss_always)
    with pytest.raises(TrainingDiverged, match="ckpt-0000001.pt"):
        train(small_config(iters=5, checkpoint_every=100), run, real, resume=True, show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-0000001.pt"]
    skips = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"skip"' in line]
    assert len(skips) == train_module.MAX_BAD_STEPS and skips[0]["term"] == "loss"


def test_launch_numbers_run_dirs_and_resumes(tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pairgen.prepare as prepare_module

    prepared = []
    monkeypatch.setattr(prepare_module, "dataset_info", lambda dataset, root, structures: (1, list(CLASSES)))
    monkeypatch.setattr(prepare_module, "prepare", lambda *args, **kwargs: prepared.append(args) or real)
    config = dataclasses.replace(small_config(iters=2), class_names=(), image_channels=3)
    run = train_module.launch(config, tmp_path / "ws")
    assert run == tmp_path / "ws" / "scr-lung" / "fold1" / "gan" / "00000-tiny"
    saved = GANConfig.load(run / "config.json")
    assert saved.class_names == CLASSES and saved.image_channels == 1
    assert prepared == [("scr-lung", None, 1, 16, 16)]
    # resume: the run's own config (iters 2, already done) wins over the argument
    assert train_module.launch(small_config(iters=50), tmp_path / "ws", resume_run=run) == run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-0000002.pt"]


@pytest.mark.parametrize("raw_channels", [None, 1, 3])
def test_pair_sheet_layout(tmp_path: Path, raw_channels) -> None:
    from pairgen.sheets import pair_sheet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 12, 20, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (5, 12, 20), dtype=np.uint8)
    raw = None if raw_channels is None else rng.uniform(-1, 1, (5, 12, 20, raw_channels)).astype(np.float16)
    path = pair_sheet(images, raw, masks, ["void", "road", "car"], tmp_path / "sheet.png", columns=2)
    factor = 11   # nearest upscaling: the short side 12 px → 132 >= 128 px
    with Image.open(path) as sheet:
        assert sheet.mode == "RGB" and sheet.width == 2 * (3 * 20 * factor + 2 * 4) + 12
        assert sheet.height > 3 * 12 * factor + 2 * 12
        pixels = np.asarray(sheet)
    upscaled = np.repeat(np.repeat(images[0], factor, axis=0), factor, axis=1)
    np.testing.assert_array_equal(pixels[:12 * factor, :20 * factor], upscaled)   # first panel: the image itself
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]        # no temp file left behind


def test_resume_drops_log_records_after_the_checkpoint(tmp_path: Path, real: Path) -> None:
    """A run that died after its last checkpoint logged ticks the resume will log again: no step twice."""
    config = small_config(tick_every=1, sample_every=100, checkpoint_every=2)
    run = tmp_path / "run"
    train(dataclasses.replace(config, iters=3), run, real, show_progress=False)
    (run / "checkpoints" / "ckpt-0000003.pt").unlink()   # as if killed before the step-3 checkpoint
    with open(run / "log.jsonl", "a") as handle:
        handle.write('{"event": "tick", "st')            # and mid-write
    train(dataclasses.replace(config, iters=5), run, real, resume=True, show_progress=False)
    assert [t["step"] for t in ticks(run)] == [1, 2, 3, 4, 5]


def test_time_based_checkpoints_come_at_ticks(tmp_path: Path, real: Path) -> None:
    """checkpoint_seconds=0: a checkpoint at every tick, besides the step-based ones (an early first checkpoint)."""
    train(small_config(iters=6, tick_every=2, checkpoint_every=100, checkpoint_seconds=0.0, keep_checkpoints=5),
          tmp_path / "run", real, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "ckpt-0000002.pt", "ckpt-0000004.pt", "ckpt-0000006.pt"]


def test_a_stop_request_checkpoints_after_the_current_step(tmp_path: Path, real: Path) -> None:
    import signal

    from pairgen.core.interrupt import Interrupted, StopRequest
    from pairgen.pairdata import EpochSampler

    calls, original_next = [], EpochSampler.next

    def stop_in_the_third_iteration(self):
        calls.append(1)
        if len(calls) == 3 * small_config().critic_steps:   # the third iteration's last critic batch
            signal.raise_signal(signal.SIGINT)
        return original_next(self)

    with StopRequest() as stop, pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochSampler, "next", stop_in_the_third_iteration)
        with pytest.raises(Interrupted, match="SIGINT at step 3: checkpoint .*ckpt-0000003.pt written"):
            train(small_config(iters=6, checkpoint_every=100), tmp_path / "run", real, show_progress=False,
                  stop=stop)
        with pytest.raises(KeyboardInterrupt):   # a second signal aborts at once
            signal.raise_signal(signal.SIGINT)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["ckpt-0000003.pt"]
