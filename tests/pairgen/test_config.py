"""Resolve once: the frozen configs' experiment/execution split decides resume and "same run"; --dry-run prints
the resolved config of `pairgen train` and exits without writing anything."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pairgen.core.errors import UserError
from pairgen.presets import GANConfig, make_config
from pairgen.train import _check_resumable
from tests.fixtures import small_config


def test_only_execution_fields_may_change_on_resume() -> None:
    saved = small_config()
    # longer, elsewhere, logged and checkpointed at another cadence: the same generator being trained
    later = dataclasses.replace(saved, iters=60, device="cuda", amp=False, compile=True, cuda_graph=False,
                                tick_every=7, sample_every=9, checkpoint_every=11, keep_checkpoints=5)
    assert saved.differences(later) == []
    _check_resumable(saved, later, Path("ckpt-0000006.pt"))
    for change in ({"lr": 1e-3}, {"seed": 4}, {"batch_size": 8}, {"train_fraction": 0.5}):
        with pytest.raises(UserError, match=f"different {next(iter(change))}"):
            _check_resumable(saved, dataclasses.replace(saved, **change), Path("ckpt-0000006.pt"))


def test_with_execution_keeps_the_experiment() -> None:
    saved, flags = small_config(), make_config("shapes", "tiny", device="cuda:1", iters=99, cuda_graph=False)
    resumed = saved.with_execution(flags)
    assert (resumed.device, resumed.iters, resumed.cuda_graph) == ("cuda:1", 99, False)
    assert resumed.experiment() == saved.experiment() and resumed.dataset == "scr-lung"


def test_sweep_reuses_a_gan_of_the_same_experiment_and_length(tmp_path: Path) -> None:
    from segbench.sweep import _same_gan

    saved = small_config(root="/data/old", cuda_graph=False)
    saved.save(tmp_path / "config.json")
    # where the data lies, what the adapter filled in, how it runs: the same GAN
    assert _same_gan(tmp_path, dataclasses.replace(saved, root=None, class_names=(), image_channels=3,
                                                   device="cuda", tick_every=1))
    assert not _same_gan(tmp_path, dataclasses.replace(saved, iters=saved.iters * 2))   # not trained that long
    assert not _same_gan(tmp_path, dataclasses.replace(saved, structures=("heart",)))
    assert not _same_gan(tmp_path, dataclasses.replace(saved, gp_lambda=1.0))


def test_train_dry_run_prints_the_resolved_config(cli, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    code, out, err = cli("pairgen", "train", "--dataset", "shapes", "--preset", "tiny", "--iters", "7",
                         "--diffaug", "color,cutout", "--diffaug-p", "0.5", "--workspace", str(ws), "--dry-run")
    assert code == 0, err
    config = GANConfig.from_json(json.loads(out))
    assert config.iters == 7 and config.class_names == ("background", "disc", "square", "triangle")
    assert (config.diffaug, config.diffaug_p) == ("color,cutout", 0.5)
    assert config.image_channels == 1 and (config.height, config.width) == (32, 32)
    assert not ws.exists()   # nothing prepared, no run directory


def test_train_dry_run_of_a_resume_prints_the_runs_own_config(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    small_config(iters=5).save(run / "config.json")
    code, out, err = cli("pairgen", "train", "--resume", str(run), "--iters", "99", "--dry-run")
    assert code == 0, err
    assert GANConfig.from_json(json.loads(out)) == small_config(iters=5)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_export_dry_run_and_the_config_in_the_manifest(cli, tmp_path: Path) -> None:
    from pairgen.export import ExportConfig
    from tests.fixtures import make_checkpoint

    ws = tmp_path / "ws"
    checkpoint = make_checkpoint(ws / "scr-lung" / "fold1" / "gan" / "00000-tiny")
    code, out, err = cli("pairgen", "export", "--workspace", str(ws), "--n", "6", "--samples-per-shard", "4",
                         "--seed", "2", "--dry-run")
    assert code == 0, err
    config = ExportConfig.from_json(json.loads(out))
    assert config == ExportConfig(checkpoint=str(checkpoint), out=None, n=6, seed=2, samples_per_shard=4)
    assert not (ws / "scr-lung" / "fold1" / "synth").exists()   # the numbered directory is made when it runs

    code, _, err = cli("pairgen", "export", "--workspace", str(ws), "--n", "6", "--samples-per-shard", "4",
                       "--seed", "2", "--block-size", "4", "--device", "cpu")
    assert code == 0, err
    (target,) = (ws / "scr-lung" / "fold1" / "synth").iterdir()
    recorded = json.loads((target / "manifest.json").read_text())["export_config"]
    assert recorded == {**config.to_json(), "out": str(target), "block_size": 4, "device": "cpu"}


def test_export_config_refuses_bad_values_before_loading() -> None:
    from pairgen.export import ExportConfig

    with pytest.raises(UserError, match="--samples-per-shard must be positive"):
        ExportConfig(checkpoint="x.pt", out=None, n=4, samples_per_shard=0).check()
    with pytest.raises(UserError, match="exclude each other"):
        ExportConfig(checkpoint="x.pt", out="o", n=4, resume=True, overwrite=True).check()
