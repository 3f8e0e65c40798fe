"""`segbench` command line: flags → config → one function call. No logic lives here.

User errors print as one red line and exit 2; anything else is a bug and raises.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from pairgen.core.cli import run_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train U-Nets on any mix of real and synthetic pairs; evaluate and report like the thesis.")
# piped or redirected output is read later in a file or log: don't squash the tables to 80 columns
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True)

WorkspaceOpt = typer.Option(None, "--workspace", help="Workspace dir (default $PAIRGEN_WORKSPACE or ./workspace).")


@app.command()
def run(
    real: int = typer.Option(4, "--real", help="Real pairs in every minibatch (K)."),
    synth: int = typer.Option(4, "--synth", help="Synthetic pairs in every minibatch (M)."),
    aug: str = typer.Option("none", "--aug", help="none | thesis-lung (SCR lung) | thesis-cityscapes or flip "
                            "(road scenes, shapes) | a comma list, e.g. flip,shift=0.05 (docs/AUGMENTATION.md). "
                            "Ops a dataset declares unsafe (flip on scr-lung) are refused."),
    allow_unsafe_aug: bool = typer.Option(False, "--allow-unsafe-aug",
                                          help="Use an augmentation the dataset declares unsafe, on purpose."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Default: the dataset of the newest export."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Default: the fold of the newest export."),
    real_shards: Optional[Path] = typer.Option(None, "--real-shards", help="Dir holding train/ val/ test/ real shards."),
    synth_shards: Optional[Path] = typer.Option(None, "--synth-shards", help="Synthetic shard dir (default: newest)."),
    synth_source: str = typer.Option("shards", "--synth-source", help="shards | generator (fresh samples per batch)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Generator for --synth-source generator."),
    synth_filter: Optional[str] = typer.Option(None, "--synth-filter", help="Keep synthetic pairs by their "
                                               "per-pair quality: q>=0.8 | top=75% (needs scored shards)."),
    synth_weight: Optional[float] = typer.Option(None, "--synth-weight", help="Loss weight of each synthetic row "
                                                 "relative to a real one (default 1: every pixel the same)."),
    pretrain_synth: Optional[int] = typer.Option(None, "--pretrain-synth", help="First train N iterations on "
                                                 "synthetic pairs only, then on the --real/--synth mix "
                                                 "(early stopping counts from there)."),
    preset: str = typer.Option("auto", "--preset", help="tiny | small | thesis | auto (the GAN run's preset)."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters"),
    min_iters: Optional[int] = typer.Option(None, "--min-iters", help="Early stopping: train at least this long."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: iterations after the last minimum."),
    select_by: Optional[str] = typer.Option(None, "--select-by", help="Keep the net and stop by the validation "
                                            "loss (default, thesis) or score (Dice / mIoU; for synthetic-only "
                                            "training)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph/--no-cuda-graph",
                                    help="Replay each training step as one CUDA graph (CUDA, single process)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: under the workspace)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last state."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config (JSON) and exit; nothing is "
                                 "written."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Train and evaluate one U-Net on K real + M synthetic pairs per minibatch."""
    from pairgen.core import distributed
    from pairgen.core.workspace import workspace_root
    from segbench.report import print_run_summary
    from segbench.run import command_config, execute

    ws = workspace_root(workspace)
    config = command_config(ws, out, resume, preset=preset, dataset=dataset, fold=fold, real_per_batch=real,
                            synth_per_batch=synth, aug=aug, real_shards=real_shards, synth_shards=synth_shards,
                            synth_source=synth_source, checkpoint=checkpoint, synth_filter=synth_filter,
                            synth_weight=synth_weight, pretrain_iters=pretrain_synth,
                            allow_unsafe_aug=allow_unsafe_aug or None,
                            max_iters=max_iters,
                            min_iters=min_iters, patience=patience, select_by=select_by, seed=seed, device=device,
                            cuda_graph=cuda_graph)
    if dry_run:
        typer.echo(config.to_text())
        return
    run_dir = execute(config, ws, out, resume)   # joins torchrun's process group, if any
    if distributed.is_rank0():
        print_run_summary(run_dir, console=console)
        console.print(f"[green]✓[/] run directory {run_dir}")
    distributed.cleanup()


