"""GAN configuration: one frozen, JSON-serialisable dataclass, filled from a (dataset, preset) pair plus CLI flags.

The resolved config is written into the run directory before any work starts; resume reads it back.
Presets:
  tiny    32 px class sizes, narrow nets: 20 iterations in well under a minute on 2 CPU cores (tests, demos)
  small   64 px (lung) / 64×128 (road scenes): meaningful CPU experiments
  thesis  tables 4.1 (lung, 256×256) and 4.3 (Cityscapes, 128×256 rows×cols) exactly
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from pairgen.core import workspace
from pairgen.core.config import FrozenConfig
from pairgen.core.errors import UserError

PRESETS = ("tiny", "small", "thesis")
MASK_ENCODINGS = ("scalar", "onehot")
AUTO_ENCODING = "auto"   # not yet resolved: resolve_mask_encoding picks one by the class names
CRITIC_NORMS = ("layer", "batch", "none")

# datasets that are road scenes (wide images, RGB) share the Cityscapes-shaped presets
WIDE_DATASETS = ("cityscapes", "camvid")


@dataclass(frozen=True)
class GANConfig(FrozenConfig):
    """Everything a GAN run computes with; config.json of the run (pairgen.core.config.FrozenConfig).

    EXECUTION_FIELDS may change on resume (how long and how it runs, how often it logs, samples, checkpoints);
    every other field defines the generator being trained. DATA_FIELDS locate the data or are filled in from it
    (dataset and fold already identify it), so two runs that differ only there train the same generator.
    """

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = (
        "iters", "device", "amp", "compile", "cuda_graph", "tick_every", "sample_every", "checkpoint_every",
        "checkpoint_seconds", "keep_checkpoints", "score_every", "score_n")
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("root", "image_channels", "class_names")

    dataset: str
    preset: str = "tiny"
    root: str | None = None              # dataset root (None: adapter default / env var)
    fold: int = 1                        # 1-based fold of the dataset's manifest
    structures: tuple[str, ...] = ()     # scr-lung: which SCR structures are classes (default: left lung)
    height: int = 32                     # training resolution (rows)
    width: int = 32                      # training resolution (cols)
    image_channels: int = 1              # filled from the adapter
    class_names: tuple[str, ...] = ()    # filled from the adapter; index 0 = background/void
    mask_encoding: str = AUTO_ENCODING   # 'scalar' (thesis: one tanh channel) | 'onehot' (one channel per class) |
                                         # 'auto': resolved once with the class names (resolve_mask_encoding), so
                                         # a saved config.json always holds 'scalar' or 'onehot'
    z_dim: int = 128
    g_channels: tuple[int, ...] = (128, 64, 32)   # FC projection channels, then the inputs of each ×2 stage;
                                                  # len = number of stages; the last stage outputs image+mask
    d_channels: tuple[int, ...] = (32, 64, 128)   # each critic stage's output channels
    kernel_size: int = 5
    critic_norm: str = "layer"           # see README "Decisions": batch norm breaks the per-sample penalty
    critic_activation: str = "relu"      # tables 4.1/4.3 say ReLU (DCGAN used leaky ReLU); 'lrelu' available
    batch_size: int = 16
    critic_steps: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    iters: int = 20                      # generator iterations
    tick_every: int = 10                 # log a line every this many iterations
    sample_every: int = 100              # sample sheet every this many iterations (and at the end)
    checkpoint_every: int = 100          # checkpoint every this many iterations (and at the end)
    checkpoint_seconds: float = 60.0     # ... and at the first tick this long after the last one (an early first one)
    keep_checkpoints: int = 2
    score_every: int = 0                 # pair quality by a judge U-Net every this many iterations (and at the
                                         # end), checkpoints/best.pt kept at the lowest Fréchet distance; 0 = off
    score_n: int = 256                   # pairs sampled (fixed latents) per scoring
    seed: int = 0
    device: str = "auto"                 # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    amp: bool = True                     # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False                # critic step through torch.func + torch.compile (pairgen.compiled)
    cuda_graph: bool = True              # a whole iteration as one CUDA graph (pairgen.step; CUDA, 1 process)
    train_fraction: float = 1.0          # low-data experiments: use this seeded fraction of the training split
    diffaug: str = ""                    # critic-input augmentation policy (pairgen.diffaug), e.g.
                                         # 'color,translation,cutout'; '' = off
    diffaug_p: float = 1.0               # probability that each operation is applied to a sample (ADA's p)
    ema_kimg: float = 0.0                # generator weight average, half-life in thousands of images
                                         # (pairgen.ema); 0 = off

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def mask_channels(self) -> int:
        if self.mask_encoding not in MASK_ENCODINGS:   # a bug: networks are built from resolved configs only
            raise ValueError(f"mask_encoding {self.mask_encoding!r} is not resolved (resolve_mask_encoding)")
        return 1 if self.mask_encoding == "scalar" else self.n_classes

    @property
    def fold_id(self) -> str:
        return workspace.fold_id(self.fold, self.train_fraction)


def resolve_preset(preset: str) -> str:
    """'auto' → 'thesis' when a CUDA device is present, else 'small' (the thesis networks are too slow on CPU)."""
    if preset != "auto":
        return preset
    import torch

    return "thesis" if torch.cuda.is_available() else "small"


def preset_values(dataset: str, preset: str) -> dict[str, Any]:
    """Architecture and schedule of a preset for a dataset (before CLI overrides)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}, auto")
    wide = dataset in WIDE_DATASETS
    if preset == "thesis":
        if wide:  # table 4.3: FC → 4×8×1024, five stages to 128×256×(3+1); critic 32…512
            return dict(height=128, width=256, g_channels=(1024, 512, 256, 128, 64), d_channels=(32, 64, 128, 256, 512),
                        batch_size=8, iters=10000, tick_every=50, sample_every=500, checkpoint_every=500)
        # table 4.1: FC → 4×4×2048, six stages to 256×256×2; critic 32…1024
        return dict(height=256, width=256, g_channels=(2048, 1024, 512, 256, 128, 64),
                    d_channels=(32, 64, 128, 256, 512, 1024), batch_size=16, iters=10000,
                    tick_every=50, sample_every=500, checkpoint_every=500)
    if preset == "small":
        if wide:
            return dict(height=64, width=128, g_channels=(256, 128, 64, 32), d_channels=(32, 64, 128, 256),
                        batch_size=16, iters=1500, tick_every=25, sample_every=250, checkpoint_every=250)
        return dict(height=64, width=64, g_channels=(256, 128, 64, 32), d_channels=(32, 64, 128, 256),
                    batch_size=16, iters=1500, tick_every=25, sample_every=250, checkpoint_every=250)
    if wide:
        return dict(height=32, width=64, g_channels=(128, 64, 32), d_channels=(32, 64, 128),
                    batch_size=8, iters=20, tick_every=10, sample_every=100, checkpoint_every=100)
    return dict(height=32, width=32, g_channels=(128, 64, 32), d_channels=(32, 64, 128),
                batch_size=8, iters=20, tick_every=10, sample_every=100, checkpoint_every=100)


