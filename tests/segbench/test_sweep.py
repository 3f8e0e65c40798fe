"""segbench sweep: manifests, grid expansion, skip/resume and parallel execution with a stand-in run function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_json
from segbench import sweep as sweep_module
from segbench.evaluate import write_per_image_csv
from segbench.sweep import load_manifest, plan, slug, sweep

EXPERIMENTS = Path(__file__).resolve().parents[2] / "manifests" / "experiments"


def fake_run(config, workspace, out=None, resume=False, show_progress=True):
    """Stand-in for segbench.run.run: writes a complete run directory and logs the call (works across processes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_json())
    base = 0.5 + 0.01 * config.real_per_batch + 0.001 * config.seed
    rows = [{"case": f"c{i}", "dice": base + 0.01 * i, "hausdorff_mm": 2.0 - base} for i in range(4)]
    write_per_image_csv(rows, out / "per_image.csv")
    atomic_write_json(out / "summary.json", {**{k: config.to_json()[k] for k in (
        "dataset", "fold_id", "seed", "real_per_batch", "synth_per_batch", "aug")}, "complete": True, "metrics": {}})
    with open(Path(workspace) / "calls.jsonl", "a") as log:
        log.write(json.dumps({"out": str(out), "resume": resume, "device": config.device,
                              "synth_shards": config.synth_shards, "real_shards": config.real_shards}) + "\n")
    return out


def calls(ws: Path) -> list[dict]:
    path = ws / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_manifest(path: Path, body: str) -> Path:
    path.write_text('dataset = "shapes"\npreset = "tiny"\n' + body)
    return path


GRID = """folds = [1, 2]
seeds = [0, 1]
[[config]]
real = 4
aug = "none"
[[config]]
real = 4
aug = "flip"
"""


@pytest.fixture
def no_prepare(monkeypatch, tmp_path):
    """Real shards are pairgen's business: pretend they exist."""
    monkeypatch.setattr(sweep_module, "ensure_real", lambda m, fold, preset, ws: tmp_path / f"real{fold}")


def quiet() -> Console:
    import io

    return Console(file=io.StringIO(), width=200)


@pytest.mark.parametrize("name, rows, folds", [
    ("table5_1-scr-aug-search", 9, 1), ("table5_2-scr", 6, 3), ("table5_3-cityscapes-aug-search", 5, 1),
    ("table5_3-camvid-aug-search", 5, 1), ("table5_4-cityscapes", 6, 1), ("table5_4-camvid", 6, 1)])
def test_checked_in_manifests_expand_to_the_thesis_rows(tmp_path, name, rows, folds):
    m = load_manifest(EXPERIMENTS / f"{name}.toml")
    assert len(m.entries) == rows and len(m.folds) == folds and m.preset == "thesis"
    tasks = plan(m, tmp_path, m.preset)
    assert len(tasks) == rows * folds * len(m.seeds)
    assert len({t.run_dir for t in tasks}) == len(tasks)
    if name.startswith("table5_1"):
        assert all(e.real == 16 and e.synth == 0 for e in m.entries)
        assert all("elastic=10" in e.aug for e in m.entries[1:]) and m.entries[0].aug == "none"
    if name.startswith(("table5_2", "table5_4")):
        k = m.entries[0].real
        assert [e.label for e in m.entries] == [f"{k}-0-Aug", f"{k}-0-NoAug", f"{k // 2}-{k // 2}-Aug",
                                                f"{k // 2}-{k // 2}-NoAug", f"0-{k}-Aug", f"0-{k}-NoAug"]
        assert m.gan is not None and m.gan["iters"] == 10000


def test_grid_skip_and_resume(tmp_path, no_prepare):
    ws, manifest = tmp_path / "ws", write_manifest(tmp_path / "grid.toml", GRID)
    ws.mkdir()
    dirs = sweep(manifest, ws, run_fn=fake_run, console=quiet())
    assert len(dirs) == 2 * 2 * 2 and len(calls(ws)) == 8
    assert not any(c["resume"] for c in calls(ws))
    assert dirs[0] == ws / "shapes" / "fold1" / "seg" / "sweep-grid" / "4-0-NoAug-seed0"
    assert calls(ws)[0]["real_shards"] == str(tmp_path / "real1")
    report_md = (ws / "reports" / "grid" / "report.md").read_text()
    assert "4-0-NoAug" in report_md and "4-0-Aug" in report_md
    # second call: everything complete, nothing runs
    assert sweep(manifest, ws, run_fn=fake_run, console=quiet()) == dirs and len(calls(ws)) == 8
    # an interrupted run (summary complete=false) is resumed, and only that one
    summary = json.loads((dirs[3] / "summary.json").read_text())
    atomic_write_json(dirs[3] / "summary.json", {**summary, "complete": False})
    sweep(manifest, ws, run_fn=fake_run, console=quiet())
    assert len(calls(ws)) == 9 and calls(ws)[-1] == {**calls(ws)[-1], "out": str(dirs[3]), "resume": True}
    # dry run: lists, runs nothing
    assert sweep(manifest, ws, dry_run=True, run_fn=fake_run, console=quiet()) == dirs and len(calls(ws)) == 9


