"""`pairgen` command line: flags → config → one function call. No logic lives here.

User errors (pairgen.core.errors.UserError) print as one red line and exit 2; anything else is a bug and raises.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pairgen.core.cli import run_app
from pairgen.core.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn a GAN over image+mask pairs and export synthetic labeled pairs as HDF5 shards.")
console = Console(stderr=True)

WorkspaceOpt = typer.Option(None, "--workspace", help="Workspace dir (default $PAIRGEN_WORKSPACE or ./workspace).")
RootOpt = typer.Option(None, "--root", help="Dataset root (searched below; cityscapes also reads $CITYSCAPES_DATASET).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the resolved config (JSON) and exit; nothing is written.")
StructuresOpt = typer.Option(None, "--structures", "--classes",
                             help="scr-lung: comma list of SCR structures (default 'left lung'); "
                                  "folder: class names after background (--classes).")


def _structures(value: Optional[str]) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


@app.command()
def prepare(
    dataset: str = typer.Option("shapes", "--dataset", help="scr-lung | cityscapes | camvid | folder | shapes"),
    root: Optional[Path] = RootOpt,
    fold: int = typer.Option(1, "--fold", help="1-based fold of the dataset's split manifest."),
    preset: str = typer.Option("auto", "--preset", help="Training resolution of this preset (tiny | small | thesis | auto)."),
    height: Optional[int] = typer.Option(None, "--height", help="Override the preset's training height."),
    width: Optional[int] = typer.Option(None, "--width", help="Override the preset's training width."),
    structures: Optional[str] = StructuresOpt,
    train_fraction: float = typer.Option(1.0, "--train-fraction", help="Keep this seeded fraction of the train split."),
    check: bool = typer.Option(False, "--check", help="Only report every problem of the dataset tree; write nothing."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write train/val/test shard dirs here instead."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Resize a dataset to the training resolution and write real train/val/test shards."""
    from pairgen import prepare as prep
    from pairgen.presets import make_config
    from pairgen.core.workspace import workspace_root

    if check:
        problems = prep.check_dataset(dataset, str(root) if root else None, _structures(structures))
        for problem in problems:
            console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)  # one problem, one line
        if problems:
            raise UserError(f"{len(problems)} problem(s) found in the {dataset} tree")
        console.print(f"[green]✓[/] {dataset}: no problems found")
        return
    config = make_config(dataset, preset, height=height, width=width)
    path = prep.prepare(dataset, str(root) if root else None, fold, config.height, config.width,
                        _structures(structures), workspace_root(workspace), out, train_fraction)
    console.print(f"[green]✓[/] real shards in {path}")


