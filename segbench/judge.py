"""`segbench score` / `pairgen score`: how good, how varied and how well aligned a GAN's pairs are.

The judge is a U-Net trained on the same fold's REAL training split only: the newest complete real-only
`segbench run` (M = 0) of that fold on the same real shards, or, when there is none, one trained on demand as an
ordinary run (16-0-NoAug, under <ws>/<dataset>/<fold>/seg/, so the next score finds it: cached).

Figures (score.json; docs/QUALITY.md says what each means and its scale):
  alignment  per pair: the judge segments the synthetic image; Dice (one foreground class) or mean IoU over the
             foreground classes present (several) against the pair's own thresholded mask. 1 = the mask is
             exactly where a real-trained segmenter sees the object. Summarised as mean and quantiles.
  fd, kid, kid_std, precision, recall   real training images vs synthetic images in the judge's encoder
             features (segbench.quality), the bottleneck's channels averaged over the image.
  scale      the same figures for the real validation split vs the real training split (alignment: the judge's
             agreement with the true val masks), so every number has a reference.
Targets: a GAN run directory or checkpoint (n pairs sampled from its newest checkpoint, pairgen.sampling's
latents for (seed, i)) or a synthetic export directory (all its pairs; `write_quality` stores the per-pair
alignment as the shards' `quality` dataset).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pairgen.core.devices import resolve_device
from pairgen.core.errors import UserError
from pairgen.shards import MANIFEST_NAME, ShardSet, add_quality, load_shards
from segbench.presets import SegConfig, make_config
from segbench.run import DataPlan, plan_data, preset_for
from segbench.rundir import SCORE_NAME, RunDir, gan_run_dir

if TYPE_CHECKING:
    from pairgen.presets import GANConfig
JUDGE_REAL_PER_BATCH = 16
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def plan_target(target: Path, ws: Path, real_shards: Path | None = None) -> DataPlan:
    """Dataset, fold and real shards of an export directory or a GAN run / checkpoint (leak-checked as a run)."""
    target = Path(target)
    if not target.exists():
        raise UserError(f"{target}: no such GAN run, checkpoint or export directory")
    common = dict(real_per_batch=0, synth_per_batch=1, real_shards=str(real_shards) if real_shards else None)
    if (target / MANIFEST_NAME).is_file():
        probe = SegConfig(dataset="", fold_id="", synth_source="shards", synth_shards=str(target), **common)
    else:
        probe = SegConfig(dataset="", fold_id="", synth_source="generator", checkpoint=str(target), **common)
    return plan_data(probe, Path(ws))


def find_judge(ws: Path, plan: DataPlan) -> Path | None:
    """The newest complete real-only run of the plan's dataset and fold trained on the same real shards."""
    found = []
    for path in (Path(ws) / plan.dataset / plan.fold_id / "seg").glob("*"):
        run_dir = RunDir(path)
        if not (run_dir.is_complete() and run_dir.weights.is_file()):
            continue
        config = SegConfig.load(run_dir.config)
        if config.synth_per_batch == 0 and config.real_shards and \
                Path(config.real_shards).resolve() == plan.real_parent.resolve():
            found.append(run_dir)
    return max(found, key=lambda r: r.summary.stat().st_mtime).path if found else None


def train_judge(ws: Path, plan: DataPlan, preset: str = "auto", iters: int | None = None,
                device: str = "auto") -> Path:
    """Train a 16-0-NoAug run on the plan's real shards (a normal `segbench run`, found again by find_judge).

    iters: max iterations (min_iters and patience become iters // 3), for tests and quick looks.
    """
    from segbench.run import run

    schedule = {} if iters is None else dict(max_iters=iters, min_iters=iters // 3, patience=iters // 3)
    config = make_config(plan.dataset, preset_for(plan) if preset == "auto" else preset, fold_id=plan.fold_id,
                         real_per_batch=JUDGE_REAL_PER_BATCH, synth_per_batch=0,
                         real_shards=str(plan.real_parent), device=device, **schedule)
    return run(config, Path(ws), show_progress=False)


def load_judge(run_dir: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], bool]:
    """(U-Net, weights meta, single_object) of a judge run directory."""
    from segbench.predict import load_weights

    model, meta = load_weights(Path(run_dir), device)
    setting = SegConfig.load(RunDir(run_dir).config).postprocess_lcc
    return model, meta, bool(setting) if setting is not None else meta["n_classes"] == 2


