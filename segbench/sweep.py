"""`segbench sweep`: run an experiment grid (manifests/experiments/*.toml) of configurations × folds × seeds.

Every run has a fixed directory, <ws>/<dataset>/<fold_id>/seg/sweep-<stem>[-<preset>]/<label>-seed<S>/, so a
second call skips runs whose summary.json says complete=true and resumes the others; the report over the grid
goes to <ws>/reports/<stem>[-<preset>]/. docs/REPORTS.md describes the manifest format.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pairgen.core.errors import UserError
from pairgen.core.interrupt import Interrupted
from pairgen.core.workspace import workspace_flag
from segbench.report import config_label, is_noaug
from segbench.rundir import RunDir

TOP_KEYS = {"title", "description", "dataset", "root", "preset", "folds", "seeds", "train_fraction", "structures",
            "seg", "gan", "config"}
GRID_KEYS = {"dataset", "fold_id", "seed", "real_per_batch", "synth_per_batch", "aug", "preset"}


@dataclass(frozen=True)
class Entry:
    label: str
    real: int
    synth: int
    aug: str                              # canonical spec string (str(parse_spec(...)))
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    dataset: str
    preset: str
    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    entries: tuple[Entry, ...]
    root: str | None = None
    train_fraction: float = 1.0
    structures: tuple[str, ...] = ()
    seg: dict[str, Any] = field(default_factory=dict)
    gan: dict[str, Any] | None = None
    title: str = ""

    def fold_id(self, fold: int) -> str:
        from pairgen.core.workspace import fold_id

        return fold_id(fold, self.train_fraction)


@dataclass
class Task:
    entry: Entry
    fold: int
    seed: int
    run_dir: Path
    status: str                           # 'complete' | 'resume' | 'new'


def _ints(value: Any, what: str, path: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v >= 0 for v in value):
        raise UserError(f"{path}: {what} must be a non-empty list of integers >= 0")
    return tuple(value)


def _synth_use(real: int, synth: int, overrides: dict[str, Any]) -> str:
    """The label tag of a [[config]]'s synth_filter / synth_weight / pretrain_iters (SegConfig.synth_use), so a
    sweep's labels are the report's."""
    from segbench.presets import SegConfig

    keys = ("synth_filter", "synth_weight", "pretrain_iters")
    return SegConfig(real_per_batch=real, synth_per_batch=synth,
                     **{k: overrides[k] for k in keys if k in overrides}).synth_use


def load_manifest(path: Path) -> Manifest:
    """Parse and validate an experiment grid; every problem is a one-line UserError naming the file."""
    from segbench.augment import parse_spec
    from segbench.presets import SegConfig

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: unreadable experiment manifest ({exc})") from None
    if unknown := set(data) - TOP_KEYS:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    if not isinstance(data.get("dataset"), str) or not isinstance(data.get("config"), list) or not data["config"]:
        raise UserError(f"{path}: needs dataset = \"...\" and at least one [[config]] table")
    fields = {f for f in SegConfig.__dataclass_fields__}
    entries: list[tuple[int, int, str, str | None, dict[str, Any]]] = []
    for i, raw in enumerate(data["config"], start=1):
        raw = dict(raw)
        real, synth, label = raw.pop("real", None), raw.pop("synth", 0), raw.pop("label", None)
        aug = str(parse_spec(str(raw.pop("aug", "none"))))
        if not isinstance(real, int) or not isinstance(synth, int) or real < 0 or synth < 0 or real + synth < 1:
            raise UserError(f"{path}: [[config]] #{i}: real and synth must be integers >= 0 with real + synth >= 1")
        if bad := (set(raw) - fields) | (set(raw) & GRID_KEYS):
            raise UserError(f"{path}: [[config]] #{i}: keys {sorted(bad)} are not SegConfig overrides")
        entries.append((real, synth, aug, label, raw))
    by_spec = len({aug for _, _, aug, _, _ in entries if not is_noaug(aug)}) > 1
    built = tuple(Entry(label or config_label(r, s, a, by_spec, _synth_use(r, s, {**data.get("seg", {}), **o})),
                        r, s, a, o) for r, s, a, label, o in entries)
    labels = [e.label for e in built]
    if duplicates := sorted({x for x in labels if labels.count(x) > 1}):
        raise UserError(f"{path}: configurations {duplicates} appear twice")
    seg = dict(data.get("seg", {}))
    if bad := (set(seg) - fields) | (set(seg) & GRID_KEYS):
        raise UserError(f"{path}: [seg] keys {sorted(bad)} are not SegConfig overrides")
    root = data.get("root")
    if root is not None and not Path(root).is_absolute():
        root = str((path.parent / root).resolve())   # relative to the manifest, not to the caller's cwd
    return Manifest(path=path, dataset=data["dataset"], preset=str(data.get("preset", "small")),
                    folds=_ints(data.get("folds", [1]), "folds", path),
                    seeds=_ints(data.get("seeds", [0]), "seeds", path),
                    entries=built, root=root, train_fraction=float(data.get("train_fraction", 1.0)),
                    structures=tuple(data.get("structures", ())), seg=seg, gan=data.get("gan"),
                    title=str(data.get("title", "")))


def slug(label: str) -> str:
    """Directory-safe label: '16-0-shift=0.5,elastic=10' → '16-0-shift0.5_elastic10'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label.replace("=", "").replace(",", "_"))


