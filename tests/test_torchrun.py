"""`pairgen train` and `pairgen export` under torchrun: 2 CPU processes (gloo), one run dir, one manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pairgen.checkpoint import load_checkpoint
from pairgen.verify import verify_directory


def torchrun(*args: str, workspace: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PAIRGEN_WORKSPACE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", *args, "--workspace", str(workspace)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where `pairgen train` (4 iterations) and `pairgen export` (100 pairs) ran under torchrun."""
    ws = tmp_path_factory.mktemp("torchrun") / "ws"
    torchrun("pairgen", "train", "--dataset", "shapes", "--preset", "tiny", "--iters", "4", "--device", "cpu",
             workspace=ws)
    # `--num-samples`: torchrun's own parser rejects `--n` (an ambiguous prefix of its --nnodes/--nproc…)
    torchrun("pairgen", "export", "--num-samples", "100", "--samples-per-shard", "16", "--block-size", "8",
             "--device", "cpu", workspace=ws)
    return ws


def test_train_under_torchrun(workspace: Path) -> None:
    runs = list((workspace / "shapes" / "fold1" / "gan").iterdir())
    assert [r.name for r in runs] == ["00000-tiny"]            # rank 0 alone numbered the run dir
    run = runs[0]
    ticks = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [t["step"] for t in ticks if t["event"] == "tick"] == [4]   # one writer: no duplicated lines
    state = load_checkpoint(run / "checkpoints" / "ckpt-0000004.pt")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # the two ranks drew different latents: their saved RNG streams differ
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])


def test_export_under_torchrun(workspace: Path) -> None:
    exports = list((workspace / "shapes" / "fold1" / "synth").iterdir())
    assert len(exports) == 1                                    # one output dir, created by rank 0
    out = exports[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_samples"] == 100 and len(manifest["shards"]) == 7
    indices = np.concatenate([_index(out / s["file"]) for s in manifest["shards"]])
    assert sorted(indices.tolist()) == list(range(100))        # 0…99, each exactly once
    assert verify_directory(out) == []


def test_segbench_run_under_torchrun(workspace: Path) -> None:
    torchrun("segbench", "run", "--real", "2", "--synth", "2", "--preset", "tiny", "--max-iters", "20",
             "--min-iters", "10", "--patience", "10", "--device", "cpu", workspace=workspace)
    runs = list((workspace / "shapes" / "fold1" / "seg").iterdir())
    assert [r.name for r in runs] == ["00000-2-2-NoAug"]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["complete"] is True and summary["iterations"] == 20
    lines = [json.loads(line) for line in (runs[0] / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [20]       # val_every 20 (tiny preset), rank 0 alone logs


def _index(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["sample_index"][:]
