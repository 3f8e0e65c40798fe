"""Segmentation run configuration: one frozen, JSON-serialisable dataclass (preset + CLI flags), saved per run.

Presets (match pairgen's):
  tiny    narrow U-Net, a few hundred iterations at most; tests and demos on 2 CPU cores
  small   CPU-scale experiments (depth 3, 32 filters)
  thesis  table 4.2 (lung: depth 3, 64 filters, average pooling) / table 4.4 (road scenes: depth 4, 256 filters),
          early stopping 3000/3000 as in section 4.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pairgen.core.config import FrozenConfig
from pairgen.core.errors import UserError
from pairgen.presets import WIDE_DATASETS

PRESETS = ("tiny", "small", "thesis")
SYNTH_SOURCES = ("shards", "generator")
SELECT_BY = ("loss", "score")     # segbench.train: what picks the kept parameters and stops training


@dataclass(frozen=True)
class SegConfig(FrozenConfig):
    """Everything one segmentation run computes with; config.json of the run (pairgen.core.config.FrozenConfig).

    EXECUTION_FIELDS say how it runs and may change on resume (`segbench run --resume --device …`); every other
    field defines the experiment. DATA_FIELDS locate the data (filled in by segbench.run.resolve): dataset,
    fold_id and the provenance checks identify it, so a sweep compares two runs without them.
    """

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("device", "amp", "cuda_graph")
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("real_shards", "synth_shards", "checkpoint")

    dataset: str = ""                    # filled from the shards when not given
    fold_id: str = "fold1"
    preset: str = "tiny"
    real_per_batch: int = 4              # K real pairs in every minibatch
    synth_per_batch: int = 4             # M synthetic pairs in every minibatch
    aug: str = "none"                    # augmentation spec (segbench.augment.parse_spec)
    allow_unsafe_aug: bool = False       # use an op the dataset declares unsafe (segbench.augment.refuse_unsafe)
    real_shards: str | None = None       # parent dir holding train/val/test real shard dirs
    synth_shards: str | None = None      # synthetic shard dir (synth_source='shards')
    synth_source: str = "shards"         # 'shards' | 'generator' (fresh samples from a checkpoint each batch)
    checkpoint: str | None = None        # generator checkpoint for synth_source='generator'
    synth_filter: str = ""               # keep synthetic pairs by per-pair quality: 'q>=0.8' | 'top=75%' | ''
    synth_weight: float = 1.0            # loss weight of a synthetic row relative to a real one (segbench.step)
    pretrain_iters: int = 0              # first train this many iterations on synthetic rows only (segbench.train)
    depth: int = 2
    filters: int = 16
    pooling: str = "avg"                 # tables 4.2 / 4.4: average pooling
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    min_iters: int = 60                  # section 4.2: at least 3000 iterations (thesis preset)
    patience: int = 60                   # section 4.2: stop 3000 iterations after the last validation minimum
    max_iters: int = 300                 # hard cap (CPU presets); thesis: large
    val_every: int = 20                  # validation loss every this many iterations
    select_by: str = "loss"              # keep/stop by the validation 'loss' (thesis 4.2) | 'score' (Dice / mIoU)
    eval_batch: int = 16
    postprocess_lcc: bool | None = None  # None: on for single-foreground tasks (thesis: left lung), off otherwise
    seed: int = 0
    device: str = "auto"
    amp: bool = True                     # bf16 autocast on CUDA
    cuda_graph: bool = False             # whole training step as one CUDA graph on CUDA (segbench/graphed.py);
                                         # ignored on the CPU and under torchrun with several processes

    @property
    def batch_size(self) -> int:
        return self.real_per_batch + self.synth_per_batch

    @property
    def uses_synthetic(self) -> bool:
        """Synthetic pairs are drawn: M > 0 or a synthetic pre-training phase."""
        return self.synth_per_batch > 0 or self.pretrain_iters > 0

    @property
    def synth_use(self) -> str:
        """How synthetic pairs are used, as a label suffix (synth_use_tag)."""
        return synth_use_tag(self.synth_filter if self.uses_synthetic else "",
                             self.synth_weight if self.synth_per_batch else 1.0, self.pretrain_iters)


def synth_use_tag(synth_filter: str = "", synth_weight: float = 1.0, pretrain_iters: int = 0) -> str:
    """The non-default ways of using synthetic pairs as a filesystem-safe label part, '' for the defaults:
    'top=50%' → 'top50', 'q>=0.8' → 'q0.8'; weight 0.5 → 'w0.5'; 500 pre-training iterations → 'pre500'.
    One place for the run ID (segbench.run.run_label), the report's configurations and a sweep's labels."""
    parts = []
    if synth_filter:
        parts.append(str(synth_filter).replace(" ", "").replace("q>=", "q").replace("top=", "top").rstrip("%"))
    if float(synth_weight) != 1.0:
        parts.append(f"w{float(synth_weight):g}")
    if int(pretrain_iters):
        parts.append(f"pre{int(pretrain_iters)}")
    return "-".join(parts)


def preset_values(dataset: str, preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}, auto")
    wide = dataset in WIDE_DATASETS
    if preset == "thesis":
        return dict(depth=4 if wide else 3, filters=256 if wide else 64, min_iters=3000, patience=3000,
                    max_iters=200_000, val_every=100)
    if preset == "small":
        return dict(depth=3, filters=32, min_iters=600, patience=600, max_iters=3000, val_every=50)
    return dict(depth=2, filters=16, min_iters=60, patience=60, max_iters=300, val_every=20)


def make_config(dataset: str, preset: str = "tiny", **overrides: Any) -> SegConfig:
    values: dict[str, Any] = {"dataset": dataset, "preset": preset, **preset_values(dataset, preset)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = SegConfig.from_json(values)
    if config.real_per_batch < 0 or config.synth_per_batch < 0:
        raise UserError("--real and --synth must be >= 0")
    if config.batch_size == 0:
        raise UserError("--real + --synth must be at least 1 (a minibatch cannot be empty)")
    if config.synth_source not in SYNTH_SOURCES:
        raise UserError(f"--synth-source must be one of {', '.join(SYNTH_SOURCES)}, not {config.synth_source!r}")
    if not (math.isfinite(config.synth_weight) and config.synth_weight > 0):
        raise UserError(f"--synth-weight must be a positive number, not {config.synth_weight}")
    if config.synth_weight != 1.0 and config.synth_per_batch == 0:
        raise UserError("--synth-weight weighs the synthetic rows of a mixed batch: it needs --synth M > 0")
    if config.select_by not in SELECT_BY:
        raise UserError(f"--select-by must be one of {', '.join(SELECT_BY)}, not {config.select_by!r}")
    if config.pretrain_iters < 0:
        raise UserError(f"--pretrain-synth must be >= 0, not {config.pretrain_iters}")
    if config.synth_filter:
        from segbench.mixing import parse_synth_filter

        parse_synth_filter(config.synth_filter)
        if config.synth_source != "shards":
            raise UserError("--synth-filter needs --synth-source shards (it reads the shards' per-pair quality)")
    return config
