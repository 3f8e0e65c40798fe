"""Promise 11: absurd sizes fail in one line before any work. Counts that cannot fit the disk or memory
(`export --n`, `--samples-per-shard`, `segbench run --real/--synth`) and files declaring impossible values
(weights.pt metadata, summary.json fields) are refused up front instead of a MemoryError, a traceback, or hours
of writing into a disk that cannot hold the result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pairgen.core.errors import UserError
from tests.pairgen.test_export import make_checkpoint
from tests.segbench.test_predict import make_run
from tests.segbench.test_run import make_workspace, quick


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ws") / "scr-lung" / "fold1" / "gan" / "00000-tiny")


@pytest.mark.parametrize("n", [10 ** 9, 2 ** 62])
def test_an_export_larger_than_the_free_disk_is_refused(checkpoint: Path, tmp_path: Path, n: int) -> None:
    from pairgen.export import export

    with pytest.raises(UserError, match=rf"--n {n}: needs about .* free"):
        export(checkpoint, tmp_path / "out", n, device="cpu", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_a_shard_larger_than_memory_is_refused(checkpoint: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pairgen.export import export

    monkeypatch.setattr("pairgen.core.limits.available_memory", lambda: 10 << 20)   # 10 MB left
    with pytest.raises(UserError, match="--samples-per-shard 100000: needs about .* of memory"):
        export(checkpoint, tmp_path / "out", 100_000, samples_per_shard=100_000, device="cpu", show_progress=False)
    export(checkpoint, tmp_path / "small", 8, samples_per_shard=4, device="cpu", show_progress=False)   # fits


def test_segbench_run_refuses_a_batch_that_cannot_fit(tmp_path: Path) -> None:
    from segbench.run import run

    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(UserError, match="--real 10000000 --synth 0 .*needs about"):
        run(quick(real_per_batch=10 ** 7, synth_per_batch=0), ws, show_progress=False)
    assert not (ws / "test-discs" / "fold1" / "seg").exists()


@pytest.mark.parametrize("key, value", [("height", -32), ("width", 10 ** 9), ("n_classes", 0),
                                        ("class_names", ["background"])])
def test_weights_metadata_out_of_range_is_one_line(tmp_path: Path, key: str, value) -> None:
    from PIL import Image

    from segbench.predict import predict_folder

    run_dir = make_run(tmp_path / "run")
    payload = torch.load(run_dir / "weights.pt", weights_only=True)
    payload["meta"][key] = value
    torch.save(payload, run_dir / "weights.pt")
    (tmp_path / "images").mkdir()
    Image.new("L", (20, 20)).save(tmp_path / "images" / "a.png")
    with pytest.raises(UserError, match=f"weights.pt: not a segbench weights file .*{key}"):
        predict_folder(run_dir, tmp_path / "images", tmp_path / "out", device="cpu")


@pytest.mark.parametrize("seed", ["abc", 1.5, None, -1, [1]])
def test_report_skips_a_run_with_a_malformed_seed(tmp_path: Path, seed) -> None:
    from segbench.report import find_runs
    from segbench.run import run

    ws = make_workspace(tmp_path / "ws")
    good = run(quick(), ws, out=tmp_path / "good", show_progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    summary = json.loads((bad / "summary.json").read_text())
    summary["seed"] = seed
    (bad / "summary.json").write_text(json.dumps(summary))
    config = json.loads((bad / "config.json").read_text())
    config["seed"] = seed
    (bad / "config.json").write_text(json.dumps(config))
    runs, skipped = find_runs([tmp_path])
    assert [r.path for r in runs] == [good]
    if seed is not None:   # null: no seed recorded, read as 0 (the default), a duplicate of the good run
        assert any(s["run"] == str(bad) and "seed" in s["reason"] for s in skipped), skipped


def test_a_sample_sheet_of_a_billion_pairs_is_one_line() -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "pairgen", "sample", "--n", "1000000000"], capture_output=True,
                          text=True, timeout=120, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --n 1000000000: a sample sheet shows 1..1024 pairs (use `pairgen export` for more)")