@torch.no_grad()
def encoder_features(model: torch.nn.Module, images: np.ndarray, device: torch.device,
                     batch_size: int = 64) -> np.ndarray:
    """The U-Net's bottleneck output averaged over rows and columns: float64 N×filters, for uint8 N×H×W×C."""
    from segbench.mixing import uint8_to_model

    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = uint8_to_model(torch.from_numpy(np.array(images[start:start + batch_size])).to(device).permute(0, 3, 1, 2))
        for encoder in model.encoders:
            x = model.pool(encoder(x))
        out.append(model.bottleneck(x).float().mean(dim=(2, 3)).double().cpu().numpy())
    return np.concatenate(out)


def segment(model: torch.nn.Module, images: np.ndarray, single_object: bool, device: torch.device,
            batch_size: int = 64) -> np.ndarray:
    """The judge's label maps (uint8 N×H×W) for uint8 images N×H×W×C at their own resolution."""
    from segbench.postprocess import predict_full
    from segbench.predict import predict_logits

    shape = images.shape[1:3]
    return np.stack([predict_full(logits, shape, single_object)
                     for logits in predict_logits(model, images, device, batch_size, amp=False)])


def alignment(preds: np.ndarray, masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Per pair, float64 N: Dice of the foreground (n_classes == 2) or the mean IoU over foreground classes
    present in the prediction or the mask (several classes); 1.0 when both hold no foreground at all."""
    preds, masks = np.asarray(preds), np.asarray(masks)
    axes = (1, 2)
    if n_classes == 2:
        p, m = preds > 0, masks > 0
        total = p.sum(axes) + m.sum(axes)
        return np.where(total == 0, 1.0, 2.0 * (p & m).sum(axes) / np.maximum(total, 1))
    ious = np.full((len(preds), n_classes - 1), np.nan)
    for k in range(1, n_classes):
        p, m = preds == k, masks == k
        union = (p | m).sum(axes)
        ious[:, k - 1] = np.where(union > 0, (p & m).sum(axes) / np.maximum(union, 1), np.nan)
    present = ~np.isnan(ious).all(axis=1)
    out = np.ones(len(preds))
    out[present] = np.nanmean(ious[present], axis=1)
    return out


def judge_alignment(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, n_classes: int,
                    single_object: bool, device: torch.device, chunk: int = 256) -> np.ndarray:
    """`alignment` of the judge's segmentations of uint8 images N×H×W×C against masks N×H×W, float64 N, computed
    chunk by chunk (an export of 100,000 pairs never holds all label maps at once)."""
    return np.concatenate([alignment(segment(model, images[s:s + chunk], single_object, device), masks[s:s + chunk],
                                     n_classes) for s in range(0, len(images), chunk)])


def summarize_alignment(values: np.ndarray) -> dict[str, float]:
    """mean and the QUANTILES (q05 … q95) of per-pair alignment scores."""
    summary = {"mean": float(np.mean(values))}
    summary.update({f"q{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES})
    return summary


def sample_pairs(checkpoint: Path, n: int, seed: int, device: torch.device,
                 batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """n pairs of a generator checkpoint (z_i from (seed, i) as in `pairgen export`): images uint8 N×H×W×C,
    masks uint8 N×H×W, and the checkpoint's meta."""
    from pairgen.checkpoint import load_generator
    from pairgen.sampling import latents

    generator, config, meta = load_generator(checkpoint, device)
    return (*generate_pairs(generator, latents(seed, 0, n, config.z_dim), config, device, batch_size), meta)


@torch.no_grad()
def generate_pairs(generator: torch.nn.Module, z: np.ndarray, config: "GANConfig", device: torch.device,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N×H×W×C, masks uint8 N×H×W) of a generator (in the mode given) for latents z (float32 N×Z),
    batch_size at a time."""
    from pairgen.sampling import generate_block

    blocks = [generate_block(generator, z[s:s + batch_size], config, device) for s in range(0, len(z), batch_size)]
    return np.concatenate([b["images"] for b in blocks]), np.concatenate([b["masks"] for b in blocks])


def score(target: Path, ws: Path, n: int = 256, seed: int = 0, judge: Path | None = None,
          judge_preset: str = "auto", judge_iters: int | None = None, real_shards: Path | None = None,
          device: str = "auto", write_quality: bool = False, out: Path | None = None,
          max_features: int = 4096) -> dict[str, Any]:
    """Score a GAN run / checkpoint or an export (module docstring); writes score.json and returns its content.

    n, seed: pairs sampled from a GAN (z_i from (seed, i)); an export is scored whole.
    out: where score.json goes (default: the export directory, or the GAN run directory).
    write_quality: exports only; store the per-pair alignment as the shards' `quality` dataset.
    max_features: the distances use at most this many synthetic pairs (a seeded subset; alignment uses all).
    """
    from pairgen.core.files import atomic_write_json
    from segbench.quality import compare

    started = time.monotonic()
    if n < 2:
        raise UserError(f"--n must be at least 2, not {n}")
    target, ws = Path(target), Path(ws)
    plan = plan_target(target, ws, real_shards)
    if write_quality and plan.synth_dir is None:
        raise UserError("--write-quality needs an export directory (shards) to write into, not a GAN run")
    resolved = resolve_device(device)
    judge_dir = Path(judge) if judge else find_judge(ws, plan)
    if judge_dir is None:
        judge_dir = train_judge(ws, plan, judge_preset, judge_iters, device)
    model, meta, single_object = load_judge(judge_dir, resolved)
    train, val = load_shards(plan.real_parent / "train"), load_shards(plan.real_parent / "val")
    _check_layout(train, meta, judge_dir)
    if min(len(train), len(val)) < 2:
        raise UserError(f"{plan.real_parent}: the real train and val splits need at least 2 pairs each to compare "
                        f"feature sets (they hold {len(train)} and {len(val)})")

    images, masks, source = _synthetic_pairs(plan, n, seed, resolved)
    if images.shape[1:] != train.images.shape[1:]:
        raise UserError(f"{target}: pairs are {images.shape[1:]} (H×W×C), the real training shards "
                        f"{train.images.shape[1:]}")
    n_classes = len(train.class_names)
    per_pair = judge_alignment(model, images, masks, n_classes, single_object, resolved)
    real_val = judge_alignment(model, val.images, val.masks, n_classes, single_object, resolved)
    # the distances need all-pairs matrices: a seeded subset of a large export is plenty (and fits in memory)
    subset = np.sort(np.random.default_rng(seed).choice(len(images), min(len(images), max_features), replace=False))
    features = {name: encoder_features(model, x, resolved) for name, x in
                (("train", train.images), ("val", val.images), ("synthetic", images[subset]))}
    result = {
        "target": str(target.resolve()), "dataset": plan.dataset, "fold_id": plan.fold_id, **source,
        "judge": str(judge_dir.resolve()), "alignment_metric": "dice" if n_classes == 2 else "miou",
        "n_synthetic": int(len(images)), "n_synthetic_features": int(len(subset)), "n_real_train": int(len(train)), "n_real_val": int(len(val)),
        "feature_dim": int(features["train"].shape[1]),
        "alignment": summarize_alignment(per_pair), **compare(features["train"], features["synthetic"], seed=seed),
        "scale": {"alignment": summarize_alignment(real_val), **compare(features["train"], features["val"],
                                                                          seed=seed)},
        "wall_s": round(time.monotonic() - started, 3),
    }
    if write_quality:
        add_quality(plan.synth_dir, per_pair.astype(np.float32))
    if out is None:
        out = plan.synth_dir if plan.synth_dir is not None else gan_run_dir(plan.checkpoint)
    atomic_write_json(Path(out) / SCORE_NAME if Path(out).is_dir() else Path(out), result)
    return result


def _synthetic_pairs(plan: DataPlan, n: int, seed: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images uint8 N×H×W×C, masks uint8 N×H×W, where they came from) of the plan's export or checkpoint."""
    if plan.synth_dir is not None:
        synth = load_shards(plan.synth_dir)
        return synth.images, synth.masks, {"export": str(plan.synth_dir.resolve())}
    images, masks, meta = sample_pairs(plan.checkpoint, n, seed, device)
    return images, masks, {"checkpoint": str(plan.checkpoint.resolve()), "step": meta["step"], "seed": seed}


def _check_layout(train: ShardSet, meta: dict[str, Any], judge_dir: Path) -> None:
    expected = (int(meta["height"]), int(meta["width"]), int(meta["in_channels"]))
    if tuple(train.images.shape[1:]) != expected or list(meta["class_names"]) != train.class_names:
        raise UserError(f"--judge {judge_dir}: trained on {expected} (H×W×C) pairs of {meta['class_names']}, "
                        f"the real shards are {tuple(train.images.shape[1:])} of {train.class_names}")


def print_score(result: dict[str, Any], console=None) -> None:
    """A small table: synthetic vs real train beside real val vs real train (the scale)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"pair quality: {result['dataset']}/{result['fold_id']} "
                        f"({result['n_synthetic']} synthetic pairs, judge {Path(result['judge']).name})")
    table.add_column("figure")
    table.add_column("synthetic", justify="right")
    table.add_column("real val (scale)", justify="right")
    metric = result["alignment_metric"]
    for key in ("mean", "q05", "q50", "q95"):
        table.add_row(f"alignment {metric} {key}", f"{result['alignment'][key]:.3f}",
                      f"{result['scale']['alignment'][key]:.3f}")
    for key, fmt in (("fd", "{:.4g}"), ("kid", "{:.4g}"), ("precision", "{:.3f}"), ("recall", "{:.3f}")):
        table.add_row(key, fmt.format(result[key]), fmt.format(result["scale"][key]))
    console.print(table)



class TrainingScorer:
    """`pairgen train --score-every`'s scorer (pairgen.train.Scorer), wired in by pairgen/cli.py.

    Built once before the GAN trains: finds the fold's judge (find_judge) or trains one (train_judge), loads it
    and caches the real training images' encoder features. Each call samples n pairs from the generator it is
    given (eval mode, on its own device) with fixed latents (pairgen.sampling, (seed, i) as `pairgen export`;
    nothing is drawn from the global RNGs, so exact resume holds) and returns alignment (the per-pair mean) and
    fd, kid, kid_std, precision, recall against the real training features. Needs >= 2 real training pairs.
    """

    def __init__(self, ws: Path, real_parent: Path, gan: "GANConfig", n: int = 256, seed: int = 0,
                 device: str = "auto", judge: Path | None = None, judge_preset: str = "auto",
                 judge_iters: int | None = None) -> None:
        from pairgen.sampling import latents

        plan = DataPlan(gan.dataset, gan.fold_id, Path(real_parent))
        self.judge_dir = Path(judge) if judge else find_judge(ws, plan)
        if self.judge_dir is None:
            self.judge_dir = train_judge(ws, plan, judge_preset, judge_iters, device)
        self.device = resolve_device(device)
        self.model, meta, self.single_object = load_judge(self.judge_dir, self.device)
        train = load_shards(plan.real_parent / "train")
        _check_layout(train, meta, self.judge_dir)
        if len(train) < 2:
            raise UserError(f"{plan.real_parent}: scoring needs at least 2 real training pairs, not {len(train)}")
        self.gan, self.seed, self.n_classes = gan, seed, len(train.class_names)
        self.z = latents(seed, 0, n, gan.z_dim)
        self.real_features = encoder_features(self.model, train.images, self.device)

    def describe(self) -> str:
        """'judge RUN (test dice 0.912)': which judge scores, and how well it segments real test pairs."""
        metrics = json.loads(RunDir(self.judge_dir).summary.read_text()).get("metrics", {})
        key = "dice" if self.n_classes == 2 else "miou"
        value = (metrics.get(key) or {}).get("mean")
        return f"judge {self.judge_dir} (test {key} {value:.3f})" if isinstance(value, float) else \
            f"judge {self.judge_dir}"

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, float]:
        from segbench.quality import compare

        images, masks = generate_pairs(generator, self.z, self.gan, next(generator.parameters()).device)
        per_pair = judge_alignment(self.model, images, masks, self.n_classes, self.single_object, self.device)
        synthetic = encoder_features(self.model, images, self.device)
        return {"alignment": float(per_pair.mean()), **compare(self.real_features, synthetic, seed=self.seed)}
