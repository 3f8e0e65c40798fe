"""One segbench run directory: the names of its files, its summary, and whether it is complete.

    config.json        the resolved SegConfig, written first; a resume reads it back (segbench.run)
    log.jsonl          one JSON object per validation point (pairgen.core.jsonlog; a torn last line is skipped)
    curves.png         training and validation loss over iterations
    training_state.pt  everything needed to continue exactly (segbench.train); deleted once the run is complete
    weights.pt         the network at its best validation loss (segbench.predict)
    per_image.csv      test metrics, one row per test image
    predictions.npz    test images, masks and predictions at the training resolution
    summary.json       written last; "complete": true marks a finished run for resume, sweeps and reports

Every module that reads or writes these files names them through `RunDir`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_NAME = "summary.json"
CONFIG_NAME = "config.json"
SCORE_NAME = "score.json"   # a GAN run's or export's pair-quality figures (segbench.judge), read by segbench.report


def gan_run_dir(checkpoint: Path) -> Path:
    """The GAN run directory of a generator checkpoint (<run>/checkpoints/ckpt-*.pt, or a file in the run)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created or read by constructing one)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def training_state(self) -> Path:
        return self.path / "training_state.pt"

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    @property
    def per_image(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.npz"

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_NAME

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as a dict; None when missing, unreadable or not a JSON object."""
        return read_json(self.summary)

    def read_config(self) -> dict[str, Any] | None:
        """config.json as a plain dict (None when missing or unreadable), for readers that need a field or two."""
        return read_json(self.config)

    def is_complete(self) -> bool:
        """True when summary.json exists and says "complete": true."""
        return (self.read_summary() or {}).get("complete") is True

    def status(self) -> str:
        """'complete'; 'resume' (config.json written, not complete); 'new' (neither)."""
        if self.is_complete():
            return "complete"
        return "resume" if self.config.is_file() else "new"

    def write_summary(self, summary: "Summary") -> None:
        """Write summary.json atomically (NaN/inf become null): the last file of a run."""
        from segbench.evaluate import write_summary

        write_summary(summary.to_json(), self.summary)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Summary:
    """summary.json of a finished run: what ran and how training went, plus the test evaluation.

    `evaluation` is segbench.predict.score_test's summary (metrics, n_cases, confusion, evaluated_at, …); the
    file holds its keys and these fields side by side, one flat JSON object.
    """

    label: str                   # thesis network ID, e.g. '4-4-NoAug'
    dataset: str
    fold_id: str
    real_per_batch: int
    synth_per_batch: int
    aug: str                     # canonical augmentation spec
    seed: int
    preset: str
    synth_source: str | None     # None without synthetic pairs
    iterations: int
    best_iteration: int
    best_val_loss: float
    stopped_early: bool
    wall_s: float                # training seconds (over resumes)
    total_wall_s: float          # this invocation, evaluation included
    device: str
    run: str                     # the run directory's name
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_val_score: float | None = None   # validation Dice / mIoU at best_iteration (segbench.train.validate)
    select_by: str = "loss"               # what chose best_iteration (SegConfig.select_by)
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        facts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "evaluation"}
        return {**self.evaluation, **facts}
