"""Quality chain on the embedded shapes dataset through both CLIs: train → export → score (GAN run and export,
per-pair quality written) → verify → a filtered segbench run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from tests.e2e.test_cli_chain import _cli


@pytest.mark.slow   # six CLI processes, ~30 s of CPU; tests/segbench/test_judge.py covers the same code in-process
def test_score_chain_on_shapes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _cli("pairgen", "train", "--dataset", "shapes", "--preset", "tiny", "--iters", "4", ws=ws)
    _cli("pairgen", "export", "--n", "48", "--samples-per-shard", "32", ws=ws)
    gan_run = next(ws.glob("shapes/fold1/gan/*"))
    export = next(ws.glob("shapes/fold1/synth/*"))
    proc = _cli("pairgen", "score", str(gan_run), "--n", "24", "--judge-preset", "tiny", "--judge-iters", "30",
                "--device", "cpu", ws=ws)
    assert "alignment" in proc.stdout and "precision" in proc.stdout
    figures = json.loads((gan_run / "score.json").read_text())
    assert figures["n_synthetic"] == 24 and figures["dataset"] == "shapes" and "scale" in figures
    _cli("segbench", "score", str(export), "--write-quality", "--device", "cpu", ws=ws)
    assert json.loads((export / "score.json").read_text())["judge"] == figures["judge"]   # the cached judge
    _cli("pairgen", "verify", str(export), ws=ws)
    with h5py.File(next(export.glob("shard-*.h5"))) as h5:
        assert h5.attrs["schema_version"] == 2 and h5["quality"].shape == (32,)
    _cli("segbench", "run", "--real", "2", "--synth", "2", "--synth-filter", "top=50%", "--preset", "tiny",
         "--max-iters", "4", "--min-iters", "2", "--patience", "2", "--synth-shards", str(export), ws=ws)
    runs = [json.loads((r / "config.json").read_text()) for r in ws.glob("shapes/fold1/seg/*-2-2-*")]
    assert [r["synth_filter"] for r in runs] == ["top=50%"]
