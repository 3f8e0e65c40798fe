"""The run-directory owner: file names, status, summary round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

from segbench.rundir import RunDir, Summary


def summary(**changes) -> Summary:
    values = dict(label="4-4-NoAug", dataset="scr-lung", fold_id="fold1", real_per_batch=4, synth_per_batch=4,
                  aug="none", seed=0, preset="tiny", synth_source="shards", iterations=6, best_iteration=4,
                  best_val_loss=0.25, stopped_early=False, wall_s=1.5, total_wall_s=2.0, device="cpu",
                  run="00000-4-4-NoAug", evaluation={"n_cases": 3, "metrics": {"dice": {"mean": math.nan}}})
    return Summary(**{**values, **changes})


def test_status_follows_config_then_summary(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.status() == "new" and not run.is_complete()
    run.config.write_text("{}")
    assert run.status() == "resume"
    run.summary.write_text('{"complete": tr')          # torn: not complete
    assert run.status() == "resume" and run.read_summary() is None
    run.summary.write_text('["complete", true]')       # not an object
    assert not run.is_complete()
    run.write_summary(summary(complete=False))
    assert run.status() == "resume"
    run.write_summary(summary())
    assert run.status() == "complete" and run.is_complete()


def test_summary_is_one_flat_object_with_nan_as_null(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_summary(summary())
    written = json.loads(run.summary.read_text())
    assert written["n_cases"] == 3 and written["metrics"] == {"dice": {"mean": None}}
    assert written["label"] == "4-4-NoAug" and written["complete"] is True and "evaluation" not in written


def test_every_file_name() -> None:
    run = RunDir("r")
    names = [p.name for p in (run.config, run.log, run.curves, run.training_state, run.weights, run.per_image,
                              run.predictions, run.summary)]
    assert names == ["config.json", "log.jsonl", "curves.png", "training_state.pt", "weights.pt", "per_image.csv",
                     "predictions.npz", "summary.json"]
    assert run.path == Path("r") and run.name == "r"
