"""Floors of the measured GPU workloads (scripts/floors.py; docs/PERFORMANCE.md): per unit of work, the FLOPs
(pairgen.perf.timing, analytic) over the card's peak and the eager bytes (pairgen.perf.traffic, counted) over its memory
bandwidth, beside the measured time. A step can take no less than the larger of the two; how far above it a
figure lies is what launches and kernel efficiency cost, which tells where an optimisation can pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from pairgen.perf.traffic import gpu_bandwidth


@dataclass(frozen=True)
class Floor:
    """One measured record against its floors; times in seconds per unit (iteration or step)."""

    workload: str
    dataset: str
    batch_size: int
    flops: float            # per unit
    bytes: float            # per unit, eager kernels
    flop_floor_s: float
    byte_floor_s: float
    measured_s: float
    machine: str

    @property
    def above_floor(self) -> float:
        """measured / max(floors): 1 = at the floor."""
        return self.measured_s / max(self.flop_floor_s, self.byte_floor_s)


def _bytes_for(workload: str, dataset: str, preset: str) -> float | None:
    """Eager bytes per unit of a workload record, or None for workloads without a step model here."""
    if workload == "gan-train":
        from pairgen.perf.gan_bench import bench_config, gan_iteration_bytes

        return gan_iteration_bytes(bench_config(dataset, preset, torch.device("cpu")))
    if workload == "unet-train":
        from segbench.perf.unet_bench import unet_step_bytes

        return unet_step_bytes(dataset, preset)
    return None


def floors(records: list[dict[str, Any]], bytes_for: Callable[[str, str, str], float | None] = _bytes_for
           ) -> list[Floor]:
    """Floor rows for the GPU training records (gan-train, unet-train) in a scripts/bench.py JSON list; the
    bytes of a (workload, dataset, preset) are counted once (minutes on a CPU for the thesis GAN)."""
    cache: dict[tuple[str, str, str], float | None] = {}
    rows = []
    for record in records:
        extra = record.get("extra", {})
        bandwidth = gpu_bandwidth(record.get("machine", ""))
        if record.get("device") != "cuda" or not bandwidth or not record.get("flops_per_unit") \
                or not record.get("peak_tflops") or record["workload"] not in ("gan-train", "unet-train"):
            continue
        key = (record["workload"], extra.get("dataset", "scr-lung"), record["preset"])
        if key not in cache:
            cache[key] = bytes_for(*key)
        if cache[key] is None:
            continue
        rows.append(Floor(record["workload"], key[1], int(extra.get("batch_size", 0)), record["flops_per_unit"],
                          cache[key], record["flops_per_unit"] / (record["peak_tflops"] * 1e12),
                          cache[key] / bandwidth, 1.0 / record["throughput"], record["machine"]))
    return rows


def format_floors(rows: list[Floor]) -> str:
    """A fixed-width table, one line per record."""
    lines = [f"{'workload':12s} {'dataset':11s} {'batch':>5s} {'TFLOP':>7s} {'GB':>7s} {'FLOP floor':>11s} "
             f"{'byte floor':>11s} {'measured':>9s} {'× floor':>8s}  machine"]
    for row in rows:
        lines.append(f"{row.workload:12s} {row.dataset:11s} {row.batch_size:5d} {row.flops / 1e12:7.3f} "
                     f"{row.bytes / 1e9:7.2f} {1e3 * row.flop_floor_s:8.2f} ms {1e3 * row.byte_floor_s:8.2f} ms "
                     f"{1e3 * row.measured_s:6.1f} ms {row.above_floor:7.1f}×  {row.machine}")
    return "\n".join(lines)