def plan(m: Manifest, ws: Path, preset: str, only: str | None = None) -> list[Task]:
    """The grid: folds × configurations × seeds, each with its fixed run directory and status."""
    entries = list(m.entries)
    if only:
        wanted = [w.strip() for w in only.split(",") if w.strip()]
        entries = [e for e in entries if any(w in e.label or fnmatch.fnmatchcase(e.label, w) for w in wanted)]
        if not entries:
            labels = ", ".join(e.label for e in m.entries)
            raise UserError(f"--only {only!r} matches no configuration; labels: {labels}")
    name = f"sweep-{m.path.stem}" + ("" if preset == m.preset else f"-{preset}")
    tasks = []
    for fold in m.folds:
        for entry in entries:
            for seed in m.seeds:
                run_dir = ws / m.dataset / m.fold_id(fold) / "seg" / name / f"{slug(entry.label)}-seed{seed}"
                tasks.append(Task(entry, fold, seed, run_dir, RunDir(run_dir).status()))
    return tasks


def _gan_config(m: Manifest, fold: int, preset: str):
    from pairgen.presets import make_config

    options = dict(m.gan or {})
    options.pop("export_n", None)
    gan_preset = options.pop("preset", preset)
    if preset != m.preset:   # a --preset override also replaces the manifest's thesis-scale GAN schedule
        gan_preset, options = preset, {k: v for k, v in options.items() if k != "iters"}
    return make_config(m.dataset, gan_preset, root=m.root, fold=fold, structures=m.structures or None,
                       train_fraction=m.train_fraction, **options)


def ensure_real(m: Manifest, fold: int, preset: str, ws: Path) -> Path:
    """Real train/val/test shards at the preset's resolution (pairgen.prepare returns at once when present)."""
    from pairgen.prepare import prepare

    gan = _gan_config(m, fold, preset)
    return prepare(m.dataset, gan.root, fold, gan.height, gan.width, structures=m.structures, workspace=ws,
                   train_fraction=m.train_fraction)


def _same_gan(run: Path, config) -> bool:
    """The run trains the generator `config` describes, for as many iterations (a manifest may override any
    field in [gan]): equal but for GANConfig.EXECUTION_FIELDS other than iters, and the DATA_FIELDS."""
    from pairgen.presets import GANConfig

    saved = GANConfig.load(run / "config.json")
    return saved.iters == config.iters and not saved.differences(config, ignore=GANConfig.DATA_FIELDS)


def ensure_generator(m: Manifest, fold: int, preset: str, ws: Path) -> Path:
    """The final checkpoint of a fully trained GAN for this fold: reuses, resumes or trains one."""
    from pairgen.core import workspace as layout
    from pairgen.checkpoint import checkpoint_path
    from pairgen.train import launch, resolve_training

    config = resolve_training(_gan_config(m, fold, preset))   # as a run's config.json holds it: mask_encoding resolved
    same = [r for r in layout.gan_runs(ws, m.dataset, m.fold_id(fold)) if _same_gan(r, config)]
    done = [r for r in same if checkpoint_path(r, config.iters).is_file()]
    run = done[-1] if done else launch(config, ws, same[-1] if same else None)
    checkpoint = checkpoint_path(run, config.iters).resolve()
    if not checkpoint.is_file():
        raise UserError(f"{run}: GAN training ended without {checkpoint.name}")
    return checkpoint


