"""pairgen train → export through a workspace with no paths (shapes, tiny): the shard contract; one-line errors.
The whole chain up to `segbench report` runs as the README writes it in test_readme.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest


def _cli(tool: str, *args: str, ws: Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAIRGEN_WORKSPACE": str(ws), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == expect, f"{tool} {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def chained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    _cli("pairgen", "train", "--dataset", "shapes", "--preset", "tiny", "--iters", "20", ws=ws)
    _cli("pairgen", "export", "--n", "200", "--samples-per-shard", "64", ws=ws)
    return ws


def test_export_satisfies_contract_with_plain_h5py(chained_workspace: Path) -> None:
    export_dir = next(chained_workspace.glob("shapes/fold1/synth/*"))
    manifest = json.loads((export_dir / "manifest.json").read_text())
    indices = []
    for entry in manifest["shards"]:
        with h5py.File(export_dir / entry["file"], "r") as h5:
            assert h5.attrs["kind"] == "synthetic" and h5.attrs["trained_fold"] == "fold1"
            assert h5["images"].dtype == np.uint8 and h5["images"].ndim == 4
            assert h5["masks_raw"].dtype == np.float16 and h5["latents"].dtype == np.float32
            n_classes = len(json.loads(h5.attrs["class_names"]))
            assert int(h5["masks"][:].max()) < n_classes
            indices.extend(h5["sample_index"][:].tolist())
    assert sorted(indices) == list(range(200))
    _cli("pairgen", "verify", str(export_dir), ws=chained_workspace)


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    proc = _cli("pairgen", "train", "--dataset", "scr-lung", "--root", str(tmp_path / "nowhere"),
                "--preset", "tiny", ws=tmp_path, expect=2)
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    proc = _cli("segbench", "run", "--real", "0", "--synth", "0", ws=tmp_path, expect=2)
    assert "Traceback" not in proc.stderr
    proc = _cli("pairgen", "verify", str(tmp_path), ws=tmp_path, expect=2)
    assert "manifest" in proc.stderr
    proc = _cli("segbench", "run", "--bogus", ws=tmp_path, expect=2)   # usage errors start alike too
    assert proc.stderr.startswith("error: No such option: --bogus") and "--help" in proc.stderr
    proc = _cli("pairgen", "train", "--preset", "Tiny", ws=tmp_path, expect=2)
    assert proc.stderr.strip() == "error: unknown preset 'Tiny'; choose one of tiny, small, thesis, auto"