def make_config(dataset: str, preset: str = "tiny", **overrides: Any) -> GANConfig:
    """Preset values for (dataset, preset), then non-None overrides (CLI flags). Validates the result."""
    preset = resolve_preset(preset)
    values: dict[str, Any] = {"dataset": dataset, "preset": preset, **preset_values(dataset, preset)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = resolve_mask_encoding(GANConfig.from_json(values))
    validate(config)
    return config


def resolve_mask_encoding(config: GANConfig) -> GANConfig:
    """`config` with mask_encoding 'auto' replaced by the default for its class names (pairgen.encoding.
    default_encoding); unchanged when the encoding is already chosen or the class names are not filled in yet.
    Resolved once, when a run's config is made: a saved config is read back as it is, never re-resolved."""
    from pairgen.encoding import default_encoding   # lazy: keeps `import pairgen.presets` free of torch

    if config.mask_encoding != AUTO_ENCODING or not config.class_names:
        return config
    return dataclasses.replace(config, mask_encoding=default_encoding(config.n_classes))


def validate(config: GANConfig) -> None:
    from pairgen.diffaug import parse_policy   # lazy: keeps `import pairgen.presets` free of torch

    stages = len(config.g_channels)  # FC projection, then one ×2 stage per entry (the last maps to the output)
    if config.mask_encoding not in (*MASK_ENCODINGS, AUTO_ENCODING):
        raise UserError(f"--mask-encoding must be one of {', '.join(MASK_ENCODINGS)}, {AUTO_ENCODING}, "
                        f"not {config.mask_encoding!r}")
    if config.critic_norm not in CRITIC_NORMS:
        raise UserError(f"--critic-norm must be one of {', '.join(CRITIC_NORMS)}, not {config.critic_norm!r}")
    for side, name in ((config.height, "height"), (config.width, "width")):
        if side % (1 << stages) or side >> stages < 1:
            raise UserError(f"{name} {side} must be a multiple of {1 << stages} for {stages} generator stages")
    if config.compile and config.critic_norm == "batch":
        raise UserError("--compile needs a critic without batch norm (--critic-norm layer or none)")
    if config.iters < 1 or config.batch_size < 1 or config.critic_steps < 1:
        raise UserError("--iters, --batch-size and critic steps must be positive")
    if not 0.0 < config.train_fraction <= 1.0:
        raise UserError(f"--train-fraction must be in (0, 1], not {config.train_fraction}")
    try:
        parse_policy(config.diffaug)
    except ValueError as exc:
        raise UserError(f"--diffaug: {exc}") from None
    if not 0.0 < config.diffaug_p <= 1.0:
        raise UserError(f"--diffaug-p must be in (0, 1], not {config.diffaug_p}")
    if config.score_every < 0 or config.score_n < 4:
        raise UserError(f"--score-every must be >= 0 (0 = off) and --score-n >= 4, not {config.score_every} and "
                        f"{config.score_n}")
    if config.ema_kimg < 0:
        raise UserError(f"--ema-kimg must be >= 0 (0 = off), not {config.ema_kimg}")
