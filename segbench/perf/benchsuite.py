"""The benchmark suite behind scripts/bench.py: which workloads run at which sizes, the printed table, the JSON.

Workloads (each measured against its plain reference in the same run, interleaved round by round):
  gan-train (pairgen.perf.gan_bench), export (pairgen.perf.gan_bench), unet-train (segbench.perf.unet_bench; road scenes too at the thesis
  preset, since the thesis targets both U-Nets), pipeline (segbench.perf.unet_bench).
Sizes are per preset: enough work per call to swamp timer noise, few enough rounds that tiny + small finish in
a few minutes on 2 CPU cores and the thesis preset in under 5 minutes on one H100.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from pairgen.perf.timing import Record

# per preset: GAN window (iterations per timed call) and rounds; export n, reference n, rounds, samples per shard
# (at least 2 shards, so the writer thread overlaps as in a real export); U-Net steps and rounds; pipeline
# batches per call and rounds
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(gan=(5, 7), export=(8192, 128, 3, 4096), unet=(10, 9), pipeline=(500, 5)),
    "small": dict(gan=(2, 5), export=(2048, 48, 3, 1024), unet=(4, 7), pipeline=(500, 5)),
    "thesis": dict(gan=(20, 3), export=(20_000, 200, 2, 4096), unet=(30, 5), pipeline=(2000, 5)),
}
# gan-graph / unet-graph: the CUDA-graph ablations (CUDA only; no records on a CPU)
WORKLOADS = ("gan-train", "gan-graph", "export", "unet-train", "unet-graph", "pipeline")


def run_suite(device: torch.device, preset: str, dataset: str = "scr-lung", workloads: tuple[str, ...] = WORKLOADS,
              ablate: bool = False, workdir: Path | None = None, echo: Any = print,
              on_record: Any = None) -> list[Record]:
    """Run the chosen workloads at `preset` on `device`; `echo` gets one line per finished record and
    `on_record` (if given) the list of records so far, so a caller can save them before a time limit strikes."""
    from pairgen.perf.gan_bench import bench_export, bench_gan_graph, bench_gan_train
    from segbench.perf.unet_bench import bench_pipeline, bench_unet_graph, bench_unet_train

    sizes = SIZES[preset]
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="pairgen-bench-", dir=workdir) as tmp:
        work = Path(tmp)

        def add(measure: Any) -> None:
            # One failing workload (a CUDA-only path, say) must not cost the others' figures on a rented GPU:
            # print its traceback, record nothing for it, go on. The caller sees the failure in the output.
            # A measure returns one record, a list, or yields records one by one: each is printed and handed to
            # on_record as soon as it exists, so a time limit or a later failure keeps it.
            try:
                new = measure()
                for record in [new] if isinstance(new, Record) else new:
                    records.append(record)
                    echo(format_row(record))
                    if on_record is not None:
                        on_record(list(records))
            except Exception:  # noqa: BLE001 - reported in full below, never swallowed silently
                traceback.print_exc()
                echo(f"FAILED: {measure.__name__} ({preset}, {device})")

        if "gan-train" in workloads:
            def gan_train() -> Iterator[Record]:
                return bench_gan_train(dataset, preset, device, *sizes["gan"], work / "gan", ablate=ablate)
            add(gan_train)
        if "gan-graph" in workloads:
            def gan_graph() -> Iterator[Record]:
                return bench_gan_graph(dataset, preset, device, *sizes["gan"], work / "gan-graph")
            add(gan_graph)
        if "export" in workloads:
            def export() -> Record:
                n, n_ref, rounds, per_shard = sizes["export"]
                return bench_export(dataset, preset, device, n, n_ref, rounds, _mkdir(work / "export"),
                                    samples_per_shard=per_shard)
            add(export)
        unet_datasets = [dataset, "cityscapes"] if preset == "thesis" and dataset != "cityscapes" else [dataset]
        if "unet-train" in workloads:
            for name in unet_datasets:
                def unet_train(name: str = name) -> Iterator[Record]:
                    return bench_unet_train(name, preset, device, *sizes["unet"], ablate=ablate)
                add(unet_train)
        if "unet-graph" in workloads:
            for name in unet_datasets:
                def unet_graph(name: str = name) -> Iterator[Record]:
                    return bench_unet_graph(name, preset, device, *sizes["unet"])
                add(unet_graph)
        if "pipeline" in workloads:
            def pipeline() -> Record:
                return bench_pipeline(dataset, preset, device, *sizes["pipeline"], _mkdir(work / "pipeline"))
            add(pipeline)
    return records


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


HEADER = (f"{'workload':34s} {'preset':7s} {'device':7s} {'throughput':>16s} {'reference':>16s} {'ratio':>7s} "
          f"{'(quartiles)':>13s} {'TFLOP/s':>9s} {'of peak':>8s}")


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_row(record: Record) -> str:
    """One fixed-width line: workload, preset, device, throughput, reference, ratio, TFLOP/s, fraction of peak."""
    name = record.workload + (f" {record.extra['dataset']}" if record.workload == "unet-train" else "")
    fraction = "-" if record.fraction_of_peak is None else f"{100 * record.fraction_of_peak:.1f}%"
    quartiles = record.extra.get("ratio_quartiles")
    spread = f"({quartiles[0]:.2f}-{quartiles[1]:.2f})" if quartiles else "-"
    return (f"{name:34s} {record.preset:7s} {record.device:7s} {_num(record.throughput) + ' ' + record.unit:>16s} "
            f"{_num(record.reference_throughput):>16s} {_num(record.ratio_vs_reference, 2) + 'x':>7s} "
            f"{spread:>13s} {_num(record.tflops, 4):>9s} {fraction:>8s}")


def save_json(records: list[Record], path: Path) -> None:
    """Append-style history is the caller's business: this writes the JSON list of this run's records."""
    payload = [{**r.to_json(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")} for r in records]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
