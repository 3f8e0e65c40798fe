"""Report figures: per-category IoU bars (thesis figure 5.9; for a binary task the one class's Dice and IoU) and
best/worst qualitative sheets (figures 5.4/5.5/5.11) with a class legend, in the dataset's colours
(pairgen.core.colors, shared with pairgen's sample sheets).

matplotlib is imported inside the functions (the CLI starts fast) and drives the Agg canvas directly, so no global
backend is switched. PNGs are rendered in memory and written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pairgen.core.colors import class_colors
from pairgen.core.files import atomic_write_bytes

N_BEST, N_WORST, TOP_CONFIGS = 2, 2, 4


def _save(fig, path: Path) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def per_category_chart(path: Path, classes: list[str], series: list[tuple[str, list[float]]], title: str,
                       ylabel: str = "IoU (mean over test images)") -> str:
    """Grouped bars: one group per class (or metric), one bar per configuration (NaN bars are left out)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.1 * len(classes) + 2), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(classes))
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width, label=label)
    ax.set_xticks(x, [c.replace("_", " ") for c in classes], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _mask_cmap(class_names: list[str]):
    from matplotlib.colors import ListedColormap

    return ListedColormap(class_colors(class_names) / 255.0)


def qualitative_sheet(path: Path, rows: list[dict[str, Any]], labels: list[str], class_names: list[str],
                      title: str) -> str:
    """rows: {case, tag, image h×w×C, mask h×w, preds [h×w per label], scores [float per label]}."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n_classes = len(class_names)
    height, width = rows[0]["mask"].shape
    cols = 2 + len(labels)
    cell = 2.2
    fig = Figure(figsize=(cols * cell * max(1.0, width / height), len(rows) * cell + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    cmap = _mask_cmap(class_names)
    for r, row in enumerate(rows):
        image = row["image"]
        panels = [(image[..., 0] if image.shape[-1] == 1 else image, "image", True),
                  (row["mask"], "ground truth", False)]
        panels += [(pred, f"{label}\n{score:.3f}" if math.isfinite(score) else label, False)
                   for label, pred, score in zip(labels, row["preds"], row["scores"])]
        for c, (data, name, is_image) in enumerate(panels):
            ax = axes[r, c]
            if is_image:
                ax.imshow(data, cmap="gray" if data.ndim == 2 else None, vmin=0, vmax=255)
            else:
                ax.imshow(data, cmap=cmap, vmin=0, vmax=n_classes - 1, interpolation="nearest")
            ax.set_title(f"{row['tag']} {row['case']}" if c == 0 else name, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    colours = class_colors(class_names) / 255.0
    fig.legend(handles=[Patch(facecolor=c, edgecolor="black", label=n) for n, c in zip(class_names, colours)],
               loc="outside lower center", ncol=min(n_classes, 8), fontsize=8, frameon=False)
    return _save(fig, path)


def _predictions(run) -> dict[str, Any] | None:
    from segbench.rundir import RunDir

    path = RunDir(run.path).predictions
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in ("case_id", "image", "mask", "pred") if k in data}
    if len(arrays) < 4:
        return None
    arrays["index"] = {str(c): i for i, c in enumerate(arrays["case_id"])}
    return arrays


def _pick_configs(ranked: list) -> list:
    """Thesis figs 5.4/5.5/5.11: best GAN-mix network next to the best real-only one (else the best two), and the
    worst configuration too, so a configuration that failed is seen, not hidden."""
    mixed = next((c for c in ranked if c.real > 0 and c.synth > 0), None)
    real_only = next((c for c in ranked if c.real > 0 and c.synth == 0), None)
    chosen = [c for c in (mixed, real_only) if c is not None]
    chosen = chosen if len(chosen) == 2 else ranked[:2]
    return chosen + [ranked[-1]] if ranked[-1] not in chosen else chosen


def qualitative(path: Path, ranked: list, metric: str) -> str:
    """Best and worst test cases of up to two configurations; returns the PNG path or why there is none."""
    chosen = _pick_configs(ranked)
    first = chosen[0]
    for run in first.runs:
        preds_a = _predictions(run)
        partners = [r for c in chosen[1:] for r in sorted(c.runs, key=lambda r: (r.fold_id != run.fold_id,
                                                                                   r.seed != run.seed))[:1]
                    if r.fold_id == run.fold_id]
        preds_b = [_predictions(r) for r in partners]
        if preds_a is None or len(partners) != len(chosen) - 1 or any(p is None for p in preds_b):
            continue
        runs, preds = [run] + partners, [preds_a] + preds_b
        scores = [{str(row["case"]): float(row.get(metric, math.nan)) for row in r.rows} for r in runs]
        common = [c for c in preds_a["index"] if all(c in p["index"] and c in s for p, s in zip(preds, scores))]
        mean_score = {c: float(np.nanmean([s[c] for s in scores])) if any(math.isfinite(s[c]) for s in scores)
                      else math.nan for c in common}
        ordered = sorted((c for c in common if math.isfinite(mean_score[c])), key=lambda c: -mean_score[c])
        if not ordered:
            continue
        picks = [("best", c) for c in ordered[:N_BEST]]
        picks += [("worst", c) for c in ordered[max(N_BEST, len(ordered) - N_WORST):]]
        rows = []
        for tag, case in picks:
            i = preds_a["index"][case]
            rows.append({"case": case, "tag": tag, "image": preds_a["image"][i], "mask": preds_a["mask"][i],
                         "preds": [p["pred"][p["index"][case]] for p in preds],
                         "scores": [s[case] for s in scores]})
        n_classes = max(2, int(max(max(int(p["mask"].max()), int(p["pred"].max())) for p in preds)) + 1)
        names = list(run.summary.get("class_names") or [])
        names += [f"class {i}" for i in range(len(names), n_classes)]
        title = f"{first.dataset} {run.fold_id} seed {run.seed}: best and worst test cases by {metric}"
        if chosen[-1] is ranked[-1] and len(ranked) > 2:
            title += f" (last column: the worst configuration, {ranked[-1].label})"
        return qualitative_sheet(path, rows, [c.label for c in chosen], names, title)
    return f"{path.name}: no run pair with predictions.npz in a common fold for {', '.join(c.label for c in chosen)}"


def write_figures(rows: list[dict[str, Any]], configs: list, out: Path, primary: dict[str, str],
                  mean_of: Callable[[Any, str], float]) -> dict[str, Any]:
    """per_category.png (multi-class) and qualitative.png per dataset; reasons for missing ones under 'notes'.

    primary: task ('binary' | 'multiclass') → the metric configurations are ranked by; mean_of(configuration,
    metric): its mean over the configuration's runs (segbench.report passes both: figures never import report)."""
    files: dict[str, Any] = {"notes": []}
    datasets = list(dict.fromkeys(c.dataset for c in configs))
    for dataset in datasets:
        suffix = "" if len(datasets) == 1 else f"-{dataset}"
        members = [c for c in configs if c.dataset == dataset]
        metric = primary[members[0].task]
        means = {c.label: next((r["metrics"][metric]["mean"] for r in rows if r["dataset"] == dataset
                                and r["label"] == c.label and metric in r["metrics"]), None) for c in members}
        for c in members:  # the primary metric may not have been requested: compute its mean anyway
            if means[c.label] is None:
                means[c.label] = mean_of(c, metric)
        ranked = sorted(members, key=lambda c: -means[c.label] if math.isfinite(means[c.label]) else math.inf)
        shown = ranked[:TOP_CONFIGS] + ([ranked[-1]] if len(ranked) > TOP_CONFIGS else [])   # + the worst
        which = f"best {min(len(ranked), TOP_CONFIGS)}" + (" and the worst" if len(ranked) > TOP_CONFIGS else "")
        name = f"per_category{suffix}.png"
        if members[0].task == "multiclass":
            classes = [m for m in members[0].metric_names if m.startswith("iou_")]
            series = [(c.label, [mean_of(c, m) for m in classes]) for c in shown]
            files[name] = per_category_chart(out / name, [m[4:] for m in classes], series,
                                             f"{dataset}: IoU per category, {which} configurations")
        else:   # binary: the one foreground class's overlap metrics
            names = [m for m in ("dice", "iou") if m in members[0].metric_names]
            series = [(c.label, [mean_of(c, m) for m in names]) for c in shown]
            foreground = (members[0].runs[0].summary.get("class_names") or ["", "foreground"])[-1]
            files[name] = per_category_chart(out / name, [{"dice": "Dice", "iou": "IoU"}[m] for m in names], series,
                                             f"{dataset}: {foreground}, {which} configurations",
                                             ylabel="mean over test images")
        name = f"qualitative{suffix}.png"
        made = qualitative(out / name, ranked, metric)
        if made.endswith(".png"):
            files[name] = made
        else:
            files["notes"].append(made)
    return files
