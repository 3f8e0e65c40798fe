"""`segbench score` / `pairgen score` on tiny fixtures: alignment by hand, the cached judge, score.json, quality."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.verify import verify_directory
from segbench import judge as judge_module
from segbench.judge import alignment, encoder_features, load_judge, score, segment
from tests.fixtures import make_real_tree
from tests.segbench.test_run import DATASET, make_gan_checkpoint, make_synthetic_export

JUDGE_ITERS = 90


def test_alignment_binary_by_hand() -> None:
    mask = np.zeros((3, 2, 4), np.uint8)
    mask[0, 0, :2] = 1                     # 2 px
    pred = np.zeros_like(mask)
    pred[0, 0, 1:4] = 1                    # 3 px, 1 shared → Dice 2·1/(2+3)
    pred[1, 1, 0] = 1                      # mask empty → 0
    # sample 2: both empty → 1
    np.testing.assert_allclose(alignment(pred, mask, 2), [0.4, 0.0, 1.0])


def test_alignment_several_classes_by_hand() -> None:
    mask = np.array([[[1, 1, 2, 0]], [[0, 0, 0, 0]]], np.uint8)
    pred = np.array([[[1, 2, 2, 0]], [[0, 0, 0, 0]]], np.uint8)
    # class 1: 1/2, class 2: 1/2, class 3 absent from both → mean 0.5; no foreground anywhere → 1
    np.testing.assert_allclose(alignment(pred, mask, 4), [0.5, 1.0])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    make_real_tree(ws / DATASET / "fold1" / "real" / "32x32", n_train=24, n_val=8, n_test=8)
    make_gan_checkpoint(ws / DATASET / "fold1" / "gan" / "00000-tiny")
    make_synthetic_export(ws / DATASET / "fold1" / "synth" / "00000-00000-tiny", n=24)
    torch.manual_seed(0)
    return ws


@pytest.fixture(scope="module")
def gan_score(workspace: Path) -> dict:
    """Scoring the GAN run trains the judge on demand (tiny, JUDGE_ITERS iterations)."""
    return score(workspace / DATASET / "fold1" / "gan" / "00000-tiny", workspace, n=20, judge_preset="tiny",
                 judge_iters=JUDGE_ITERS, device="cpu")


def test_score_of_a_gan_run(workspace: Path, gan_score: dict) -> None:
    run_dir = workspace / DATASET / "fold1" / "gan" / "00000-tiny"
    assert json.loads((run_dir / "score.json").read_text()) == gan_score
    assert gan_score["n_synthetic"] == 20 and gan_score["alignment_metric"] == "dice"
    assert gan_score["n_real_train"] == 24 and gan_score["n_real_val"] == 8
    assert gan_score["step"] == 1 and gan_score["feature_dim"] == 16
    for figures in (gan_score, gan_score["scale"]):
        assert 0.0 <= figures["alignment"]["q05"] <= figures["alignment"]["q50"] <= figures["alignment"]["q95"] <= 1
        assert figures["fd"] >= 0 and 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1
    # an untrained generator's noise is far from the real images; real val is close to real train
    assert gan_score["fd"] > 5 * gan_score["scale"]["fd"]
    assert gan_score["scale"]["alignment"]["mean"] > gan_score["alignment"]["mean"]
    # the judge is an ordinary real-only run of the fold, and the next score reuses it
    judges = list((workspace / DATASET / "fold1" / "seg").glob("*-16-0-NoAug"))
    assert len(judges) == 1 and Path(gan_score["judge"]) == judges[0].resolve()
    assert judge_module.find_judge(workspace, judge_module.plan_target(run_dir, workspace)) == judges[0]


def test_judge_scores_real_pairs_near_its_own_test_dice(workspace: Path, gan_score: dict) -> None:
    judge_dir = Path(gan_score["judge"])
    summary = json.loads((judge_dir / "summary.json").read_text())
    model, meta, single_object = load_judge(judge_dir, torch.device("cpu"))
    test = shards.load_shards(workspace / DATASET / "fold1" / "real" / "32x32" / "test")
    per_pair = alignment(segment(model, test.images, single_object, torch.device("cpu")), test.masks, 2)
    assert summary["metrics"]["dice"]["mean"] > 0.6   # the judge learned the discs
    assert per_pair.mean() == pytest.approx(summary["metrics"]["dice"]["mean"], abs=0.05)
    features = encoder_features(model, test.images, torch.device("cpu"), batch_size=3)
    assert features.shape == (8, meta["filters"]) and features.dtype == np.float64


def test_score_of_an_export_writes_quality(workspace: Path, gan_score: dict) -> None:
    export = workspace / DATASET / "fold1" / "synth" / "00000-00000-tiny"
    result = score(export, workspace, device="cpu", write_quality=True)
    assert result["judge"] == gan_score["judge"] and result["n_synthetic"] == 24   # cached judge, whole export
    assert (export / "score.json").is_file() and verify_directory(export) == []
    quality = shards.load_shards(export).quality
    assert quality.shape == (24,) and quality.dtype == np.float32
    assert float(quality.mean()) == pytest.approx(result["alignment"]["mean"], abs=1e-6)
    # the export's discs are drawn like the real ones: far closer to them than the untrained GAN's noise
    assert result["fd"] < gan_score["fd"] and result["alignment"]["mean"] > 0.6


def test_score_user_errors(workspace: Path, gan_score: dict) -> None:
    with pytest.raises(UserError, match="no such"):
        score(workspace / "nowhere", workspace)
    with pytest.raises(UserError, match="write-quality"):
        score(workspace / DATASET / "fold1" / "gan" / "00000-tiny", workspace, write_quality=True, device="cpu")


def test_pairgen_score_is_segbench_score(workspace: Path, gan_score: dict) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    export = workspace / DATASET / "fold1" / "synth" / "00000-00000-tiny"
    proc = subprocess.run([sys.executable, "-m", "pairgen", "score", str(export), "--workspace", str(workspace),
                           "--device", "cpu", "--out", str(workspace / "s.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "alignment dice mean" in proc.stdout and (workspace / "s.json").is_file()
    proc = subprocess.run([sys.executable, "-m", "pairgen", "score", str(workspace / "nowhere")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_feature_subset_of_a_large_export(workspace: Path, gan_score: dict) -> None:
    export = workspace / DATASET / "fold1" / "synth" / "00000-00000-tiny"
    result = score(export, workspace, device="cpu", max_features=10, out=workspace / "subset.json")
    assert result["n_synthetic"] == 24 and result["n_synthetic_features"] == 10


def test_training_scorer_in_the_gan_loop_agrees_with_score(workspace: Path, gan_score: dict) -> None:
    """`pairgen train --score-every`'s scorer: the cached judge, no global RNG drawn, best.pt's figures equal
    `score` of best.pt itself (same latents, same judge features)."""
    from pairgen.networks import build_generator
    from pairgen.presets import make_config as gan_config
    from pairgen.train import train
    from segbench.judge import TrainingScorer

    real = workspace / DATASET / "fold1" / "real" / "32x32"
    config = gan_config(DATASET, "tiny", class_names=("background", "left lung"), g_channels=(16, 8, 4),
                        d_channels=(4, 8, 16), z_dim=8, batch_size=4, iters=4, tick_every=2, score_every=2, score_n=12,
                        device="cpu", seed=2)
    scorer = TrainingScorer(workspace, real, config, n=config.score_n, seed=config.seed, device="cpu")
    assert scorer.judge_dir == Path(gan_score["judge"])
    assert scorer.describe().startswith(f"judge {scorer.judge_dir} (test dice 0.")
    generator = build_generator(config).eval()
    torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
    assert scorer(generator) == scorer(generator)   # fixed latents: the figures of the generator alone
    assert torch.equal(torch.get_rng_state(), torch_rng) and np.array_equal(np.random.get_state()[1], numpy_rng)
    run = workspace / DATASET / "fold1" / "gan" / "00001-tiny"
    train(config, run, real, show_progress=False, scorer=scorer)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    scores = [r for r in records if r["event"] == "score"]
    assert [r["step"] for r in scores] == [2, 4]
    for record in scores:
        assert 0.0 <= record["alignment"] <= 1.0 and record["fd"] > 0 and 0 <= record["recall"] <= 1
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["best"]
    again = score(run / "checkpoints" / "best.pt", workspace, n=12, seed=2, device="cpu", real_shards=real,
                  out=workspace / "best-score.json")
    assert again["step"] == best["step"] and again["alignment"]["mean"] == pytest.approx(best["alignment"], abs=1e-9)
    assert again["fd"] == pytest.approx(best["fd"], rel=1e-6) and again["kid"] == pytest.approx(best["kid"], rel=1e-6)


def test_pairgen_train_score_every_on_shapes(cli, tmp_path: Path) -> None:
    """The CLI wiring on the embedded shapes data: judge found before the GAN starts, scores logged, best.pt
    exported."""
    from segbench.run import DataPlan

    ws = tmp_path / "ws"
    code, _, err = cli("pairgen", "prepare", "--dataset", "shapes", "--preset", "tiny", "--workspace", str(ws))
    assert code == 0, err
    real = ws / "shapes" / "fold1" / "real" / "32x32"
    judge_dir = judge_module.train_judge(ws, DataPlan("shapes", "fold1", real), "tiny", 30, "cpu")
    code, _, err = cli("pairgen", "train", "--dataset", "shapes", "--preset", "tiny", "--iters", "4",
                       "--score-every", "2", "--score-n", "16", "--device", "cpu", "--workspace", str(ws))
    assert code == 0, err
    assert f"pair quality every 2 iterations by judge {judge_dir} (test miou " in err
    run = next(ws.glob("shapes/fold1/gan/*"))
    scores = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "score"]
    assert [r["step"] for r in scores] == [2, 4] and all(r["fd"] > 0 for r in scores)
    best = min(scores, key=lambda r: r["fd"])["step"]
    assert f"best score at step {best} " in err
    code, _, err = cli("pairgen", "export", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--n", "8",
                       "--device", "cpu", "--workspace", str(ws), "--out", str(tmp_path / "export"))
    assert code == 0, err
    assert shards.read_manifest(tmp_path / "export").n == 8


def test_export_with_judge_writes_what_score_write_quality_writes(workspace: Path, gan_score: dict, cli) -> None:
    """`pairgen export --judge RUN` = `pairgen export` then `pairgen score EXPORT --judge RUN --write-quality`."""
    judge = gan_score["judge"]
    common = ("--checkpoint", str(workspace / DATASET / "fold1" / "gan" / "00000-tiny"), "--n", "10",
              "--samples-per-shard", "4", "--block-size", "8", "--device", "cpu", "--workspace", str(workspace))
    code, out, err = cli("pairgen", "export", *common, "--out", str(workspace / "scored"), "--judge", judge)
    assert code == 0, err
    assert "alignment dice mean" in out
    code, _, err = cli("pairgen", "export", *common, "--out", str(workspace / "plain"))
    assert code == 0, err
    assert shards.load_shards(workspace / "plain").quality is None and not (workspace / "plain" / "score.json").exists()
    code, _, err = cli("pairgen", "score", str(workspace / "plain"), "--judge", judge, "--write-quality",
                       "--device", "cpu", "--workspace", str(workspace))
    assert code == 0, err
    scored, plain = shards.load_shards(workspace / "scored"), shards.load_shards(workspace / "plain")
    assert np.array_equal(scored.images, plain.images)                # the same pairs (same checkpoint, seed)
    assert scored.quality.shape == (10,) and np.array_equal(scored.quality, plain.quality)
    assert verify_directory(workspace / "scored") == []         # three shards rewritten, manifest updated
    reports = [json.loads((workspace / name / "score.json").read_text()) for name in ("scored", "plain")]
    same = [{k: v for k, v in r.items() if k not in ("target", "export", "wall_s")} for r in reports]
    assert same[0] == same[1] and reports[0]["judge"] == judge and reports[0]["n_synthetic"] == 10
    # a judge that is not there is refused before anything is exported
    code, _, err = cli("pairgen", "export", *common, "--out", str(workspace / "none"), "--judge",
                       str(workspace / "nowhere"))
    assert code == 2 and "--judge" in err and not (workspace / "none").exists()
