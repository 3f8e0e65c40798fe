"""`segbench report`: thesis-style tables (5.1-5.4) over finished runs, with CIs, paired tests and figures.

Runs are grouped into configurations by (dataset, K real, M synthetic, aug spec) and labelled like the thesis'
network IDs ("8-8-NoAug", "16-0-Aug"; the aug spec replaces "Aug" when one dataset has several specs, as in the
augmentation searches). The numbers, per configuration and metric (docs/REPORTS.md has the rationale):

  mean      mean over folds of the per-fold mean over test images (thesis: "averaged across all folds"),
            then mean over seeds; undefined (NaN) per-image values are left out and counted in n_undefined
  std       sample std (ddof=1) over all test images of all folds pooled (the thesis' "stddev"),
            then mean over seeds
  seed_std  std (ddof=1) across seeds of the seed means (only with >= 2 seeds)
  CI        95% percentile bootstrap of the mean over test images, each image averaged over seeds first
  Wilcoxon  paired by (fold, case id) on seed-averaged per-image values; Holm-corrected within each
            (dataset, metric) family of comparisons
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pairgen.core.errors import UserError
from segbench.presets import SegConfig
from segbench.rundir import CONFIG_NAME, SCORE_NAME, SUMMARY_NAME, RunDir, gan_run_dir, read_json

PRIMARY = {"binary": "dice", "multiclass": "miou"}
BINARY_METRICS = ("dice", "hausdorff_mm", "hd95_mm", "assd_mm")
MULTICLASS_METRICS = ("miou", "miou_excl_human_object")
LOWER_IS_BETTER = ("hausdorff", "hd95", "assd")
ALPHA = 0.05


@dataclass
class Run:
    """One finished run directory, read back."""

    path: Path
    dataset: str
    fold_id: str
    seed: int
    real: int
    synth: int
    aug: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    variant: str = ""     # preset, low-data fraction, generator source: never pooled with each other
    use: str = ""         # how synthetic pairs were used (SegConfig.synth_use: filter, weight, pre-training)
    gan: dict[str, float] | None = None   # the used export's / GAN run's score.json: {'alignment', 'fd'}


@dataclass
class Configuration:
    """All runs (folds × seeds) of one (dataset, K, M, aug, variant, use) combination."""

    dataset: str
    real: int
    synth: int
    aug: str
    variant: str = ""
    use: str = ""     # SegConfig.synth_use, part of the label: '8-8-NoAug-top50-w0.5-pre500'
    label: str = ""
    by_spec: bool = False   # labelled with the aug spec (several specs in this dataset)
    runs: list[Run] = field(default_factory=list)

    @property
    def task(self) -> str:
        columns = {k for run in self.runs for row in run.rows[:1] for k in row}
        return "binary" if "dice" in columns else "multiclass"

    @property
    def metric_names(self) -> list[str]:
        """Numeric per-image columns, in CSV order."""
        names: list[str] = []
        for run in self.runs:
            for row in run.rows[:1]:
                names += [k for k in row if k != "case" and k not in names]
        return names


def is_noaug(aug: str | None) -> bool:
    return aug is None or str(aug).strip().lower() in ("", "none")


def config_label(real: int, synth: int, aug: str, by_spec: bool = False, use: str = "") -> str:
    """Thesis network ID: K-M-Aug / K-M-NoAug, or K-M-<spec> when several specs are compared; then the
    synthetic-use tag when not the defaults (SegConfig.synth_use), as in the run's own ID (segbench.run.run_label)."""
    if is_noaug(aug):
        label = f"{real}-{synth}-NoAug"
    else:
        label = f"{real}-{synth}-{aug}" if by_spec else f"{real}-{synth}-Aug"
    return f"{label}-{use}" if use else label


def lower_is_better(metric: str) -> bool:
    return any(metric.startswith(prefix) for prefix in LOWER_IS_BETTER)


def parse_comparisons(items: list[str]) -> list[tuple[str, str]]:
    """CLI 'A:B' strings → [(A, B)]."""
    pairs = []
    for item in items:
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 2 or not all(parts):
            raise UserError(f"--compare {item!r}: expected two configuration labels as A:B, e.g. 8-8-NoAug:16-0-NoAug")
        pairs.append((parts[0], parts[1]))
    return pairs


# ------------------------------------------------------------------------------------------------ discovery