def test_an_interrupted_run_names_the_sweep_to_resume(tmp_path, no_prepare):
    """Ctrl-C in a sweep: the run saved its state (segbench.run raises Interrupted); the message says to rerun the
    sweep, which resumes that run and the ones after it, not the single run."""
    from pairgen.core.interrupt import Interrupted

    ws, manifest = tmp_path / "ws", write_manifest(tmp_path / "grid.toml", GRID)
    ws.mkdir()

    def interrupted_second_run(config, workspace, out=None, resume=False, show_progress=True):
        if len(calls(Path(workspace))) == 1:
            raise Interrupted(f"stopped at iteration 7; resume with: segbench run --resume --out {out}")
        return fake_run(config, workspace, out, resume, show_progress)

    with pytest.raises(Interrupted, match=rf"4-0-NoAug-seed1 saved its state; resume the sweep with: segbench sweep "
                                          rf"{manifest} --workspace {ws}$"):
        sweep(manifest, ws, run_fn=interrupted_second_run, console=quiet())
    assert len(calls(ws)) == 1   # nothing ran after the interrupt
    sweep(manifest, ws, run_fn=fake_run, console=quiet())
    assert len(calls(ws)) == 8


def test_only_preset_override_and_conflicts(tmp_path, no_prepare):
    ws, manifest = tmp_path / "ws", write_manifest(tmp_path / "grid.toml", GRID)
    ws.mkdir()
    dirs = sweep(manifest, ws, only="4-0-Aug", preset="small", run_fn=fake_run, console=quiet())
    assert len(dirs) == 4 and all(d.parent.name == "sweep-grid-small" and d.name.startswith("4-0-Aug") for d in dirs)
    assert (ws / "reports" / "grid-small" / "report.md").is_file()
    with pytest.raises(UserError, match="matches no configuration"):
        sweep(manifest, ws, only="8-8", run_fn=fake_run, console=quiet())
    # a run directory holding another configuration is never resumed into
    target = ws / "shapes" / "fold1" / "seg" / "sweep-grid" / "4-0-NoAug-seed0"
    target.mkdir(parents=True)
    atomic_write_json(target / "config.json", {"real_per_batch": 16, "aug": "none"})
    with pytest.raises(UserError, match="another configuration"):
        sweep(manifest, ws, run_fn=fake_run, console=quiet())