@app.command()
def train(
    dataset: str = typer.Option("shapes", "--dataset", help="scr-lung | cityscapes | camvid | folder | shapes"),
    root: Optional[Path] = RootOpt,
    fold: int = typer.Option(1, "--fold"),
    preset: str = typer.Option("auto", "--preset", help="tiny | small | thesis (tables 4.1 / 4.3) | auto (thesis on CUDA, else small)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Generator iterations (preset default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    mask_encoding: Optional[str] = typer.Option(None, "--mask-encoding", help="scalar (thesis) | onehot | auto "
                                                "(default: onehot with more than one foreground class, else scalar)."),
    critic_norm: Optional[str] = typer.Option(None, "--critic-norm", help="layer (default) | batch (tables) | none"),
    diffaug: Optional[str] = typer.Option(None, "--diffaug", help="Pair-consistent DiffAugment of every critic "
                                          "input: comma list of color, translation, cutout ('' = off, default)."),
    diffaug_p: Optional[float] = typer.Option(None, "--diffaug-p", help="Probability that each --diffaug operation "
                                              "is applied to a sample (1 = always, default)."),
    ema_kimg: Optional[float] = typer.Option(None, "--ema-kimg", help="Generator weight average, half-life in "
                                             "thousands of images (0 = off, default); sample/export/score use it."),
    structures: Optional[str] = StructuresOpt,
    train_fraction: Optional[float] = typer.Option(None, "--train-fraction", help="Low-data: fraction of train."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    compile: bool = typer.Option(False, "--compile", help="Critic step through torch.func + torch.compile "
                                 "(compiles for a minute first; layer-norm critics only)."),
    cuda_graph: Optional[bool] = typer.Option(None, "--cuda-graph/--no-cuda-graph", help="Replay each iteration "
                                              "as one CUDA graph (CUDA, one process; default: the preset's)."),
    score_every: Optional[int] = typer.Option(None, "--score-every", help="Pair quality (judge U-Net alignment, "
                                              "Fréchet distance, …) every N iterations into log.jsonl and "
                                              "curves.png; checkpoints/best.pt kept (0 = off, default)."),
    score_n: Optional[int] = typer.Option(None, "--score-n", help="Pairs sampled per scoring (default 256)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its newest checkpoint."),
    dry_run: bool = DryRunOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Train the image+mask pair WGAN-GP (prepares the real shards first when needed)."""
    from pairgen.core import distributed
    from pairgen.presets import make_config
    from pairgen.train import launch, resolve_training
    from pairgen.core.workspace import workspace_root

    config = make_config(dataset, preset, root=str(root) if root else None, fold=fold, iters=iters,
                         batch_size=batch_size, mask_encoding=mask_encoding, critic_norm=critic_norm,
                         diffaug=diffaug, diffaug_p=diffaug_p, ema_kimg=ema_kimg, structures=_structures(structures) or None, train_fraction=train_fraction,
                         seed=seed, device=device, compile=compile or None,
                         cuda_graph=cuda_graph, score_every=score_every, score_n=score_n)
    if dry_run:
        typer.echo(resolve_training(config, resume).to_text())
        return
    ws = workspace_root(workspace)
    run_dir = launch(config, ws, resume, partial(_training_scorer, ws))  # joins torchrun's process group, if any
    if distributed.is_rank0():
        console.print(f"[green]✓[/] GAN run in {run_dir}")
    distributed.cleanup()


def _training_scorer(ws: Path, config, real: Path):
    """segbench's judge as `pairgen train --score-every`'s scorer (this CLI is the composition root: pairgen's
    modules never import segbench); finds or trains the judge now, before the GAN starts."""
    from segbench.judge import TrainingScorer

    scorer = TrainingScorer(ws, real, config, n=config.score_n, seed=config.seed, device=config.device)
    console.print(f"pairgen train: pair quality every {config.score_every} iterations by {scorer.describe()}",
                  highlight=False, soft_wrap=True)
    return scorer


MAX_SHEET_PAIRS = 1024


@app.command()
def sample(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Generator checkpoint (default: newest run)."),
    n: int = typer.Option(16, "--n", help="Number of pairs on the sheet."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("samples.png"), "--out", help="PNG sheet to write."),
    device: str = typer.Option("auto", "--device"),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Write a PNG sheet of generated pairs: image, raw mask, thresholded mask overlay."""
    from pairgen.checkpoint import load_generator
    from pairgen.core.devices import resolve_device
    from pairgen.export import resolve_checkpoint
    from pairgen.sheets import sample_sheet
    from pairgen.core.workspace import workspace_root

    if not 1 <= n <= MAX_SHEET_PAIRS:   # a sheet of 1e9 pairs was a MemoryError traceback
        raise UserError(f"--n {n}: a sample sheet shows 1..{MAX_SHEET_PAIRS} pairs (use `pairgen export` for more)")
    path = resolve_checkpoint(workspace_root(workspace), checkpoint)
    generator, config, _ = load_generator(path, device=resolve_device(device))
    sample_sheet(generator, config, n, seed, out, device=resolve_device(device))
    console.print(f"[green]✓[/] sample sheet {out}")


@app.command()
def export(
    n: int = typer.Option(1000, "--n", "--num-samples",
                          help="Number of synthetic pairs (under torchrun: --num-samples)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Generator checkpoint (default: newest run)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Pick the newest run of this dataset."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output shard dir (default: under the workspace)."),
    seed: int = typer.Option(0, "--seed", help="Sample i depends on (seed, i) only."),
    block_size: int = typer.Option(1024, "--block-size", help="Pairs generated per forward pass."),
    samples_per_shard: int = typer.Option(4096, "--samples-per-shard"),
    device: str = typer.Option("auto", "--device"),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted export into --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in --out."),
    writers: Optional[int] = typer.Option(None, "--writers", help="Shard compression threads per process "
                                          "(default: free cores, at most 8); the files do not depend on it."),
    judge: Optional[Path] = typer.Option(None, "--judge", help="Then score the export with this real-only "
                                         "segbench run, as `pairgen score EXPORT --judge RUN --write-quality`: "
                                         "per-pair quality into the shards, score.json beside them."),
    quality: bool = typer.Option(False, "--quality", help="Score it so with the fold's newest real-only run "
                                 "(trained on demand when there is none; implied by --judge)."),
    judge_preset: str = typer.Option("auto", "--judge-preset", help="Preset of a judge trained on demand."),
    judge_iters: Optional[int] = typer.Option(None, "--judge-iters", help="Cap a judge trained on demand."),
    dry_run: bool = DryRunOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Sample N pairs from a trained generator into synthetic shards + manifest.json (then score them: --judge)."""
    from pairgen.core import distributed
    from pairgen.export import export_config, run_export
    from pairgen.core.workspace import workspace_root

    if judge is not None and not judge.is_dir():   # before the export, not after it
        raise UserError(f"--judge {judge}: no such segbench run directory")
    ws = workspace_root(workspace)
    config = export_config(ws, checkpoint, dataset, out, n=n, seed=seed, block_size=block_size,
                           samples_per_shard=samples_per_shard, device=device, resume=resume, overwrite=overwrite,
                           writers=writers)
    if dry_run:
        typer.echo(config.to_text())
        return
    result = run_export(config, ws)   # joins torchrun's process group, if any
    if distributed.is_rank0():
        console.print(f"[green]✓[/] {n} synthetic pairs in {result}")
    distributed.cleanup()
    if (quality or judge is not None) and distributed.is_rank0():
        _score_export(result, ws, judge, judge_preset, judge_iters, device)


def _score_export(export: Path, ws: Path, judge: Optional[Path], judge_preset: str, judge_iters: Optional[int],
                  device: str) -> None:
    """`pairgen score EXPORT --write-quality` on a finished export: segbench's scorer, called once (this CLI is
    the composition root). The export is complete before it starts; if scoring fails, `pairgen score` redoes it."""
    from segbench.judge import print_score, score

    print_score(score(export, ws, judge=judge, judge_preset=judge_preset, judge_iters=judge_iters, device=device,
                      write_quality=True))   # the table on stdout, as `pairgen score` prints it


@app.command()
def verify(directory: Path = typer.Argument(..., help="Shard directory with a manifest.json.")) -> None:
    """Check a shard directory against its manifest and the schema; report every problem."""
    from pairgen.shards import read_manifest
    from pairgen.verify import verify_directory

    problems = verify_directory(directory)
    for problem in problems:
        console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)  # one problem, one line
    if problems:
        raise UserError(f"{len(problems)} problem(s) in {directory}")
    manifest = read_manifest(directory)
    console.print(f"[green]✓[/] {directory}: {len(manifest.shards)} shard(s), {manifest.n} samples, all valid")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def score(ctx: typer.Context) -> None:
    """Pair quality → score.json: alignment, Fréchet distance, KID, precision/recall (`segbench score`; --help)."""
    # pairgen reaches into segbench only here in the CLI, the composition root (docs/ARCHITECTURE.md), so the
    # command is segbench's own, options and all; pairgen's modules never import segbench.
    from segbench.cli import app as segbench_app

    segbench_app(["score", *ctx.args], prog_name="pairgen")


def main() -> None:
    run_app(app, console)


if __name__ == "__main__":
    main()
