"""segbench report: numbers against hand-built per-image CSVs, outputs, figures, skipped runs."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as scipy_stats

from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_json
from segbench.evaluate import write_per_image_csv
from segbench.metrics import summarize
from segbench.presets import SegConfig
from segbench.report import config_label, holm, parse_comparisons, print_run_summary, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CAMVID_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def make_run(path: Path, values: dict[str, list[float]], *, dataset: str = "scr-lung", fold: str = "fold1",
             seed: int = 0, real: int = 16, synth: int = 0, aug: str = "none", complete: bool = True,
             predictions: bool = False, cases: list[str] | None = None, stopped_early: bool | None = None,
             iterations: int = 100, summary_fields: dict | None = None) -> Path:
    """A finished-looking run directory: config.json, per_image.csv, summary.json (+ predictions.npz);
    `summary_fields` are added to summary.json."""
    path.mkdir(parents=True)
    n = len(next(iter(values.values())))
    cases = cases or [f"case{i:03d}" for i in range(n)]
    rows = [{"case": c, **{m: v[i] for m, v in values.items()}} for i, c in enumerate(cases)]
    config = SegConfig(dataset=dataset, fold_id=fold, real_per_batch=real, synth_per_batch=synth, aug=aug, seed=seed)
    atomic_write_json(path / "config.json", config.to_json())
    write_per_image_csv(rows, path / "per_image.csv")
    summary = {"label": path.name, "dataset": dataset, "fold_id": fold, "seed": seed, "real_per_batch": real,
               "synth_per_batch": synth, "aug": aug, "iterations": iterations, "best_iteration": 80, "best_val_loss": 0.1,
               "wall_s": 3.0, "metrics": summarize([{k: v for k, v in r.items() if k != "case"} for r in rows]),
               "complete": complete, **({} if stopped_early is None else {"stopped_early": stopped_early}),
               **(summary_fields or {})}
    (path / "summary.json").write_text(json.dumps(summary).replace("NaN", "null"))
    if predictions:
        rng = np.random.default_rng(seed + real)
        n_classes = 2 if "dice" in values else len(CAMVID_CLASSES) + 1
        mask = rng.integers(0, n_classes, (n, 8, 16)).astype(np.uint8)
        np.savez(path / "predictions.npz", case_id=np.array(cases), image=rng.integers(0, 255, (n, 8, 16, 3), np.uint8),
                 mask=mask, pred=np.where(rng.random(mask.shape) < 0.8, mask, 0).astype(np.uint8))
    return path


def binary(dice: list[float], hd: list[float] | None = None) -> dict[str, list[float]]:
    hd = hd or [1.0 + d for d in dice]
    return {"dice": dice, "iou": [d / (2 - d) for d in dice], "hausdorff_mm": hd, "hd95_mm": hd,
            "assd_mm": [h / 4 for h in hd]}


def row_of(result: dict, label: str) -> dict:
    return next(r for r in result["configurations"] if r["label"] == label)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_fold_mean_of_means_and_pooled_std(tmp_path):
    f1, f2 = [0.9, 0.8], [0.7, 0.6, 0.5]
    make_run(tmp_path / "runs" / "a1", binary(f1), fold="fold1")
    make_run(tmp_path / "runs" / "a2", binary(f2), fold="fold2")
    result = report([tmp_path / "runs"], out=tmp_path / "rep", console=quiet())
    dice = row_of(result, "16-0-NoAug")["metrics"]["dice"]
    assert dice["mean"] == pytest.approx((np.mean(f1) + np.mean(f2)) / 2)
    assert dice["std"] == pytest.approx(np.std(f1 + f2, ddof=1))
    assert dice["per_fold"] == pytest.approx({"fold1": 0.85, "fold2": 0.6})
    assert dice["n"] == 5 and dice["n_undefined"] == 0 and math.isnan(dice["seed_std"])
    assert row_of(result, "16-0-NoAug")["n_images"] == 5


def test_seed_aggregation_ci_and_undefined(tmp_path):
    s0, s1 = [0.90, 0.80, 0.70, 0.60], [0.92, 0.84, 0.66, 0.58]
    hd0 = [1.0, float("nan"), 2.0, 3.0]
    make_run(tmp_path / "r" / "s0", binary(s0, hd0), seed=0, aug="thesis-lung")
    make_run(tmp_path / "r" / "s1", binary(s1), seed=1, aug="thesis-lung")
    result = report([tmp_path / "r" / "s0", tmp_path / "r" / "s1"], out=tmp_path / "rep", console=quiet())
    row = row_of(result, "16-0-Aug")
    dice = row["metrics"]["dice"]
    assert dice["mean"] == pytest.approx((np.mean(s0) + np.mean(s1)) / 2)
    assert dice["seed_std"] == pytest.approx(np.std([np.mean(s0), np.mean(s1)], ddof=1))
    assert dice["std"] == pytest.approx((np.std(s0, ddof=1) + np.std(s1, ddof=1)) / 2)
    assert dice["ci_low"] <= dice["mean"] <= dice["ci_high"] and dice["ci_low"] < dice["ci_high"]
    hd = row["metrics"]["hausdorff_mm"]
    assert hd["n_undefined"] == 1 and hd["n"] == 7
    assert hd["mean"] == pytest.approx((np.mean([1.0, 2.0, 3.0]) + np.mean([1 + d for d in s1])) / 2)
    assert row["aug_column"] == "yes" and row["n_images"] == 4 and row["seeds"] == [0, 1]


def test_wilcoxon_matches_scipy_on_seed_averaged_pairs(tmp_path):
    rng = np.random.default_rng(3)
    base = {f: rng.uniform(0.8, 0.95, 9).tolist() for f in ("fold1", "fold2")}
    mixed = {(f, s): rng.uniform(0.8, 0.97, 9).tolist() for f in base for s in (0, 1)}
    for f in base:
        make_run(tmp_path / "r" / f"base-{f}", binary(base[f]), fold=f)
        for s in (0, 1):
            make_run(tmp_path / "r" / f"mix-{f}-{s}", binary(mixed[(f, s)]), fold=f, seed=s, real=8, synth=8)
    result = report([tmp_path / "r"], out=tmp_path / "rep", compare=[("8-8-NoAug", "16-0-NoAug")],
                    metrics=["dice"], console=quiet())
    (comparison,) = result["comparisons"]
    a = np.concatenate([(np.array(mixed[(f, 0)]) + np.array(mixed[(f, 1)])) / 2 for f in base])
    b = np.concatenate([base[f] for f in base])
    assert comparison["n"] == 18
    assert comparison["p_value"] == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue)
    assert comparison["median_diff"] == pytest.approx(np.median(a - b))
    assert comparison["better"] == ("8-8-NoAug" if np.median(a - b) > 0 else "16-0-NoAug")
    assert comparison["p_holm"] == pytest.approx(comparison["p_value"])  # a family of one
    # default comparisons: every configuration vs the real-only no-aug baseline
    default = report([tmp_path / "r"], out=tmp_path / "rep2", console=quiet())
    assert {(c["a"], c["b"]) for c in default["comparisons"]} == {("8-8-NoAug", "16-0-NoAug")}
    assert {c["metric"] for c in default["comparisons"]} == {"dice", "hausdorff_mm", "hd95_mm", "assd_mm"}


def test_holm_and_labels():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, float("nan")])[1])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert config_label(8, 8, "none") == "8-8-NoAug" and config_label(8, 0, "flip") == "8-0-Aug"
    assert config_label(16, 0, "elastic=10", by_spec=True) == "16-0-elastic=10"
    assert parse_comparisons(["8-8-NoAug:16-0-NoAug"]) == [("8-8-NoAug", "16-0-NoAug")]
    with pytest.raises(UserError):
        parse_comparisons(["8-8-NoAug"])


def test_outputs_markdown_csv_and_skips(tmp_path):
    make_run(tmp_path / "r" / "base", binary([0.9, 0.8, 0.85]), predictions=True)
    make_run(tmp_path / "r" / "mix", binary([0.91, 0.82, 0.8]), real=8, synth=8, predictions=True)
    make_run(tmp_path / "r" / "broken", binary([0.5, 0.5, 0.5]), real=0, synth=16, complete=False)
    unfinished = tmp_path / "r" / "unfinished"
    unfinished.mkdir()
    atomic_write_json(unfinished / "config.json", SegConfig(dataset="scr-lung").to_json())
    console = Console(file=io.StringIO(), width=250)
    result = report([tmp_path / "r"], console=console)
    out = tmp_path / "r" / "report"   # default: <common parent of the runs>/report
    assert result["out"] == str(out)
    assert {Path(s["run"]).name for s in result["skipped"]} == {"broken", "unfinished"}
    assert [r["label"] for r in result["configurations"]] == ["16-0-NoAug", "8-8-NoAug"]
    md = (out / "report.md").read_text()
    assert "| 16-0-NoAug | 16 | 0 | no |" in md and "Dice mean" in md and "Holm" in md and "broken" in md
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [r["label"] for r in rows] == ["16-0-NoAug", "8-8-NoAug"]
    assert float(rows[0]["dice_mean"]) == pytest.approx(0.85) and rows[0]["dice_n_undefined"] == "0"
    comparisons = list(csv.DictReader(open(out / "comparisons.csv")))
    assert {(c["a"], c["b"]) for c in comparisons} == {("8-8-NoAug", "16-0-NoAug")}
    saved = json.loads((out / "report.json").read_text())
    assert saved["configurations"][0]["metrics"]["dice"]["mean"] == pytest.approx(0.85)
    assert (out / "qualitative.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "per_category.png").read_bytes()[:8] == PNG_MAGIC   # binary task: the class's Dice and IoU
    text = console.file.getvalue()
    assert "16-0-NoAug" in text and "skipped" in text
    with pytest.raises(UserError, match="known"):
        report([tmp_path / "r"], out=tmp_path / "x", compare=[("8-8-NoAug", "nope")], console=quiet())
    with pytest.raises(UserError, match="metric"):
        report([tmp_path / "r"], out=tmp_path / "x", metrics=["nope"], console=quiet())


def test_multiclass_table_and_figures(tmp_path):
    rng = np.random.default_rng(0)
    for real, synth, aug in ((8, 0, "thesis-cityscapes"), (8, 0, "none"), (4, 4, "none"), (0, 8, "none"),
                             (4, 4, "thesis-cityscapes")):
        values = {f"iou_{c}": rng.uniform(0.3, 0.9, 5).tolist() for c in CAMVID_CLASSES}
        values["iou_human"][0] = float("nan")   # class absent from gt and pred: undefined
        values["miou"] = np.nanmean([values[f"iou_{c}"] for c in CAMVID_CLASSES], axis=0).tolist()
        values["miou_excl_human_object"] = np.nanmean([values[f"iou_{c}"] for c in CAMVID_CLASSES
                                                       if c not in ("human", "object")], axis=0).tolist()
        make_run(tmp_path / "r" / f"{real}-{synth}-{aug}", values, dataset="camvid", real=real, synth=synth, aug=aug,
                 predictions=True)
    result = report([tmp_path / "r"], out=tmp_path / "rep", console=quiet())
    labels = [r["label"] for r in result["configurations"]]
    assert labels == ["8-0-Aug", "8-0-NoAug", "4-4-Aug", "4-4-NoAug", "0-8-NoAug"]
    row = row_of(result, "4-4-NoAug")
    assert row["task"] == "multiclass" and row["metrics"]["iou_human"]["n_undefined"] == 1
    assert set(row["metrics"]) >= {"miou", "miou_excl_human_object", "iou_vehicle"}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "mIoU excl. human & object mean" in md and "IoU vehicle mean" in md
    for name in ("per_category.png", "qualitative.png"):
        data = (tmp_path / "rep" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_spec_labels_and_errors(tmp_path):
    make_run(tmp_path / "r" / "a", binary([0.9, 0.8]), aug="elastic=10")
    make_run(tmp_path / "r" / "b", binary([0.9, 0.7]), aug="shift=0.5,elastic=10")
    make_run(tmp_path / "r" / "c", binary([0.9, 0.6]))
    result = report([tmp_path / "r"], out=tmp_path / "rep", console=quiet(),
                    order=["16-0-NoAug", "16-0-elastic=10", "16-0-shift=0.5,elastic=10"])
    assert [r["label"] for r in result["configurations"]] == ["16-0-NoAug", "16-0-elastic=10",
                                                             "16-0-shift=0.5,elastic=10"]
    assert row_of(result, "16-0-elastic=10")["aug_column"] == "elastic=10"
    with pytest.raises(UserError, match="no such"):
        report([tmp_path / "missing"], console=quiet())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no complete runs"):
        report([tmp_path / "empty"], console=quiet())


def test_print_run_summary(tmp_path):
    run = make_run(tmp_path / "run", binary([0.9, 0.8]))
    console = Console(file=io.StringIO(), width=200)
    print_run_summary(run, console=console)
    text = console.file.getvalue()
    assert "Dice" in text and "0.8500" in text and "best_iteration=80" in text
    with pytest.raises(UserError):
        print_run_summary(tmp_path, console=console)


def test_presets_and_low_data_fractions_are_never_pooled(tmp_path):
    make_run(tmp_path / "r" / "full", binary([0.9, 0.8, 0.7]))
    make_run(tmp_path / "r" / "frac", binary([0.8, 0.7, 0.5]), fold="fold1-frac10")
    result = report([tmp_path / "r"], out=tmp_path / "rep", console=quiet())
    labels = {r["label"]: r for r in result["configurations"]}
    assert set(labels) == {"16-0-NoAug@tiny", "16-0-NoAug@tiny-frac10"}
    assert labels["16-0-NoAug@tiny-frac10"]["metrics"]["dice"]["mean"] == pytest.approx(2 / 3)
    # same test images (fold1): an explicit comparison pairs them
    compared = report([tmp_path / "r"], out=tmp_path / "rep2", metrics=["dice"], console=quiet(),
                      compare=[("16-0-NoAug@tiny-frac10", "16-0-NoAug@tiny")])
    assert compared["comparisons"][0]["n"] == 3
    assert compared["comparisons"][0]["mean_diff"] == pytest.approx(-0.4 / 3)


def test_qualitative_shows_the_worst_configuration_too():
    from types import SimpleNamespace

    from segbench.figures import _pick_configs

    ranked = [SimpleNamespace(real=r, synth=m) for r, m in ((8, 8), (16, 0), (4, 4), (0, 16))]   # best first
    assert _pick_configs(ranked) == [ranked[0], ranked[1], ranked[3]]
    assert _pick_configs(ranked[:2]) == ranked[:2]


def test_one_colour_map_for_every_figure():
    from matplotlib.colors import to_rgb

    from pairgen.core.colors import class_colors
    from pairgen.datasets.cityscapes import CATEGORIES
    from segbench.figures import _mask_cmap

    colours = class_colors(CATEGORIES)
    assert colours[0].tolist() == [0, 0, 0] and colours[CATEGORIES.index("flat")].tolist() == [128, 64, 128]
    assert len({tuple(c) for c in colours.tolist()}) == len(CATEGORIES)   # distinguishable
    assert class_colors(["background", "left lung"])[1].tolist() == [230, 25, 75]
    cmap = _mask_cmap(list(CATEGORIES))
    np.testing.assert_allclose([to_rgb(cmap(i)) for i in range(len(CATEGORIES))], colours / 255)


def test_stop_reasons_counted_and_shown(tmp_path):
    make_run(tmp_path / "r" / "s0", binary([0.9, 0.8]), seed=0, stopped_early=True, iterations=650)
    make_run(tmp_path / "r" / "s1", binary([0.9, 0.7]), seed=1, stopped_early=False, iterations=3000)
    make_run(tmp_path / "r" / "s2", binary([0.8, 0.7]), seed=2, stopped_early=True, iterations=900)
    make_run(tmp_path / "r" / "old", binary([0.8, 0.7]), real=8, synth=8)   # a summary from before the field
    result = report([tmp_path / "r"], out=tmp_path / "rep", console=quiet())
    stops = row_of(result, "16-0-NoAug")["stops"]
    assert (stops["early"], stops["cap"], stops["unknown"]) == (2, 1, 0)
    assert [(r["seed"], r["reason"], r["iterations"]) for r in stops["runs"]] == [
        (0, "early", 650), (1, "cap", 3000), (2, "early", 900)]
    assert row_of(result, "8-8-NoAug")["stops"]["unknown"] == 1
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "stopped" in md and "early 2/3 (it 650-3000)" in md and "unknown (it 100)" in md
    rows = {r["label"]: r for r in csv.DictReader(open(tmp_path / "rep" / "report.csv"))}
    assert (rows["16-0-NoAug"]["stopped_early"], rows["16-0-NoAug"]["stopped_at_cap"]) == ("2", "1")


def test_stopped_cell_and_records_say_what_selected_the_kept_net(tmp_path):
    score = {"select_by": "score", "best_val_score": 0.875}
    for seed, its in enumerate((475, 775, 600)):   # selected by score, all stopped early
        make_run(tmp_path / "r" / f"s{seed}", binary([0.9, 0.8]), seed=seed, stopped_early=True, iterations=its,
                 summary_fields=score)
    make_run(tmp_path / "r" / "mixed0", binary([0.9, 0.8]), real=8, synth=8, stopped_early=True, summary_fields=score)
    make_run(tmp_path / "r" / "mixed1", binary([0.9, 0.8]), real=8, synth=8, seed=1, stopped_early=False,
             summary_fields={"select_by": "loss", "best_val_score": 0.5})
    make_run(tmp_path / "r" / "old", binary([0.8, 0.7]), real=4, synth=12, stopped_early=True)   # before the fields
    result = report([tmp_path / "r"], out=tmp_path / "rep", console=quiet())
    runs = row_of(result, "16-0-NoAug")["stops"]["runs"]
    assert [(r["select_by"], r["best_val_score"]) for r in runs] == [("score", 0.875)] * 3
    assert [(r["select_by"], r["best_val_score"]) for r in row_of(result, "4-12-NoAug")["stops"]["runs"]] == [
        ("loss", None)]
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["select_by"] for c in saved["configurations"] for r in c["stops"]["runs"]].count("score") == 4
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "early 3/3 (it 475-775, by score)" in md
    assert "early 1/2 (it 100, by score 1/2)" in md
    assert "early 1/1 (it 100)" in md and "early 1/1 (it 100, by" not in md