def load_run(path: Path) -> Run | str:
    """A Run, or the reason why this directory cannot be reported (a string)."""
    from segbench.evaluate import read_per_image_csv

    files = RunDir(path)
    summary = files.read_summary()
    if summary is None:
        return "no readable summary.json (not finished?)"
    if not files.is_complete():
        return "summary.json says the run is not complete"
    if not files.per_image.is_file():
        return "no per_image.csv"
    config = files.read_config() or {}
    merged = {**config, **{k: v for k, v in summary.items() if v is not None}}
    missing = [k for k in ("dataset", "real_per_batch", "synth_per_batch") if k not in merged]
    if missing:
        return f"summary.json/config.json lack {', '.join(missing)}"
    rows = read_per_image_csv(files.per_image)
    if not rows:
        return "per_image.csv has no test images"
    # a low-data subset (fold1-frac10) is tested on its fold's test images: pair by fold1, keep frac10 apart
    fold_id, _, fraction = str(merged.get("fold_id", "fold1")).partition("-")
    try:   # hand-edited or damaged files: a reason to skip the run, not a traceback
        seed, real, synth = (_count(merged, key) for key in ("seed", "real_per_batch", "synth_per_batch"))
    except ValueError as exc:
        return f"summary.json/config.json: {exc}"
    generator = merged.get("synth_source") == "generator" and synth > 0
    try:   # never pool filtered, weighted or pre-trained runs with plain ones: the tag is part of the label
        used = SegConfig.from_json({k: merged[k] for k in ("real_per_batch", "synth_per_batch", "synth_filter",
                                                           "synth_weight", "pretrain_iters") if k in merged})
        use = used.synth_use
    except (TypeError, ValueError) as exc:
        return f"summary.json/config.json: {exc}"
    variant = "-".join(str(v) for v in (merged.get("preset"), fraction, "generator" if generator else None) if v)
    return Run(path=path, dataset=str(merged["dataset"]), fold_id=fold_id, seed=seed, real=real, synth=synth,
               aug=str(merged.get("aug") or "none"), rows=rows, summary=summary, variant=variant, use=use,
               gan=gan_scores(merged) if used.uses_synthetic else None)


def gan_scores(config: dict[str, Any]) -> dict[str, float] | None:
    """{'alignment': mean, 'fd': Fréchet distance} of the score.json (segbench.judge) next to the synthetic
    data a run's config.json names (the export directory, or the generator checkpoint's GAN run); None without."""
    generator = config.get("synth_source") == "generator"
    source = config.get("checkpoint") if generator else config.get("synth_shards")
    if not source:
        return None
    path = gan_run_dir(Path(str(source))) if generator else Path(str(source))
    score = read_json(path / SCORE_NAME) or {}
    alignment = score["alignment"].get("mean") if isinstance(score.get("alignment"), dict) else None
    fd = score.get("fd")
    if not isinstance(alignment, (int, float)) or not isinstance(fd, (int, float)):
        return None
    return {"alignment": float(alignment), "fd": float(fd)}


def _count(fields: dict[str, Any], key: str) -> int:
    """fields[key] (default 0) as a non-negative int; ValueError naming the field otherwise (1.0 passes, 1.5 not)."""
    value = fields.get(key, 0)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or value < 0):
        raise ValueError(f"{key} is {value!r}, expected a non-negative integer")
    return int(value)


def find_runs(paths: list[Path]) -> tuple[list[Run], list[dict[str, str]]]:
    """Runs below the given paths (run dirs or any parents) and the skipped ones with their reasons."""
    candidates: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such run directory")
        # config.json without summary.json: an unfinished segbench run (GAN runs have config.json too: not ours)
        found = {p.parent for p in path.rglob(SUMMARY_NAME)}
        found |= {p.parent for p in path.rglob(CONFIG_NAME) if "real_per_batch" in (read_json(p) or {})}
        if RunDir(path).summary.is_file():
            found.add(path)
        candidates += sorted(p for p in found if p not in candidates)
    runs: list[Run] = []
    skipped: list[dict[str, str]] = []
    for path in candidates:
        loaded = load_run(path)
        if isinstance(loaded, str):
            skipped.append({"run": str(path), "reason": loaded})
        else:
            runs.append(loaded)
    return runs, skipped