def ensure_export(m: Manifest, fold: int, checkpoint: Path, ws: Path) -> Path:
    """A complete export of `checkpoint` with at least [gan] export_n pairs: reuses, resumes or writes one."""
    from pairgen.core import workspace as layout
    from pairgen.export import default_export_dir, export
    from pairgen.shards import read_manifest

    n = int((m.gan or {}).get("export_n", 10000))
    for directory in layout.exports(ws, m.dataset, m.fold_id(fold)):
        attrs = read_manifest(directory).attrs
        if attrs.get("checkpoint") == str(checkpoint) and int(attrs.get("n_expected", 0)) >= n:
            return directory
    parent = layout.fold_dir(ws, m.dataset, m.fold_id(fold)) / "synth"
    run_name = checkpoint.parent.parent.name
    unfinished = [d for d in sorted(parent.glob(f"*-{run_name}")) if not (d / "manifest.json").exists()]
    out = unfinished[-1] if unfinished else default_export_dir(ws, checkpoint)
    return export(checkpoint, out, n, resume=bool(unfinished))


def _uses_synth(m: Manifest, entry: Entry) -> bool:
    """The row draws synthetic pairs: M > 0, or synthetic pre-training (pretrain_iters) before a real-only mix."""
    return entry.synth > 0 or int({**m.seg, **entry.overrides}.get("pretrain_iters", 0)) > 0


def _source(m: Manifest, entry: Entry) -> str:
    return str({**m.seg, **entry.overrides}.get("synth_source", "shards"))


def seg_config(m: Manifest, task: Task, preset: str, real: Path | None, synth: Path | None,
               checkpoint: Path | None):
    """The SegConfig of one grid cell; explicit shard/checkpoint paths so run() never has to guess."""
    from segbench.presets import make_config

    options = {**m.seg, **task.entry.overrides}
    if _uses_synth(m, task.entry) and synth is not None and _source(m, task.entry) == "shards":
        options.setdefault("synth_shards", str(synth))
    if _uses_synth(m, task.entry) and checkpoint is not None and _source(m, task.entry) == "generator":
        options.setdefault("checkpoint", str(checkpoint))
    return make_config(m.dataset, preset, fold_id=m.fold_id(task.fold), real_per_batch=task.entry.real,
                       synth_per_batch=task.entry.synth, aug=task.entry.aug, seed=task.seed,
                       real_shards=str(real) if real else None, **options)


def _print_plan(tasks: list[Task], console) -> None:
    from rich.table import Table

    table = Table(title=f"{len(tasks)} runs")
    for column in ("configuration", "fold", "seed", "status", "run directory"):
        table.add_column(column)
    for t in tasks:
        table.add_row(t.entry.label, str(t.fold), str(t.seed), t.status, str(t.run_dir))
    console.print(table)


# ------------------------------------------------------------------------------------------ parallel workers
_WORKER_DEVICE: str | None = None


