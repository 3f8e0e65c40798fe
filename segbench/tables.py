"""Rendering of segbench reports: one table model, printed with rich and written as Markdown and CSV.

Nothing here computes statistics; segbench.report produces the numbers (docs/REPORTS.md defines them).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairgen.core.files import atomic_write_bytes

NAMES = {"dice": "Dice", "iou": "IoU", "hausdorff_mm": "Hausdorff (mm)", "hd95_mm": "HD95 (mm)",
         "assd_mm": "ASSD (mm)", "miou": "mIoU", "miou_excl_human_object": "mIoU excl. human & object"}
STAT_KEYS = ("mean", "std", "seed_std", "ci_low", "ci_high", "n", "n_undefined")
CAPTION = ("mean: over folds of the per-fold mean over test images; std: over all test images (ddof=1); "
           "± after a mean: std across seeds; CI: 95% bootstrap of the mean over test images.")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


def metric_name(metric: str) -> str:
    """Display name: 'hd95_mm' → 'HD95 (mm)', 'iou_left_lung' → 'IoU left lung'."""
    if metric in NAMES:
        return NAMES[metric]
    for prefix in sorted(NAMES, key=len, reverse=True):
        if metric.startswith(prefix + "_"):
            return f"{NAMES[prefix]} {metric[len(prefix) + 1:].replace('_', ' ')}"
    return metric


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _per_class(metric: str) -> bool:
    return any(metric.startswith(p + "_") for p in ("iou", "dice", "hausdorff_mm", "hd95_mm", "assd_mm"))


def stop_cell(stops: dict[str, Any] | None) -> str:
    """'early 3/3 (it 575-900)': how many runs early stopping ended (the rest hit the cap) and their lengths;
    ', by score' (or ', by score 1/3') when the validation score rather than the loss picked the kept nets."""
    if not stops or not stops["runs"]:
        return "-"
    n = len(stops["runs"])
    its = [r["iterations"] for r in stops["runs"] if isinstance(r.get("iterations"), int)]
    notes = []
    if its:
        notes.append(f"it {min(its)}" if min(its) == max(its) else f"it {min(its)}-{max(its)}")
    if by_score := sum(r.get("select_by") == "score" for r in stops["runs"]):
        notes.append("by score" if by_score == n else f"by score {by_score}/{n}")
    span = f" ({', '.join(notes)})" if notes else ""
    if stops["unknown"] == n:
        return f"unknown{span}"
    return f"early {stops['early']}/{n}{span}"


def configuration_table(rows: list[dict[str, Any]], compact: bool = False) -> Table:
    """Thesis table 5.2 (binary) / 5.4 (multi-class) for the configurations of one dataset.

    compact (terminal): only the thesis' columns (Dice + Hausdorff, or mIoU + mIoU excl. human & object);
    report.md and report.csv have every metric, figure 5.9 the per-class ones.
    """
    metrics: list[str] = []
    for row in rows:
        metrics += [m for m in row["metrics"] if m not in metrics and not (compact and _per_class(m))]
    if compact:
        thesis = [m for m in ("dice", "hausdorff_mm", "miou", "miou_excl_human_object") if m in metrics]
        metrics = thesis or metrics[:2]
    with_std = [m for i, m in enumerate(metrics) if not _per_class(m) and (i < 2 or not compact)]
    headers = ["ID", "real/batch", "generated/batch", "Aug?"]
    for i, m in enumerate(metrics):
        headers += [f"{metric_name(m)} mean"] + ([f"{metric_name(m)} std"] if m in with_std else [])
        if i == 0:
            headers.append(f"{metric_name(m)} 95% CI")
    confusion = any(r.get("confusion_miou") is not None for r in rows)
    gan = any(r.get("gan_fd") is not None for r in rows)   # the used GAN's score.json (segbench.report.gan_scores)
    headers += (["mIoU (confusion)"] if confusion else []) + (["GAN alignment", "GAN FD"] if gan else [])
    headers += ([] if compact else ["runs"]) + ["n images", "undefined"]
    headers.append("stopped")
    cells = []
    for row in rows:
        line = [row["label"], str(row["real_per_batch"]), str(row["synth_per_batch"]), row["aug_column"]]
        for i, m in enumerate(metrics):
            s = row["metrics"].get(m)
            if s is None:
                line += ["-"] * (1 + (m in with_std) + (i == 0))
                continue
            line.append(fmt(s["mean"]) + (f" ± {fmt(s['seed_std'])}" if s.get("n_seeds", 1) > 1 else ""))
            if m in with_std:
                line.append(fmt(s["std"]))
            if i == 0:
                line.append(f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]")
        undefined = [f"{metric_name(m)}: {s['n_undefined']}" for m, s in row["metrics"].items()
                     if s["n_undefined"] and not _per_class(m)]
        line += ([fmt(row.get("confusion_miou"))] if confusion else [])
        line += [fmt(row.get("gan_alignment")), fmt(row.get("gan_fd"))] if gan else []
        line += [] if compact else [str(row["n_runs"])]
        line += [str(row["n_images"]), ", ".join(undefined) or "0", stop_cell(row.get("stops"))]
        cells.append(line)
    first = rows[0]
    folds = sorted({f for r in rows for f in r["folds"]})
    title = f"{first['dataset']} ({first['task']}): {len(rows)} configurations, folds {', '.join(folds)}"
    return Table(title, headers, cells, CAPTION)


def comparison_table(comparisons: list[dict[str, Any]], alpha: float) -> Table:
    headers = ["dataset", "metric", "A", "B", "n pairs", "median A−B", "mean A−B", "W", "p", "p (Holm)", "sig."]
    rows = [[c["dataset"], metric_name(c["metric"]), c["a"], c["b"], str(c["n"]), fmt(c["median_diff"]),
             fmt(c["mean_diff"]), fmt(c["statistic"], 1), fmt(c["p_value"]), fmt(c.get("p_holm")),
             "*" if c.get("significant") else (c.get("note") or "")] for c in comparisons]
    caption = (f"Paired Wilcoxon signed-rank tests on per-image scores, paired by (fold, case id), each image "
               f"averaged over seeds first. * = significant at {alpha} after Holm's correction within each "
               f"(dataset, metric) family.")
    return Table("Comparisons", headers, rows, caption)


def tables_of(result: dict[str, Any], compact: bool = False) -> list[Table]:
    tables = []
    for dataset in dict.fromkeys(r["dataset"] for r in result["configurations"]):
        tables.append(configuration_table([r for r in result["configurations"] if r["dataset"] == dataset], compact))
    if result["comparisons"]:
        tables.append(comparison_table(result["comparisons"], result["alpha"]))
    return tables


def to_rich(table: Table):
    from rich.table import Table as RichTable

    rich_table = RichTable(title=table.title, caption=table.caption, show_lines=False)
    for i, header in enumerate(table.headers):
        rich_table.add_column(header, justify="left" if i == 0 else "right", overflow="fold")
    for row in table.rows:
        rich_table.add_row(*row)
    return rich_table


def to_markdown(table: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"### {table.title}", "", "| " + " | ".join(map(esc, table.headers)) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in table.rows]
    return "\n".join(lines + ["", f"*{table.caption}*" if table.caption else "", ""])


def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in row])
    return buffer.getvalue().encode()


def report_csv(configurations: list[dict[str, Any]]) -> bytes:
    """One row per configuration, every number (blank = undefined / not applicable)."""
    metrics: list[str] = []
    for row in configurations:
        metrics += [m for m in row["metrics"] if m not in metrics]
    header = ["dataset", "label", "task", "real_per_batch", "synth_per_batch", "aug", "n_runs", "folds", "seeds",
              "n_images", "confusion_miou", "synth_use", "gan_alignment", "gan_fd", "stopped_early",
              "stopped_at_cap"]
    header += [f"{m}_{k}" for m in metrics for k in STAT_KEYS]
    rows = []
    for r in configurations:
        line = [r["dataset"], r["label"], r["task"], r["real_per_batch"], r["synth_per_batch"], r["aug"],
                r["n_runs"], ";".join(r["folds"]), ";".join(map(str, r["seeds"])), r["n_images"], r["confusion_miou"],
                r.get("synth_use", ""), r.get("gan_alignment"), r.get("gan_fd"),
                r.get("stops", {}).get("early"), r.get("stops", {}).get("cap")]
        line += [r["metrics"].get(m, {}).get(k) for m in metrics for k in STAT_KEYS]
        rows.append(line)
    return _csv_bytes(header, rows)


def comparisons_csv(comparisons: list[dict[str, Any]]) -> bytes:
    keys = ["dataset", "metric", "a", "b", "n", "median_diff", "mean_diff", "statistic", "p_value", "p_holm",
            "significant", "better", "note"]
    return _csv_bytes(keys, [[c.get(k) for k in keys] for c in comparisons])


def markdown(result: dict[str, Any]) -> str:
    n_runs = sum(r["n_runs"] for r in result["configurations"])
    parts = ["# segbench report", "", f"{n_runs} complete runs in {len(result['configurations'])} configurations; "
             f"{len(result['skipped'])} skipped.", ""]
    parts += [to_markdown(t) for t in tables_of(result)]
    if not result["comparisons"]:
        parts += ["No comparisons (no real-only no-aug baseline and none requested).", ""]
    figures = {k: v for k, v in result["files"].items() if k.endswith(".png")}
    if figures:
        parts += ["### Figures", ""] + [f"![{name}]({Path(path).name})" for name, path in figures.items()] + [""]
    notes = result["files"].get("notes", [])
    if notes or result["skipped"]:
        parts += ["### Skipped", ""] + [f"- `{s['run']}`: {s['reason']}" for s in result["skipped"]]
        parts += [f"- {note}" for note in notes] + [""]
    parts += ["### Runs", ""] + [f"- {r['label']}: " + ", ".join(f"`{p}`" for p in r["runs"])
                                 for r in result["configurations"]] + [""]
    return "\n".join(parts)


def write_tables(result: dict[str, Any], out: Path) -> dict[str, str]:
    """report.md, report.csv, comparisons.csv into `out` (atomically); returns name → path."""
    files = {name: out / name for name in ("report.csv", "comparisons.csv", "report.md")}
    atomic_write_bytes(files["report.csv"], report_csv(result["configurations"]))
    atomic_write_bytes(files["comparisons.csv"], comparisons_csv(result["comparisons"]))
    result["files"].update({k: str(v) for k, v in files.items()})
    atomic_write_bytes(files["report.md"], markdown(result).encode())
    return {k: str(v) for k, v in files.items()}


def _console(console):
    if console is None:
        import sys

        from rich.console import Console

        # piped or redirected output is read later in a file or log: don't squash tables to 80 columns
        console = Console() if sys.stdout.isatty() else Console(width=200)
    return console


def print_report(result: dict[str, Any], console=None) -> None:
    console = _console(console)
    for table in tables_of(result, compact=True):
        console.print(to_rich(table))
    for skipped in result["skipped"]:
        console.print(f"[yellow]skipped[/] {skipped['run']}: {skipped['reason']}", highlight=False)
    for note in result["files"].get("notes", []):
        console.print(f"[yellow]note[/] {note}", highlight=False)
    console.print(f"[green]✓[/] report in {result['out']}", highlight=False)


def print_summary(summary: dict[str, Any], title: str = "", console=None) -> None:
    """A summary.json (run or evaluation) as a metric table: mean, std, median, n, undefined."""
    console = _console(console)
    facts = [f"{k}={summary[k]}" for k in ("dataset", "fold_id", "real_per_batch", "synth_per_batch", "aug", "seed",
                                            "iterations", "best_iteration") if summary.get(k) is not None]
    for key, unit in (("best_val_loss", ""), ("wall_s", " s")):
        if isinstance(summary.get(key), (int, float)):
            facts.append(f"{key}={summary[key]:.4g}{unit}")
    table = Table(title or "summary", ["metric", "mean", "std", "median", "n", "undefined"], [], " ".join(facts))
    metrics = summary.get("metrics") or {}
    if any(m.startswith("miou") for m in metrics):
        # multi-class: per-class distances would bury the table; they stay in per_image.csv and summary.json
        metrics = {m: s for m, s in metrics.items() if m.startswith(("miou", "iou_", "dice_"))}
    px = summary.get("distance_unit") == "px"
    for metric, s in sorted(metrics.items(), key=lambda item: (not item[0].startswith("miou"), item[0])):
        name = metric_name(metric).replace("(mm)", "(px)") if px else metric_name(metric)
        table.rows.append([name, fmt(s.get("mean")), fmt(s.get("std")), fmt(s.get("median")),
                           str(s.get("n", "-")), str(s.get("n_undefined", "-"))])
    console.print(to_rich(table))
    confusion = summary.get("confusion")
    if isinstance(confusion, dict) and isinstance(confusion.get("iou_per_class"), dict):
        per_class = ", ".join(f"{k} {fmt(v, 3)}" for k, v in confusion["iou_per_class"].items())
        console.print(f"confusion-matrix IoU: {per_class}; mIoU {fmt(confusion.get('miou'))}", highlight=False)
