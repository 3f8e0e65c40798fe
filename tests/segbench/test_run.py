"""`segbench run` end to end on tiny fixtures: files, learning, full-resolution evaluation, leaks, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pairgen import checkpoint as ckpt
from pairgen import shards
from pairgen.core.errors import UserError
from segbench import run as run_module
from segbench.presets import SegConfig, make_config
from segbench.run import resolve_config, run
from tests.fixtures import disc_pair, kill_after_save, make_real_tree

DATASET = "test-discs"
CLASSES = ("background", "left lung")


def make_synthetic_export(directory: Path, n: int = 16, size: int = 32, trained_fold: str | None = "fold1",
                          trained_dataset: str | None = DATASET, class_names=CLASSES, seed: int = 5) -> Path:
    """A synthetic shard directory as `pairgen export` writes it (discs, like the real fixture)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [disc_pair(rng, size, size, 1, len(class_names)) for _ in range(n)]
    masks = np.stack([p[1] for p in pairs])
    arrays = {"images": np.stack([p[0] for p in pairs]), "masks": masks,
              "sample_index": np.arange(n, dtype=np.int64),
              "masks_raw": (masks[..., None].astype(np.float16) * 2 - 1),
              "latents": rng.normal(size=(n, 8)).astype(np.float32)}
    attrs = {"kind": "synthetic", "dataset": DATASET, "split": "synthetic", "fold": trained_fold or "fold1",
             "class_names": list(class_names), "generator_sha256": "0" * 64}
    if trained_fold is not None:
        attrs["trained_fold"] = trained_fold
    if trained_dataset is not None:
        attrs["trained_dataset"] = trained_dataset
    info = shards.write_shard(directory / shards.SHARD_PATTERN.format(0), arrays, attrs)
    shards.write_manifest(directory, attrs, [info])
    return directory


def make_gan_checkpoint(run_dir: Path, fold: int = 1, dataset: str = DATASET, class_names=CLASSES,
                        **config_overrides) -> Path:
    """A loadable tiny (32×32 unless overridden) generator checkpoint for `dataset` / fold<fold>."""
    from pairgen.networks import build_critic, build_generator
    from pairgen.presets import make_config as gan_config

    config = gan_config(dataset, "tiny", class_names=class_names, g_channels=(16, 8, 4), d_channels=(4, 8, 16),
                        z_dim=8, fold=fold, **config_overrides)
    torch.manual_seed(0)
    state = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "config": config.to_json(), "step": 1,
             "generator": build_generator(config).state_dict(), "critic": build_critic(config).state_dict(),
             "opt_g": {}, "opt_d": {}, "rng": {}, "data_order": {}, "dataset": dataset,
             "fold_id": config.fold_id, "class_names": list(class_names)}
    path = ckpt.checkpoint_path(run_dir, 1)
    ckpt.save_checkpoint(path, state)
    return path


def make_workspace(ws: Path, **real_kwargs) -> Path:
    make_real_tree(ws / DATASET / "fold1" / "real" / "32x32", **real_kwargs)
    make_synthetic_export(ws / DATASET / "fold1" / "synth" / "00000-00000-tiny")
    return ws