def _init_worker(devices, threads: int | None) -> None:
    """Each worker process takes one GPU for its lifetime (or a share of the CPU threads)."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if threads:
        # before torch is imported in this process, so its intra-op pool starts at this size
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)


def _work(run_fn: Callable, config_json: dict[str, Any], ws: str, run_dir: str, resume: bool) -> str:
    from dataclasses import replace

    from segbench.presets import SegConfig

    config = SegConfig.from_json(config_json)
    if _WORKER_DEVICE and config.device == "auto":
        config = replace(config, device=_WORKER_DEVICE)
    return str(run_fn(config, Path(ws), out=Path(run_dir), resume=resume, show_progress=False))


def _run_parallel(jobs: int, work: list[tuple[Task, Any]], run_fn: Callable, ws: Path, console) -> list[str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        pass
    context = multiprocessing.get_context("spawn")   # CUDA cannot be used in forked children
    devices = context.Queue()
    for i in range(jobs):
        devices.put(f"cuda:{i % gpus}" if gpus else None)
    # the CPU share matters on GPUs too: evaluation (upsampling, distances) runs on the CPU cores
    threads = max(1, (os.cpu_count() or 1) // jobs)
    failures = []
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(devices, threads)) as pool:
        futures = {pool.submit(_work, run_fn, config.to_json(), str(ws), str(t.run_dir), t.run_dir.exists()): t
                   for t, config in work}
        for future in as_completed(futures):
            task = futures[future]
            try:
                future.result()
                console.print(f"[green]✓[/] {task.entry.label} fold {task.fold} seed {task.seed}", highlight=False)
            except Exception as exc:  # one failed run must not lose the others' results
                failures.append(f"{task.run_dir}: {exc}")
                console.print(f"[red]✗[/] {task.run_dir}: {exc}", highlight=False)
    return failures


def sweep(manifest: Path, workspace: Path | None = None, jobs: int = 1, dry_run: bool = False,
          only: str | None = None, preset: str | None = None, root: str | None = None,
          run_fn: Callable | None = None, console=None) -> list[Path]:
    """Run the grid of `manifest` (skipping complete runs, resuming the others), then report; returns run dirs.

    preset overrides the manifest's (e.g. 'small' on CPU) and then also replaces its GAN schedule; only keeps
    configurations whose label contains one of its comma-separated parts (or matches it as a glob);
    jobs > 1 runs independent cells in that many processes (one GPU each when CUDA devices exist);
    run_fn stands in for segbench.run.run (tests).
    """
    from dataclasses import replace

    from pairgen.core.workspace import newest_export, workspace_root

    if console is None:
        from rich.console import Console

        console = Console()
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, not {jobs}")
    m = load_manifest(manifest)
    if root is not None:
        m = replace(m, root=str(Path(root).resolve()))
    preset = preset or m.preset
    ws = workspace_root(workspace)
    tasks = plan(m, ws, preset, only)
    console.print(f"[bold]{m.title or m.path.stem}[/]: {len(tasks)} runs, "
                  f"{sum(t.status == 'complete' for t in tasks)} complete", highlight=False)
    if dry_run:
        _print_plan(tasks, console)
        return [t.run_dir for t in tasks]
    if run_fn is None:
        from segbench.run import run as run_fn
    work = []
    for fold in m.folds:
        pending = [t for t in tasks if t.fold == fold and t.status != "complete"]
        if not pending:
            continue
        real = ensure_real(m, fold, preset, ws)
        synthetic = [t for t in pending if _uses_synth(m, t.entry)]
        checkpoint = ensure_generator(m, fold, preset, ws) if synthetic and m.gan is not None else None
        export = None
        if any(_source(m, t.entry) == "shards" for t in synthetic):
            # without a [gan] section: the newest complete export of this dataset and fold
            export = (ensure_export(m, fold, checkpoint, ws) if checkpoint
                      else newest_export(ws, m.dataset, m.fold_id(fold)))
        for task in pending:
            config = seg_config(m, task, preset, real, export, checkpoint)
            if task.status == "resume":   # never resume a directory of another configuration (e.g. preset)
                from segbench.run import check_same_run

                check_same_run(RunDir(task.run_dir), config)
            work.append((task, config))
    failures: list[str] = []
    if jobs == 1 or len(work) <= 1:
        for i, (task, config) in enumerate(work, start=1):
            verb = "resume" if task.status == "resume" else "run"
            console.print(f"[{i}/{len(work)}] {verb} {task.entry.label} fold {task.fold} seed {task.seed}",
                          highlight=False)
            try:
                # resume=True on an existing dir: run() continues it, or starts afresh when it holds no config.json
                run_fn(config, ws, out=task.run_dir, resume=task.run_dir.exists(), show_progress=True)
            except Interrupted as exc:   # the run saved its state; rerunning the sweep resumes it and the rest
                raise Interrupted(f"{task.run_dir} saved its state; resume the sweep with: segbench sweep "
                                  f"{manifest}{workspace_flag(ws)}") from exc
            except (UserError, RuntimeError, ValueError, OSError) as exc:
                failures.append(f"{task.run_dir}: {exc}")
                console.print(f"[red]✗[/] {task.run_dir}: {exc}", highlight=False)
    else:
        failures = _run_parallel(jobs, work, run_fn, ws, console)
    finished = [t.run_dir for t in plan(m, ws, preset) if t.status == "complete"]
    if finished:
        from segbench.report import report

        suffix = "" if preset == m.preset else f"-{preset}"
        report(finished, out=ws / "reports" / f"{m.path.stem}{suffix}", console=console,
               order=[e.label for e in m.entries])
    if failures:
        raise UserError(f"{len(failures)} of {len(work)} runs failed; first: {failures[0]}")
    return [t.run_dir for t in tasks]

