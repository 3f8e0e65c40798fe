"""segbench.perf.floors: floors from hand-made records and byte counts."""

from __future__ import annotations

import pytest

from segbench.perf.floors import floors, format_floors


def _record(workload: str, throughput: float, device: str = "cuda", dataset: str = "scr-lung") -> dict:
    return {"workload": workload, "device": device, "preset": "thesis", "throughput": throughput,
            "flops_per_unit": 1e12, "peak_tflops": 1000.0, "machine": "NVIDIA H200, torch 2.11.0+cu130",
            "extra": {"dataset": dataset, "batch_size": 16}}


def test_floor_of_a_record_by_hand() -> None:
    calls = []

    def bytes_for(workload: str, dataset: str, preset: str) -> float:
        calls.append((workload, dataset, preset))
        return 9.6e9

    records = [_record("unet-train", 100.0), _record("unet-train", 50.0), _record("unet-train", 100.0, "cpu"),
               _record("export", 1000.0), _record("gan-train", 10.0, dataset="cityscapes")]
    rows = floors(records, bytes_for)
    assert [(r.workload, r.dataset) for r in rows] == [("unet-train", "scr-lung")] * 2 + [("gan-train", "cityscapes")]
    first = rows[0]
    assert first.flop_floor_s == pytest.approx(1e-3)        # 1 TFLOP at 1000 TFLOP/s
    assert first.byte_floor_s == pytest.approx(2e-3)        # 9.6 GB at the H200's 4.8 TB/s
    assert first.measured_s == pytest.approx(1e-2)          # 100 it/s
    assert first.above_floor == pytest.approx(5.0)
    assert rows[1].above_floor == pytest.approx(10.0)
    assert calls == [("unet-train", "scr-lung", "thesis"), ("gan-train", "cityscapes", "thesis")]   # cached
    table = format_floors(rows)
    assert "2.00 ms" in table and "5.0×" in table and len(table.splitlines()) == 4
