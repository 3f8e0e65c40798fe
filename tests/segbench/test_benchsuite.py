"""The benchmark suite's bookkeeping (the measurements themselves are benchmarks, not tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pairgen.perf.gan_bench
import segbench.perf.unet_bench
from pairgen.perf.timing import Record
from segbench.perf import benchsuite


def _record(workload: str, throughput: float) -> Record:
    return Record(workload=workload, device="cpu", preset="tiny", throughput=throughput, unit="it/s",
                  reference_throughput=throughput / 2, ratio_vs_reference=2.0, tflops=None,
                  extra={"dataset": "scr-lung"})


def test_failing_workload_keeps_the_others_and_saves_as_it_goes(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a CUDA-only path broke")

    monkeypatch.setattr(pairgen.perf.gan_bench, "bench_gan_train", broken)
    monkeypatch.setattr(pairgen.perf.gan_bench, "bench_export", lambda *a, **k: _record("export", 8.0))
    monkeypatch.setattr(segbench.perf.unet_bench, "bench_unet_train", lambda *a, **k: [_record("unet-train", 3.0)])
    monkeypatch.setattr(segbench.perf.unet_bench, "bench_pipeline", lambda *a, **k: _record("pipeline", 5.0))
    lines: list[str] = []
    saved: list[list[str]] = []

    def save(so_far: list[Record]) -> None:
        benchsuite.save_json(so_far, tmp_path / "bench.json")
        saved.append([r.workload for r in so_far])

    records = benchsuite.run_suite(torch.device("cpu"), "tiny", echo=lines.append, on_record=save,
                                   workdir=tmp_path)
    assert [r.workload for r in records] == ["export", "unet-train", "pipeline"]
    assert lines[0].startswith("FAILED: gan_train")
    assert saved == [["export"], ["export", "unet-train"], ["export", "unet-train", "pipeline"]]
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert [r["workload"] for r in on_disk] == ["export", "unet-train", "pipeline"]
    assert on_disk[2]["throughput"] == 5.0 and on_disk[2]["ratio_vs_reference"] == 2.0


def test_a_record_yielded_before_a_failure_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pairgen.perf.gan_bench

    def half_done(*args, **kwargs):
        yield _record("gan-train", 4.0)
        raise RuntimeError("the CUDA-graph ablation broke")

    monkeypatch.setattr(pairgen.perf.gan_bench, "bench_gan_train", half_done)
    lines: list[str] = []
    records = benchsuite.run_suite(torch.device("cpu"), "tiny", workloads=("gan-train",), echo=lines.append,
                                   on_record=lambda so_far: benchsuite.save_json(so_far, tmp_path / "b.json"),
                                   workdir=tmp_path)
    assert [r.workload for r in records] == ["gan-train"]
    assert lines[-1] == "FAILED: gan_train (tiny, cpu)" and lines[0].startswith("gan-train")
    assert [r["workload"] for r in json.loads((tmp_path / "b.json").read_text())] == ["gan-train"]
