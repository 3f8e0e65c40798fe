"""--synth-filter: the filter keeps exactly the pairs above its threshold (or in its top share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairgen import shards
from pairgen.core.errors import UserError
from segbench.mixing import ShardSynthSource, filter_synthetic, parse_synth_filter, synth_filter_keep
from segbench.presets import make_config
from tests.segbench.test_run import make_synthetic_export

QUALITY = np.array([0.9, 0.1, 0.8, 0.79, 1.0, 0.5, 0.8, 0.0])


def test_parse_synth_filter() -> None:
    assert parse_synth_filter("") is None
    assert parse_synth_filter("q>=0.8") == ("q", 0.8) and parse_synth_filter("top=75%") == ("top", 75.0)
    for bad in ("q>0.8", "top=75", "top=0%", "top=150%", "q>=x", "best"):
        with pytest.raises(UserError, match="synth-filter"):
            parse_synth_filter(bad)


def test_threshold_keeps_exactly_the_pairs_at_or_above_it() -> None:
    assert synth_filter_keep(QUALITY, "q>=0.8").tolist() == [True, False, True, False, True, False, True, False]
    assert synth_filter_keep(QUALITY, "").all()


def test_top_share_keeps_the_best_pairs() -> None:
    # sorted: 1.0, 0.9, 0.8, 0.8, 0.79, 0.5, 0.1, 0.0 → top 25 % = 2 pairs (quality >= 0.9)
    assert np.flatnonzero(synth_filter_keep(QUALITY, "top=25%")).tolist() == [0, 4]
    # top 50 % = rank 4 (0.8): both 0.8s are in
    assert np.flatnonzero(synth_filter_keep(QUALITY, "top=50%")).tolist() == [0, 2, 4, 6]
    assert synth_filter_keep(QUALITY, "top=100%").all()


def test_filter_on_scored_shards(tmp_path: Path) -> None:
    directory = make_synthetic_export(tmp_path / "e", n=len(QUALITY))
    with pytest.raises(UserError, match="--write-quality"):
        filter_synthetic(shards.load_shards(directory), "q>=0.8")
    shards.add_quality(directory, QUALITY)
    full = shards.load_shards(directory)
    kept = filter_synthetic(full, "q>=0.8")
    assert kept.sample_index.tolist() == [0, 2, 4, 6]
    np.testing.assert_array_equal(kept.images, full.images[[0, 2, 4, 6]])
    np.testing.assert_array_equal(kept.masks, full.masks[[0, 2, 4, 6]])
    assert (kept.quality >= 0.8).all() and len(ShardSynthSource(kept, "cpu")) == 4
    with pytest.raises(UserError, match="keeps none"):
        filter_synthetic(full, "q>=1.5")


def test_filter_recorded_in_config() -> None:
    config = make_config("test-discs", "tiny", synth_filter="top=75%")
    assert config.to_json()["synth_filter"] == "top=75%"
    with pytest.raises(UserError, match="synth-filter"):
        make_config("test-discs", "tiny", synth_filter="top=75")
    with pytest.raises(UserError, match="shards"):
        make_config("test-discs", "tiny", synth_filter="q>=0.5", synth_source="generator")


def test_run_draws_only_kept_pairs(tmp_path: Path) -> None:
    from segbench.run import DataPlan, _synth_source
    from tests.fixtures import make_real_tree

    real = make_real_tree(tmp_path / "real", n_train=4, n_val=2, n_test=2)
    directory = make_synthetic_export(tmp_path / "e", n=len(QUALITY))
    shards.add_quality(directory, QUALITY)
    config = make_config("test-discs", "tiny", synth_filter="q>=0.8", synth_per_batch=2)
    plan = DataPlan("test-discs", "fold1", real, directory)
    source = _synth_source(config, plan, shards.load_shards(real / "train"), "cpu")
    assert len(source) == 4


def test_report_keeps_filtered_runs_apart(tmp_path: Path) -> None:
    import json

    from segbench.report import load_run

    kept = []
    for name, spec in (("a", ""), ("b", "q>=0.8")):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"complete": True}))
        (run_dir / "config.json").write_text(json.dumps(
            {"dataset": "test-discs", "real_per_batch": 4, "synth_per_batch": 4, "preset": "tiny",
             "synth_filter": spec}))
        (run_dir / "per_image.csv").write_text("case,dice\ncase000,0.9\n")
        kept.append((load_run(run_dir).variant, load_run(run_dir).use))
    assert kept == [("tiny", ""), ("tiny", "q0.8")]   # one variant, told apart by the label's synthetic-use tag
