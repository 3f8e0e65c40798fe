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
from pairgen.presets import GANConfig
from pairgen.train import TrainingDiverged, train
from pairgen.step import critic_update, generator_update, make_critic_backward
from pairgen.wgan_gp import bad_term_of, interpolation_weights, make_fakes
from tests.fixtures import GAN_CLASSES as CLASSES, nan_gp_at_call, nan_loss_always, small_config, ticks


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


@pytest.mark.parametrize("small_data", [{}, {"diffaug": "color,translation,cutout", "ema_kimg": 0.02},
                                        {"diffaug": "color,cutout", "diffaug_p": 0.5, "ema_kimg": 0.02}])
def test_resume_is_exact(tmp_path: Path, real: Path, small_data: dict) -> None:
    config = small_config(tick_every=1, sample_every=100, checkpoint_every=100, critic_norm="batch", **small_data)
    train(config, tmp_path / "straight", real, show_progress=False)
    train(dataclasses.replace(config, iters=3), tmp_path / "split", real, show_progress=False)
    final = train(config, tmp_path / "split", real, resume=True, show_progress=False)

    def losses(run: Path) -> list[tuple]:
        return [(t["step"], t["critic_loss"], t["wasserstein"], t["gp"], t["generator_loss"]) for t in ticks(run)]

    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "ckpt-0000006.pt")
    resumed = load_checkpoint(final)
    for part in ("generator", "critic") + (("generator_ema",) if small_data else ()):
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
    config, cpu = small_config(), torch.device("cpu")
    torch.manual_seed(0)
    generator, critic = build_generator(config), build_critic(config)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in (generator, critic))
    backward = make_critic_backward(critic, opt_d, config, amp=False)
    real, fake = torch.zeros(4, 2, 16, 16), make_fakes(generator, 4, config, cpu, amp=False)

    def critic_bad() -> str | None:
        _, flags = critic_update(critic, opt_d, backward, real, fake, interpolation_weights(real))
        return bad_term_of(flags.tolist(), ["wasserstein", "gp"])

    assert critic_bad() is None   # Adam now has moments
    before, moments = _copies(critic), {k: v.clone() for k, v in opt_d.state_dict()["state"][0].items()}
    real[1, 0, 3, 3] = float("nan")
    assert critic_bad() == "wasserstein"
    assert all(torch.equal(v, before[k]) for k, v in critic.named_parameters())
    assert all(torch.equal(v, moments[k]) for k, v in opt_d.state_dict()["state"][0].items())
    monkeypatch.setattr(wgan_gp_module, "generator_loss", lambda critic, fake: critic(fake).mean() * float("inf"))
    before = _copies(generator)
    values, flags = generator_update(critic, generator, opt_g, generator(torch.randn(4, config.z_dim)), amp=False)
    assert bad_term_of(flags.tolist(), ["", ""]) == "loss" and values[0].isinf()
    assert all(torch.equal(v, before[k]) for k, v in generator.named_parameters())
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in opt_g.state.values())   # skipped
    assert all(p.requires_grad for p in critic.parameters())


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


def test_weight_average_and_diffaug_are_wired(tmp_path: Path, real: Path) -> None:
    """ema_kimg: the average is checkpointed, differs from the live weights and is what load_generator gives by
    default; diffaug changes what the critic sees (other losses than the plain run); ticks report kimg."""
    plain = train(small_config(iters=3, tick_every=1), tmp_path / "plain", real, show_progress=False)
    config = small_config(iters=3, tick_every=1, ema_kimg=0.01, diffaug="translation,cutout")
    final = train(config, tmp_path / "small-data", real, show_progress=False)
    state = load_checkpoint(final)
    assert "generator_ema" not in load_checkpoint(plain)
    assert any(not torch.equal(state["generator_ema"][k], v) for k, v in state["generator"].items()
               if v.is_floating_point())
    averaged, _, meta = load_generator(final)
    live, _, live_meta = load_generator(final, average=False)
    assert meta["weights"] == "average" and live_meta["weights"] == "live"
    for name, value in averaged.state_dict().items():
        assert torch.equal(value, state["generator_ema"][name])
        assert torch.equal(live.state_dict()[name], state["generator"][name])
    augmented, unaugmented = ticks(tmp_path / "small-data"), ticks(tmp_path / "plain")
    assert [t["kimg"] for t in augmented] == [0.004, 0.008, 0.012]          # batch 4: 4 images per iteration
    assert augmented[0]["critic_loss"] != unaugmented[0]["critic_loss"]


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


def _records(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == event]


