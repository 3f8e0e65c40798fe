"""The resolution ceiling: what a perfect segmenter at the training resolution scores at the evaluation one.

A U-Net trained at h×w can at best output the ground truth *at h×w*. Evaluated at the full mask grid (as every
segbench run is), that answer still loses what the reduction to h×w lost. This module scores exactly that answer:
each real test shard's training-resolution mask, turned into confident logits (±10; one logit for a single
foreground class, one per class otherwise — the U-Net's own output convention), then upsampled and
post-processed by `segbench.postprocess.predict_full` like a prediction (bicubic, labels, largest component for
single-object tasks), and scored by `segbench.evaluate.evaluate_predictions` against the full masks. The gap
between a run and this ceiling is the network's; the gap between the ceiling and 1 is the resolution's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairgen.core.errors import UserError
from pairgen.shards import load_shards

CONFIDENT_LOGIT = 10.0


def mask_logits(mask: np.ndarray, n_classes: int) -> torch.Tensor:
    """uint8 h×w class ids → float32 1×K×h×w logits that a U-Net would emit if it were exactly right (K = 1 for
    two classes: ±10 on the foreground logit; K = n_classes otherwise: +10 on the class, −10 elsewhere)."""
    ids = torch.from_numpy(np.asarray(mask, np.int64))
    if n_classes == 2:
        return ((ids > 0).float() * 2 - 1)[None, None] * CONFIDENT_LOGIT
    onehot = torch.nn.functional.one_hot(ids, n_classes).permute(2, 0, 1).float()
    return (onehot * 2 - 1)[None] * CONFIDENT_LOGIT


def resolution_ceiling(test_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """Score the training-resolution ground truth of a real test shard directory at its full masks.

    Returns the summary of `evaluate_predictions` plus test_dir, training_resolution "h×w" and
    postprocess_lcc; with `out`, also writes out/per_image.csv and out/summary.json (the format of a run).
    """
    from segbench.evaluate import write_per_image_csv, write_summary
    from segbench.postprocess import predict_full
    from segbench.predict import score_test

    test = load_shards(Path(test_dir), expect={"kind": "real"})
    if test.full_masks is None:
        raise UserError(f"{test_dir}: no full-resolution masks (a real test split written by `pairgen prepare`): "
                        "the ceiling at the training resolution itself is 1 by definition")
    class_names = test.class_names
    single_object = len(class_names) == 2       # the same default as a run's largest-component setting
    preds = [predict_full(mask_logits(mask, len(class_names)), full.shape, single_object)
             for mask, full in zip(test.masks, test.full_masks)]
    rows, summary = score_test(test, preds, single_object)   # the same scoring as a run's test set
    height, width = test.masks.shape[1:]
    summary.update(test_dir=str(test_dir), training_resolution=f"{height}x{width}")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_per_image_csv(rows, out / "per_image.csv")
        write_summary(summary, out / "summary.json")
    return summary