@app.command()
def score(
    target: Path = typer.Argument(..., help="GAN run directory, checkpoint file, or synthetic export directory."),
    n: int = typer.Option(256, "--n", help="Pairs sampled from a GAN (an export is scored whole)."),
    seed: int = typer.Option(0, "--seed", help="Latents z_i from (seed, i), as `pairgen export`."),
    judge: Optional[Path] = typer.Option(None, "--judge", help="Real-only segbench run to judge with (default: "
                                         "the fold's newest one; trained on demand when there is none)."),
    judge_preset: str = typer.Option("auto", "--judge-preset", help="Preset of a judge trained on demand."),
    judge_iters: Optional[int] = typer.Option(None, "--judge-iters", help="Cap a judge trained on demand."),
    real_shards: Optional[Path] = typer.Option(None, "--real-shards", help="Dir holding train/ val/ test/."),
    write_quality: bool = typer.Option(False, "--write-quality", help="Store per-pair alignment in the export's "
                                       "shards (the `quality` dataset that --synth-filter reads)."),
    out: Optional[Path] = typer.Option(None, "--out", help="score.json path or folder (default: the target's)."),
    device: str = typer.Option("auto", "--device"),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Pair quality: alignment (judge U-Net vs generated masks), Fréchet distance, KID, precision/recall."""
    from pairgen.core.workspace import workspace_root
    from segbench.judge import print_score, score as score_pairs

    result = score_pairs(target, workspace_root(workspace), n=n, seed=seed, judge=judge, judge_preset=judge_preset,
                         judge_iters=judge_iters, real_shards=real_shards, device=device,
                         write_quality=write_quality, out=out)
    print_score(result, console=console)


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="Run directories (or folders holding them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where report.md/.csv/.json and figures go."),
    compare: Optional[List[str]] = typer.Option(None, "--compare", help="Paired test A:B by label, e.g. 8-8-NoAug:16-0-NoAug."),
) -> None:
    """Thesis-style tables (tables 5.2 / 5.4) with bootstrap CIs and paired Wilcoxon tests; figures."""
    from segbench.report import parse_comparisons, report as make_report

    # no --compare: None, so report() runs its default comparisons (each configuration vs its baseline)
    make_report(runs, out, parse_comparisons(compare) if compare else None, console=console)


@app.command()
def sweep(
    manifest: Path = typer.Argument(..., help="Experiment grid, e.g. manifests/experiments/table5_2-scr.toml"),
    preset: Optional[str] = typer.Option(None, "--preset", help="Override the manifest's preset (e.g. small on CPU)."),
    jobs: int = typer.Option(1, "--jobs", help="Independent runs in parallel (one per GPU on CUDA)."),
    only: Optional[str] = typer.Option(None, "--only", help="Run only configurations whose label contains this."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and whether they are complete."),
    root: Optional[str] = typer.Option(None, "--root", help="Dataset root (overrides the manifest's root)."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Run a grid of configurations × folds × seeds (skipping complete runs), then report."""
    from pairgen.core.workspace import workspace_root
    from segbench.sweep import sweep as run_sweep

    run_sweep(manifest, workspace_root(workspace), jobs=jobs, dry_run=dry_run, only=only, preset=preset, root=root)


@app.command()
def predict(
    run_dir: Path = typer.Option(..., "--run", help="A finished segbench run directory (weights.pt)."),
    images: Path = typer.Option(..., "--images", help="Folder of images (PNG, JPEG, GIF)."),
    out: Path = typer.Option(..., "--out", help="Folder for predicted masks (PNG, class ids)."),
    device: str = typer.Option("auto", "--device"),
    like: Optional[Path] = typer.Option(None, "--like", help="Folder of ground-truth masks: write each mask at the "
                                        "size of the one with the same stem (the grid the run scores at)."),
) -> None:
    """Predict masks for any folder of images, at each image's own resolution (or --like's)."""
    from segbench.predict import predict_folder

    count = predict_folder(run_dir, images, out, device=device, like=like)
    console.print(f"[green]✓[/] {count} masks in {out}")


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted masks (PNG/GIF), matched by file stem."),
    gt: Path = typer.Option(..., "--gt", help="Folder of ground-truth masks (PNG/GIF)."),
    spacing: Optional[str] = typer.Option(None, "--spacing", help="Pixel spacing in mm: 'S' or 'ROW,COL'."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma list of class names, background first "
                                          "(default: those `segbench predict` recorded in --pred)."),
    out: Path = typer.Option(Path("evaluation"), "--out", help="Where per_image.csv and summary.json go."),
    metrics: str = typer.Option("all", "--metrics", help="all | overlap (Dice, IoU, mIoU; no distance metrics)."),
    void: str = typer.Option("auto", "--void", help="ignore | count predictions on void (class 0) ground truth; "
                             "auto: ignore for Cityscapes/CamVid runs (from --pred's classes.json)."),
) -> None:
    """Score any folder of predicted masks against ground truth with segbench's metrics."""
    from segbench.evaluate import evaluate_folders, parse_spacing
    from segbench.report import print_summary

    class_names = [c.strip() for c in classes.split(",")] if classes else None
    summary = evaluate_folders(pred, gt, parse_spacing(spacing), class_names, out, metrics=metrics, void=void)
    print_summary(summary, title=f"{pred} vs {gt}", console=console)
    console.print(f"[green]✓[/] per_image.csv and summary.json in {out}")


@app.command()
def ceiling(
    test_dir: Path = typer.Argument(..., help="A real test shard directory "
                                    "(workspace/<dataset>/<fold>/real/<h>x<w>/test)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where per_image.csv and summary.json go."),
) -> None:
    """Score the ground truth at the training resolution as a prediction: the best any run at it can do."""
    from segbench.ceiling import resolution_ceiling
    from segbench.report import print_summary

    summary = resolution_ceiling(test_dir, out)
    print_summary(summary, title=f"resolution ceiling at {summary['training_resolution']}: {test_dir}",
                  console=console)
    if out is not None:
        console.print(f"[green]✓[/] per_image.csv and summary.json in {out}")


def main() -> None:
    run_app(app, err_console)


if __name__ == "__main__":
    main()