def quick(dataset: str = DATASET, **overrides) -> SegConfig:
    """A two-iteration schedule: tests of plumbing, not of learning."""
    values = dict(fold_id="fold1", max_iters=2, min_iters=1, patience=1, val_every=1, filters=4)
    values.update(overrides)
    return make_config(dataset, "tiny", **values)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full tiny schedule, resolved from the workspace alone (no paths given)."""
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    config = resolve_config(ws, preset="auto")
    assert (config.dataset, config.fold_id, config.preset) == (DATASET, "fold1", "tiny")
    return run(config, ws, show_progress=False)


def test_run_writes_every_file(learned: Path) -> None:
    assert learned.parent.name == "seg" and learned.name == "00000-4-4-NoAug"
    names = {p.name for p in learned.iterdir()}
    assert {"config.json", "log.jsonl", "weights.pt", "per_image.csv", "summary.json", "predictions.npz",
            "curves.png"} <= names
    assert "training_state.pt" not in names   # only kept while a run can be resumed
    config = json.loads((learned / "config.json").read_text())
    assert config["dataset"] == DATASET and config["fold_id"] == "fold1"
    assert Path(config["synth_shards"]).name == "00000-00000-tiny" and Path(config["real_shards"]).name == "32x32"
    with open(learned / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == [f"case{i:03d}" for i in range(8)]
    summary = json.loads((learned / "summary.json").read_text())
    assert summary["complete"] is True and summary["label"] == "4-4-NoAug"
    assert (summary["real_per_batch"], summary["synth_per_batch"], summary["aug"]) == (4, 4, "none")
    assert summary["n_cases"] == 8 and summary["evaluated_at"] == "full" and summary["spacing_known"]
    assert summary["iterations"] >= summary["best_iteration"] > 0 and summary["best_val_loss"] > 0
    with np.load(learned / "predictions.npz", allow_pickle=False) as data:
        assert data["image"].shape == (8, 32, 32, 1) and data["image"].dtype == np.uint8
        assert data["mask"].shape == data["pred"].shape == (8, 32, 32) and data["pred"].dtype == np.uint8
        assert data["case_id"].tolist() == [r["case"] for r in rows]
    weights = torch.load(learned / "weights.pt", weights_only=True)
    assert weights["meta"]["height"] == 32 and weights["meta"]["class_names"] == list(CLASSES)


def test_tiny_preset_learns_the_discs(learned: Path) -> None:
    summary = json.loads((learned / "summary.json").read_text())
    assert summary["metrics"]["dice"]["mean"] > 0.7


def test_evaluates_at_full_mask_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench import postprocess

    make_real_tree(tmp_path / "real", n_train=4, n_val=2, n_test=3, full_scale=3)
    shapes, original = [], postprocess.predict_full
    monkeypatch.setattr(postprocess, "predict_full",
                        lambda logits, shape, single: shapes.append(tuple(shape)) or original(logits, shape, single))
    run_dir = run(quick(real_per_batch=2, synth_per_batch=0, real_shards=str(tmp_path / "real")), tmp_path / "ws",
                  show_progress=False)
    assert shapes.count((96, 96)) == 3   # every test case upsampled (bicubic) to its own full mask
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["evaluated_at"] == "full" and summary["n_cases"] == 3 and summary["postprocess_lcc"] is True
    assert summary["synth_source"] is None and run_dir.name == "00000-2-0-NoAug"


def test_multiclass_rgb_run(tmp_path: Path) -> None:
    classes = ("void", "road", "car")
    real = make_real_tree(tmp_path / "real", n_train=4, n_val=2, n_test=2, channels=3, class_names=classes,
                          dataset="scenes")
    run_dir = run(make_config("scenes", "tiny", max_iters=2, val_every=1, filters=4, real_per_batch=2,
                              synth_per_batch=0, real_shards=str(real)), tmp_path / "ws", show_progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "scenes" and summary["postprocess_lcc"] is False
    assert set(summary["confusion"]["iou_per_class"]) == set(classes)   # whole-test-set confusion numbers
    weights = torch.load(run_dir / "weights.pt", weights_only=True)
    assert weights["meta"]["in_channels"] == 3 and weights["state_dict"]["head.weight"].shape[0] == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(trained_fold="fold2"), "fold2.*leak"),
    (dict(trained_dataset="other-discs"), "trained on dataset 'other-discs'"),
    (dict(trained_fold=None), "does not record"),
    (dict(size=16), "16×16×1"),
    (dict(class_names=("background", "heart")), "classes"),
])
def test_refuses_foreign_or_mismatched_synthetic_shards(tmp_path: Path, kwargs: dict, match: str) -> None:
    ws = tmp_path / "ws"
    real = make_real_tree(ws / DATASET / "fold1" / "real" / "32x32", n_train=4, n_val=2, n_test=2)
    synth = make_synthetic_export(tmp_path / "foreign", n=4, **kwargs)
    with pytest.raises(UserError, match=match) as error:
        run(quick(synth_shards=str(synth), real_shards=str(real)), ws, show_progress=False)
    assert str(synth) in str(error.value)
    assert not (ws / DATASET / "fold1" / "seg").exists()   # refused before any run directory exists


def test_generator_source_and_its_leak_refusal(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    make_real_tree(ws / DATASET / "fold1" / "real" / "32x32", n_train=4, n_val=2, n_test=2)
    make_gan_checkpoint(ws / DATASET / "fold1" / "gan" / "00000-tiny")
    run_dir = run(quick(synth_source="generator", real_per_batch=2, synth_per_batch=2), ws, show_progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["synth_source"] == "generator"
    assert json.loads((run_dir / "config.json").read_text())["checkpoint"].endswith("ckpt-0000001.pt")
    other = make_gan_checkpoint(tmp_path / "fold2-gan", fold=2)
    with pytest.raises(UserError, match="fold2.*leak"):
        run(quick(synth_source="generator", checkpoint=str(other)), ws, show_progress=False)


def test_resume_after_a_crash_in_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    out = tmp_path / "run"

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(run_module, "evaluate_test", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        run(quick(max_iters=3), ws, out=out, show_progress=False)
    assert (out / "training_state.pt").is_file() and not (out / "summary.json").exists()
    log = (out / "log.jsonl").read_text()
    monkeypatch.undo()
    # another config on the command line: the run's own config.json wins
    assert run(quick(max_iters=50, seed=9), ws, out=out, resume=True, show_progress=False) == out
    assert (out / "log.jsonl").read_text() == log   # training was finished: not redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["iterations"] == 3 and summary["seed"] == 0
    assert not (out / "training_state.pt").exists()
    stamp = (out / "summary.json").stat().st_mtime_ns
    run(quick(), ws, out=out, resume=True, show_progress=False)   # complete: nothing to do
    assert (out / "summary.json").stat().st_mtime_ns == stamp


def test_out_and_resume_refusals(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    with pytest.raises(UserError, match="--resume needs --out"):
        run(quick(), ws, resume=True, show_progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        run(quick(), ws, out=busy, show_progress=False)


def test_resolution_without_synthetic_data(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    make_real_tree(ws / DATASET / "fold2" / "real" / "32x32", n_train=4, n_val=2, n_test=2, fold="fold2")
    config = resolve_config(ws, preset="auto", synth_per_batch=0, real_per_batch=8)
    assert (config.dataset, config.fold_id, config.preset) == (DATASET, "fold2", "tiny")
    make_real_tree(ws / "other" / "fold1" / "real" / "32x32", n_train=2, n_val=2, n_test=2, dataset="other")
    with pytest.raises(UserError, match="several datasets"):
        resolve_config(ws, synth_per_batch=0)
    with pytest.raises(UserError, match="no complete synthetic export"):
        resolve_config(ws, dataset=DATASET, fold=2)


def test_unet_run_killed_while_writing_its_log_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill while log.jsonl is being appended leaves a torn last line; --resume drops it (pairgen.core.jsonlog)
    and the run ends exactly as one that was never interrupted: same log, weights and test scores."""
    import functools

    from segbench import train as train_module

    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    config = quick(max_iters=6, min_iters=6, patience=6, lr=1e-3)
    every_validation = functools.partial(train_module.train_segmentation, checkpoint_seconds=0)
    monkeypatch.setattr(train_module, "train_segmentation", every_validation)   # a training state per validation
    reference = run(config, ws, out=tmp_path / "straight", show_progress=False)

    out = tmp_path / "killed"
    kill_after_save(monkeypatch, train_module, 3)
    with pytest.raises(KeyboardInterrupt):
        run(config, ws, out=out, show_progress=False)
    with open(out / "log.jsonl", "a") as log:   # the kill came while iteration 4's line was half written
        log.write('{"iteration": 4, "train_loss": 0.6')
    assert torch.load(out / "training_state.pt", weights_only=True)["iteration"] == 3

    assert run(config, ws, out=out, resume=True, show_progress=False) == out
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "wall_s"}   # noqa: E731
                          for line in (path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in strip(out)] == [1, 2, 3, 4, 5, 6]
    assert strip(out) == strip(reference)
    assert (out / "per_image.csv").read_text() == (reference / "per_image.csv").read_text()
    done, straight = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert done["complete"] and (done["iterations"], done["best_iteration"]) == (6, straight["best_iteration"])
    assert done["best_val_loss"] == straight["best_val_loss"] and done["metrics"] == straight["metrics"]
    weights = [torch.load(d / "weights.pt", weights_only=True)["state_dict"] for d in (out, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_run_dry_run_prints_the_resolved_config(cli, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    code, out, err = cli("segbench", "run", "--workspace", str(ws), "--real", "2", "--synth", "2",
                         "--max-iters", "5", "--dry-run")
    assert code == 0, err
    config = SegConfig.from_json(json.loads(out))
    # resolved once, as config.json will hold it: dataset, fold, preset and absolute data paths from the data
    assert (config.dataset, config.fold_id, config.preset, config.max_iters) == (DATASET, "fold1", "tiny", 5)
    assert config.real_shards == str((ws / DATASET / "fold1" / "real" / "32x32").resolve())
    assert config.synth_shards == str((ws / DATASET / "fold1" / "synth" / "00000-00000-tiny").resolve())
    assert not (ws / DATASET / "fold1" / "seg").exists()


def test_resume_may_change_only_how_a_run_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.run import command_config, execute, resolve
    from segbench.rundir import RunDir

    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    out = tmp_path / "run"
    config = resolve(quick(max_iters=3), ws)
    monkeypatch.setattr(run_module, "evaluate_test", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("cut")))
    with pytest.raises(RuntimeError, match="cut"):
        execute(config, ws, out, show_progress=False)
    monkeypatch.undo()
    assert RunDir(out).status() == "resume"
    # the CLI's view of a resume: the run's own config, today's execution fields
    resumed = command_config(ws, out, resume=True, real_per_batch=8, max_iters=50, device="cpu", amp=False)
    assert resumed == dataclasses.replace(config, device="cpu", amp=False)
    with pytest.raises(UserError, match=r"another configuration \(max_iters, seed differ\)"):
        execute(dataclasses.replace(config, max_iters=50, seed=9), ws, out, resume=True, show_progress=False)
    shutil.copytree(config.real_shards, tmp_path / "moved")   # where the data lies is not compared
    moved = dataclasses.replace(resumed, real_shards=str(tmp_path / "moved"))
    assert execute(moved, ws, out, resume=True, show_progress=False) == out
    assert RunDir(out).is_complete() and RunDir(out).read_summary()["iterations"] == 3


def test_refuses_an_augmentation_the_dataset_declares_unsafe(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    make_real_tree(ws / "scr-lung" / "fold1" / "real" / "32x32", n_train=4, n_val=2, n_test=2, dataset="scr-lung")
    lung = dict(real_per_batch=4, synth_per_batch=0)
    for aug in ("flip", "thesis-cityscapes", "shift=0.1,flip=0.2"):
        with pytest.raises(UserError, match="flip is unsafe for scr-lung: .*left lung.*--allow-unsafe-aug"):
            run(quick("scr-lung", aug=aug, **lung), ws, show_progress=False)
    assert not (ws / "scr-lung" / "fold1" / "seg").exists()   # refused before any work
    run_dir = run(quick("scr-lung", aug="flip", allow_unsafe_aug=True, **lung), ws, show_progress=False)
    assert json.loads((run_dir / "config.json").read_text())["allow_unsafe_aug"] is True
    run(quick("scr-lung", aug="thesis-lung", **lung), ws, show_progress=False)


def test_road_scenes_and_unknown_datasets_accept_flips() -> None:
    from segbench.augment import parse_spec, refuse_unsafe

    for dataset in ("camvid", "cityscapes", "shapes", DATASET):
        refuse_unsafe(parse_spec("flip"), dataset)