def test_scoring_logs_figures_and_keeps_the_best_checkpoint(tmp_path: Path, real: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from pairgen.checkpoint import newest_checkpoint
    from pairgen.export import export

    fds, seen = iter([3.0, 1.0, 2.0]), []

    def scorer(module: torch.nn.Module) -> dict[str, float]:   # Fréchet distance falls, then rises
        seen.append(module.training)
        return {"alignment": 0.5, "fd": next(fds)}

    config = small_config(score_every=2, keep_checkpoints=1, checkpoint_every=3, ema_kimg=0.02)
    final = train(config, tmp_path / "run", real, scorer=scorer)
    run = tmp_path / "run"
    assert seen == [False, False, False]   # the sampled generator, in eval mode
    scores = _records(run, "score")
    assert [(r["step"], r["kimg"], r["fd"], r["alignment"]) for r in scores] == \
        [(2, 0.008, 3.0, 0.5), (4, 0.016, 1.0, 0.5), (6, 0.024, 2.0, 0.5)]
    assert [(r["step"], r["fd"]) for r in _records(run, "best")] == [(2, 3.0), (4, 1.0)]
    # best.pt is the step-4 state, never pruned by keep_checkpoints, never the newest nor the resume point
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "ckpt-0000006.pt"]
    assert newest_checkpoint(run) == final == run / "checkpoints" / "ckpt-0000006.pt"
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == 4 and best["best"] == {k: v for k, v in scores[1].items() if k != "event"}
    _, _, meta = load_generator(run / "checkpoints" / "best.pt")
    assert meta["step"] == 4 and meta["weights"] == "average"
    out = export(run / "checkpoints" / "best.pt", tmp_path / "export", 4, show_progress=False, device="cpu")
    assert (out / "manifest.json").is_file()
    assert "best score at step 4 (alignment 0.5, fd 1): " in capsys.readouterr().err
    with Image.open(run / "curves.png") as image:   # 5 training panels + alignment + Fréchet distance, 3.2 in each
        assert image.width == 7 * 320


def test_a_run_with_scoring_resumes_exactly(tmp_path: Path, real: Path) -> None:
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))

    def scorer(module: torch.nn.Module) -> dict[str, float]:   # a figure of the generator alone
        out = module(z)
        return {"alignment": float(out[:, 1:].mean()), "fd": float(out.std())}

    config = small_config(tick_every=1, score_every=2, checkpoint_every=100, critic_norm="batch", ema_kimg=0.02)
    train(config, tmp_path / "straight", real, show_progress=False, scorer=scorer)
    train(dataclasses.replace(config, iters=4), tmp_path / "split", real, show_progress=False, scorer=scorer)
    train(config, tmp_path / "split", real, resume=True, show_progress=False, scorer=scorer)

    def figures(run: Path) -> list[tuple]:
        return [(t["event"], t["step"], t.get("fd"), t.get("critic_loss")) for t in _records(run, "tick")
                + _records(run, "score") + _records(run, "best")]

    assert figures(tmp_path / "split") == figures(tmp_path / "straight")
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "best.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoints" / "best.pt")
    assert straight["best"] == split["best"] and straight["step"] == split["step"]
    for name, value in straight["generator_ema"].items():
        assert torch.equal(value, split["generator_ema"][name]), name


def test_scoring_needs_a_scorer(tmp_path: Path, real: Path) -> None:
    with pytest.raises(ValueError, match="scorer"):
        train(small_config(score_every=2), tmp_path / "run", real, show_progress=False)
    with pytest.raises(UserError, match="score-every"):
        small_config(score_every=-1)


def test_resume_keeps_the_best_file_when_its_step_is_redone(tmp_path: Path, real: Path) -> None:
    """Stopped after best.pt (step 4) but before the step-6 checkpoint: the resume from step 3 compares with
    what best.pt holds, so the redone step 4 (same figures) is no new best and best.pt stays."""
    fds = iter([3.0, 1.0, 2.0, 1.0, 2.0])
    config = small_config(score_every=2, checkpoint_every=3)
    run = tmp_path / "run"
    train(config, run, real, show_progress=False, scorer=lambda module: {"fd": next(fds)})
    (run / "checkpoints" / "ckpt-0000006.pt").unlink()
    before = (run / "checkpoints" / "best.pt").stat().st_mtime_ns
    train(config, run, real, resume=True, show_progress=False, scorer=lambda module: {"fd": next(fds)})
    assert [(r["step"], r["fd"]) for r in _records(run, "score")] == [(2, 3.0), (4, 1.0), (6, 2.0)]
    assert [(r["step"], r["fd"]) for r in _records(run, "best")] == [(2, 3.0), (4, 1.0)]
    assert (run / "checkpoints" / "best.pt").stat().st_mtime_ns == before
    assert load_checkpoint(run / "checkpoints" / "best.pt")["best"]["step"] == 4