@pytest.mark.parametrize("body, message", [
    ("folds = [1]\n[[config]]\nreal = 4\nbogus = 1\n", "not SegConfig overrides"),
    ("folds = [1]\n[[config]]\nreal = 0\nsynth = 0\n", "real \\+ synth >= 1"),
    ("folds = [1]\n[[config]]\nreal = 4\naug = \"wobble=3\"\n", "wobble"),
    ("folds = [1]\n[[config]]\nreal = 4\n[[config]]\nreal = 4\n", "appear twice"),
    ("folds = []\n[[config]]\nreal = 4\n", "folds"),
    ("colour = 1\n[[config]]\nreal = 4\n", "unknown keys"),
    ("folds = [1]\n", "at least one"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        load_manifest(write_manifest(tmp_path / "bad.toml", body))


def test_synthetic_shards_wiring(tmp_path, no_prepare, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    body = "folds = [1]\n[gan]\nexport_n = 10\n[[config]]\nreal = 2\nsynth = 2\n[[config]]\nreal = 4\n"
    manifest = write_manifest(tmp_path / "mix.toml", body)
    trained = []
    monkeypatch.setattr(sweep_module, "ensure_generator", lambda m, fold, preset, ws: trained.append(fold) or
                        tmp_path / "ckpt.pt")
    monkeypatch.setattr(sweep_module, "ensure_export", lambda m, fold, ckpt, ws: tmp_path / f"synth-{ckpt.stem}")
    sweep(manifest, ws, run_fn=fake_run, console=quiet())
    by_dir = {Path(c["out"]).name: c for c in calls(ws)}
    assert by_dir["2-2-NoAug-seed0"]["synth_shards"] == str(tmp_path / "synth-ckpt")
    assert by_dir["4-0-NoAug-seed0"]["synth_shards"] is None and trained == [1]
    # without [gan]: the newest export of the fold is used, and its absence is a clear error
    bare = write_manifest(tmp_path / "bare.toml", "folds = [1]\n[[config]]\nreal = 2\nsynth = 2\n")
    with pytest.raises(UserError, match="no complete synthetic export"):
        sweep(bare, ws, run_fn=fake_run, console=quiet())
    export = ws / "shapes" / "fold1" / "synth" / "00000-x"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text("{}")
    sweep(bare, ws, run_fn=fake_run, console=quiet())
    assert calls(ws)[-1]["synth_shards"] == str(export)


def test_parallel_jobs(tmp_path, no_prepare):
    ws = tmp_path / "ws"
    ws.mkdir()
    manifest = write_manifest(tmp_path / "par.toml", "folds = [1]\nseeds = [0, 1]\n[[config]]\nreal = 4\n")
    dirs = sweep(manifest, ws, jobs=2, run_fn=fake_run, console=quiet())
    assert sorted(Path(c["out"]) for c in calls(ws)) == sorted(dirs)
    assert all((d / "summary.json").is_file() for d in dirs)


def test_slug():
    assert slug("16-0-shift=0.5,elastic=10") == "16-0-shift0.5_elastic10"
    assert slug("8-8-NoAug") == "8-8-NoAug"



def test_thesis_manifests_pin_scalar_masks_and_reuse_their_scalar_gan(tmp_path):
    """One-hot is the default for CamVid's 8 classes; table 5.4 pins the thesis' scalar channel, so the sweep
    resolves it to scalar and reuses a scalar GAN, which the same manifest without the pin (one-hot) does not."""
    from pairgen.train import resolve_training
    from segbench.sweep import _gan_config, _same_gan

    def resolved(m):
        return resolve_training(_gan_config(m, 1, m.preset))   # what ensure_generator compares and trains

    for name in ("table5_4-camvid", "table5_4-cityscapes", "cpu/table5_4-camvid", "cpu/synth-help-camvid-gan-thesis"):
        assert resolved(load_manifest(EXPERIMENTS / f"{name}.toml")).mask_encoding == "scalar", name
    assert resolved(load_manifest(EXPERIMENTS / "cpu" / "synth-help-camvid-gan-onehot.toml")).mask_encoding == "onehot"
    text = (EXPERIMENTS / "cpu" / "table5_4-camvid.toml").read_text()
    pin = next(line for line in text.splitlines() if line.startswith("mask_encoding"))
    assert pin.startswith('mask_encoding = "scalar"   # the thesis')
    pinned = load_manifest(EXPERIMENTS / "cpu" / "table5_4-camvid.toml")
    (tmp_path / "unpinned.toml").write_text(text.replace(pin + "\n", ""))
    unpinned = load_manifest(tmp_path / "unpinned.toml")
    assert "mask_encoding" not in unpinned.gan and resolved(unpinned).mask_encoding == "onehot"
    # a trained scalar GAN (that manifest's, from before) and a one-hot one: each manifest reuses its own
    from pairgen.checkpoint import checkpoint_path
    from segbench.sweep import ensure_generator

    ws, found = tmp_path / "ws", {}
    for number, m in enumerate((pinned, unpinned)):
        run = ws / "camvid" / "fold1" / "gan" / f"{number:05d}-small"
        found[resolved(m).mask_encoding] = checkpoint_path(run, resolved(m).iters)
        found[resolved(m).mask_encoding].parent.mkdir(parents=True)
        found[resolved(m).mask_encoding].touch()   # ensure_generator only asks whether the final one exists
        resolved(m).save(run / "config.json")
    assert _same_gan(run, resolved(unpinned)) and not _same_gan(run, resolved(pinned))
    assert ensure_generator(pinned, 1, pinned.preset, ws) == found["scalar"].resolve()
    assert ensure_generator(unpinned, 1, unpinned.preset, ws) == found["onehot"].resolve()


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.rglob("*.toml")), ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_checked_in_manifest_resolves(tmp_path, path):
    """A typo in a manifest (an unknown [seg] / [gan] key, a bad value) fails here, not an hour into a study: every
    run's SegConfig and the GAN config a sweep would train are built and validated, without any data."""
    from pairgen.presets import validate
    from segbench.presets import make_config as make_seg_config
    from segbench.sweep import _gan_config

    m = load_manifest(path)
    tasks = plan(m, tmp_path, m.preset)
    assert tasks and len({t.run_dir for t in tasks}) == len(tasks)
    for task in tasks:
        options = {**m.seg, **task.entry.overrides}
        config = make_seg_config(m.dataset, m.preset if m.preset != "auto" else "small", **options,
                                 real_per_batch=task.entry.real, synth_per_batch=task.entry.synth, aug=task.entry.aug)
        assert config.to_json()["select_by"] in ("loss", "score")
    if m.gan is not None:
        validate(_gan_config(m, m.folds[0], m.preset))