def group_runs(runs: list[Run], skipped: list[dict[str, str]]) -> list[Configuration]:
    """Configurations in thesis order: K descending, then M, then Aug before NoAug (tables 5.2 / 5.4)."""
    groups: dict[tuple, Configuration] = {}
    for run in runs:
        key = (run.dataset, run.real, run.synth, run.aug, run.variant, run.use)
        groups.setdefault(key, Configuration(*key)).runs.append(run)
    for config in groups.values():
        # a (fold, seed) run twice (e.g. rerun into a new dir): keep the newest so no test image counts double
        newest: dict[tuple[str, int], Run] = {}
        for run in sorted(config.runs, key=lambda r: RunDir(r.path).summary.stat().st_mtime):
            if (run.fold_id, run.seed) in newest:
                old = newest[(run.fold_id, run.seed)]
                skipped.append({"run": str(old.path), "reason": f"same configuration, fold and seed as {run.path}"})
            newest[(run.fold_id, run.seed)] = run
        config.runs = sorted(newest.values(), key=lambda r: (r.fold_id, r.seed))
    for dataset in {c.dataset for c in groups.values()}:
        members = [c for c in groups.values() if c.dataset == dataset]
        specs = {c.aug for c in members if not is_noaug(c.aug)}
        several_variants = len({c.variant for c in members}) > 1
        for config in members:
            config.by_spec = len(specs) > 1
            config.label = config_label(config.real, config.synth, config.aug, config.by_spec, config.use)
            if several_variants:   # e.g. tiny and small runs of one grid: label them apart, never pool them
                config.label += f"@{config.variant}"
    return sorted(groups.values(),
                  key=lambda c: (c.dataset, c.variant, -c.real, c.synth, is_noaug(c.aug), c.aug, c.use))


# ---------------------------------------------------------------------------------------------- aggregation


def seed_averaged(config: Configuration, metric: str) -> dict[tuple[str, str], float]:
    """(fold, case) → the image's value averaged over the seeds where it is defined."""
    values: dict[tuple[str, str], list[float]] = {}
    for run in config.runs:
        for row in run.rows:
            value = float(row.get(metric, math.nan))
            bucket = values.setdefault((run.fold_id, str(row["case"])), [])
            if math.isfinite(value):
                bucket.append(value)
    return {key: float(np.mean(v)) for key, v in values.items() if v}


def metric_stats(config: Configuration, metric: str, n_boot: int = 10000) -> dict[str, Any]:
    """Mean/std/CI of one metric over a configuration's runs (the module docstring defines each number)."""
    from segbench.stats import bootstrap_ci

    by_seed: dict[int, dict[str, list[float]]] = {}
    n_undefined = n_defined = 0
    for run in config.runs:
        fold_values = by_seed.setdefault(run.seed, {}).setdefault(run.fold_id, [])
        for row in run.rows:
            value = float(row.get(metric, math.nan))
            if math.isfinite(value):
                fold_values.append(value)
                n_defined += 1
            else:
                n_undefined += 1
    seed_means, seed_stds, per_fold = [], [], {}
    for folds in by_seed.values():
        fold_means = {fold: float(np.mean(v)) for fold, v in folds.items() if v}
        for fold, value in fold_means.items():
            per_fold.setdefault(fold, []).append(value)
        pooled = np.concatenate([np.asarray(v, float) for v in folds.values()])
        if fold_means:
            seed_means.append(float(np.mean(list(fold_means.values()))))
        if pooled.size > 1:
            seed_stds.append(float(pooled.std(ddof=1)))
    images = np.array(list(seed_averaged(config, metric).values()), float)
    # n_boot=0: the figures only need the mean
    low, high = bootstrap_ci(images, n_boot=n_boot) if images.size and n_boot else (math.nan, math.nan)
    nan = math.nan
    return {
        "mean": float(np.mean(seed_means)) if seed_means else nan,
        "std": float(np.mean(seed_stds)) if seed_stds else nan,
        "seed_std": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else nan,
        "n_seeds": len(seed_means),
        "ci_low": float(low), "ci_high": float(high),
        "n": n_defined, "n_undefined": n_undefined,
        "per_fold": {fold: float(np.mean(v)) for fold, v in sorted(per_fold.items())},
    }


def stop_reasons(config: Configuration) -> dict[str, Any]:
    """How the runs ended: 'early' (early stopping), 'cap' (max_iters reached) or 'unknown' (older summaries),
    counted, and each run's reason, iterations, best iteration, what selected it (select_by: 'loss' | 'score';
    summaries older than the field were selected by loss) and its validation score (None when not recorded)
    (issue 12: verdicts of capped runs are suspect)."""
    runs = []
    for r in config.runs:
        early = r.summary.get("stopped_early")
        reason = "unknown" if early is None else "early" if early else "cap"
        runs.append({"run": str(r.path), "seed": r.seed, "fold": r.fold_id, "reason": reason,
                     "iterations": r.summary.get("iterations"), "best_iteration": r.summary.get("best_iteration"),
                     "select_by": r.summary.get("select_by", "loss"), "best_val_score": r.summary.get("best_val_score")})
    counts = {reason: sum(x["reason"] == reason for x in runs) for reason in ("early", "cap", "unknown")}
    return {**counts, "runs": runs}


def summarize_configuration(config: Configuration, metrics: list[str], n_boot: int = 10000) -> dict[str, Any]:
    """One row of report.json / report.csv."""
    confusion = [r.summary["confusion"]["miou"] for r in config.runs
                 if isinstance(r.summary.get("confusion"), dict) and "miou" in r.summary["confusion"]]
    scores = list({str(sorted(r.gan.items())): r.gan for r in config.runs if r.gan}.values())   # one per source
    return {
        "dataset": config.dataset, "label": config.label, "task": config.task,
        "real_per_batch": config.real, "synth_per_batch": config.synth, "aug": config.aug, "variant": config.variant,
        "synth_use": config.use,
        "gan_alignment": float(np.mean([s["alignment"] for s in scores])) if scores else None,
        "gan_fd": float(np.mean([s["fd"] for s in scores])) if scores else None,
        "aug_column": "no" if is_noaug(config.aug) else (config.aug if config.by_spec else "yes"),
        "n_runs": len(config.runs),
        "folds": sorted({r.fold_id for r in config.runs}), "seeds": sorted({r.seed for r in config.runs}),
        "n_images": len({(r.fold_id, str(row["case"])) for r in config.runs for row in r.rows}),
        "runs": [str(r.path) for r in config.runs],
        "confusion_miou": float(np.mean(confusion)) if len(confusion) == len(config.runs) and confusion else None,
        "stops": stop_reasons(config),
        "metrics": {m: metric_stats(config, m, n_boot) for m in metrics if m in config.metric_names},
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_configurations(a: Configuration, b: Configuration, metric: str) -> dict[str, Any]:
    """Paired Wilcoxon signed-rank test of a vs b on the images both were tested on; differences are a − b."""
    from segbench.stats import paired_wilcoxon

    va, vb = seed_averaged(a, metric), seed_averaged(b, metric)
    keys = sorted(set(va) & set(vb))
    result: dict[str, Any] = {"dataset": a.dataset, "metric": metric, "a": a.label, "b": b.label, "n": len(keys),
                              "statistic": math.nan, "p_value": math.nan, "median_diff": math.nan,
                              "mean_diff": math.nan, "better": "", "note": ""}
    if not keys:
        result["note"] = "no test images in common (different folds?)"
        return result
    try:
        test = paired_wilcoxon(np.array([va[k] for k in keys]), np.array([vb[k] for k in keys]))
    except ValueError as exc:  # e.g. every difference zero
        result["note"] = str(exc)
        return result
    result.update({k: float(test[k]) for k in ("statistic", "p_value", "median_diff", "mean_diff") if k in test})
    if result["median_diff"] != 0 and math.isfinite(result["median_diff"]):
        a_higher = result["median_diff"] > 0
        result["better"] = a.label if a_higher != lower_is_better(metric) else b.label
    return result


def default_comparisons(configs: list[Configuration]) -> list[tuple[str, str]]:
    """Each configuration vs the real-only, no-aug baseline of its dataset and variant (the largest K)."""
    pairs = []
    for dataset, variant in dict.fromkeys((c.dataset, c.variant) for c in configs):
        members = [c for c in configs if (c.dataset, c.variant) == (dataset, variant)]
        baselines = [c for c in members if c.synth == 0 and c.real > 0 and is_noaug(c.aug) and not c.use]
        if baselines:
            base = max(baselines, key=lambda c: c.real)
            pairs += [(c.label, base.label) for c in members if c is not base]
    return pairs


def default_metrics(config: Configuration) -> list[str]:
    names = config.metric_names
    if config.task == "binary":
        return [m for m in BINARY_METRICS if m in names]
    return [m for m in MULTICLASS_METRICS if m in names] + [m for m in names if m.startswith("iou_")]


def _default_out(runs: list[Run]) -> Path:
    parents = [str(r.path.resolve().parent) for r in runs]
    return Path(os.path.commonpath(parents)) / "report"


def report(run_dirs: list[Path], out: Path | None = None, compare: list[tuple[str, str]] | None = None,
           metrics: list[str] | None = None, console=None, order: list[str] | None = None,
           n_boot: int = 10000) -> dict:
    """Tables, comparisons and figures for the finished runs below `run_dirs`; returns report.json's content.

    out: output folder (default: <common parent of the runs' parent dirs>/report). compare: (label A, label B)
    pairs to test (default: every configuration vs the real-only no-aug baseline). metrics: per-image columns to
    tabulate and test (default: Dice + surface distances, or mIoU + per-class IoU). order: labels listed first,
    in this order (a sweep passes its manifest order).
    """
    from pairgen.core.files import atomic_write_json
    from segbench import figures, tables
    from segbench.evaluate import to_json_safe

    runs, skipped = find_runs(list(run_dirs))
    configs = group_runs(runs, skipped)
    if not configs:
        reasons = "; ".join(f"{s['run']}: {s['reason']}" for s in skipped[:3])
        where = ", ".join(map(str, run_dirs))
        raise UserError(f"no complete runs below {where}" + (f" ({reasons})" if reasons else ""))
    if order:
        rank = {label: i for i, label in enumerate(order)}
        configs.sort(key=lambda c: (c.dataset, c.variant, rank.get(c.label, len(rank))))
    by_label = {(c.dataset, c.label): c for c in configs}
    for name in metrics or []:
        if not any(name in c.metric_names for c in configs):
            raise UserError(f"metric {name!r} is in no per_image.csv; known: {', '.join(configs[0].metric_names)}")
    rows = [summarize_configuration(c, metrics or default_metrics(c), n_boot) for c in configs]

    pairs = compare if compare is not None else default_comparisons(configs)
    comparisons = []
    for a_label, b_label in pairs:
        datasets = [d for d in dict.fromkeys(c.dataset for c in configs) if (d, a_label) in by_label
                    and (d, b_label) in by_label]
        if not datasets:
            known = ", ".join(dict.fromkeys(c.label for c in configs))
            raise UserError(f"--compare {a_label}:{b_label}: both labels must name configurations; known: {known}")
        for d in datasets:
            a, b = by_label[(d, a_label)], by_label[(d, b_label)]
            tested = metrics or [m for m in default_metrics(a) if not m.startswith("iou_")]
            comparisons += [compare_configurations(a, b, m) for m in tested
                            if m in a.metric_names and m in b.metric_names]
    for family in {(c["dataset"], c["metric"]) for c in comparisons}:
        members = [c for c in comparisons if (c["dataset"], c["metric"]) == family]
        for c, p in zip(members, holm([c["p_value"] for c in members])):
            c["p_holm"] = p
            c["significant"] = bool(math.isfinite(p) and p < ALPHA)

    out = Path(out) if out is not None else _default_out(runs)
    out.mkdir(parents=True, exist_ok=True)
    result = {"configurations": rows, "comparisons": comparisons, "skipped": skipped, "out": str(out),
              "alpha": ALPHA, "multiple_comparisons": "Holm within each (dataset, metric) family",
              "files": figures.write_figures(rows, configs, out, PRIMARY,
                                               lambda c, m: metric_stats(c, m, n_boot=0)["mean"])}
    result["files"].update(tables.write_tables(result, out))
    result["files"]["report.json"] = str(out / "report.json")
    atomic_write_json(out / "report.json", to_json_safe(result))
    tables.print_report(result, console)
    return result


def print_run_summary(run_dir: Path, console=None) -> None:
    """One run's metric table (after `segbench run`)."""
    from segbench import tables

    summary = RunDir(run_dir).read_summary()
    if summary is None:
        raise UserError(f"{run_dir}: no readable summary.json")
    tables.print_summary(summary, title=f"{summary.get('label') or Path(run_dir).name}", console=console)


def print_summary(summary: dict[str, Any], title: str = "", console=None) -> None:
    """A summary.json-shaped dict as a table (used by `segbench evaluate`)."""
    from segbench import tables

    tables.print_summary(summary, title=title, console=console)
