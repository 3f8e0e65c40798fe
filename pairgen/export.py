"""`pairgen export`: sample a trained generator into synthetic shards (pairgen.shards schema), resumably.

Layout: shard k holds global indices [k·S, (k+1)·S) ∩ [0, n) (S = samples_per_shard), so every shard's content is
fixed by (checkpoint, seed, n, S) alone. Sample i's latent comes from pairgen.sampling.latents (seed and i only);
the generator runs in eval mode, so batch norm uses running statistics and a sample does not depend on its batch.
Every forward pass has exactly B = min(block_size, samples_per_shard) latents: shard [lo, hi) runs [lo, lo+B),
[lo+B, lo+2B)…, the last one padded with the following indices' latents (outputs dropped). So for one B and device
sample i is bit-identical whatever n, world size or resume; across B it is equal up to the backend's
batch-size invariance (bit-identical on CPU for B >= 8 in tests; cuDNN may pick other kernels per batch size).

Robustness: shards are written complete under a temp name and renamed, manifest.json last. `resume` keeps every
final-named shard that opens, has the expected sample_index and was written by the same generator and seed (valid by
construction, so no sidecar checksums), deletes stray temp files, writes the rest, then the manifest.
Ranks: shard k is written by rank k % world_size; each rank owns (checks, clears, resumes) only its shards' files,
rank 0 also the manifest, which it writes once every shard exists (torch.distributed barrier, else polling).

Writers: generation of shard k+1 overlaps writing shard k. With `writers` = W > 1, W threads compress the chunks of
the shards being written (pairgen.shardfilters: zlib and numpy release the GIL) and two shards are written at once,
so one shard's serial part (libhdf5 under h5py's lock, sha256, write, fsync) overlaps the next one's compression;
at most three shards are in memory (two writing, one generating; W = 1: two, as with one writer thread). Threads,
not processes: nothing is copied to another process, a SIGKILL takes every writer with it, and a writer's error is
raised in the caller as it is. The files' bytes do not depend on W.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from pairgen import shards
from pairgen.core import distributed, workspace
from pairgen.core.config import FrozenConfig
from pairgen.core.limits import require_disk, require_memory
from pairgen.core.locks import LOCK_NAME, lock
from pairgen.core.errors import UserError, writing
from pairgen.presets import GANConfig
from pairgen.core.devices import resolve_device
from pairgen.core.files import sha256_file
from pairgen.sampling import Z_SCHEME, fixed_cudnn_kernels, generate_block, latents

_SHARD = re.compile(r"^shard-(\d{5,})\.h5$")
_SHARD_TMP = re.compile(r"^\.shard-(\d{5,})\.h5\..*\.tmp$")
_MANIFEST_TMP = re.compile(r"^\.manifest\.json\..*\.tmp$")
WAIT_STALL_S = 3600.0   # rank 0 without torch.distributed: give up when no other rank's shard appeared for this long
MAX_WRITERS = 8         # beyond this the serial part of a shard (libhdf5, sha256, fsync) bounds the write rate


def default_writers() -> int:
    """Compression threads per export process: the usable cores shared among this node's ranks (torchrun's
    LOCAL_WORLD_SIZE), one left for the generation loop, at least 1 and at most MAX_WRITERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_WRITERS, cores // ranks - 1))


@dataclass(frozen=True)
class ExportConfig(FrozenConfig):
    """One export, resolved from the flags (`export_config`); recorded in the manifest as 'export_config'.

    The shards' content is fixed by checkpoint, seed, n, samples_per_shard (and block_size up to the backend's
    batch-size invariance, module docstring); EXECUTION_FIELDS only say how they are written.
    """

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("device", "resume", "overwrite", "writers")

    checkpoint: str                      # generator checkpoint file
    out: str | None                      # shard directory; None: a new numbered one under the workspace
    n: int                               # synthetic pairs
    seed: int = 0                        # sample i depends on (seed, i) only
    block_size: int = 1024               # latents per forward pass
    samples_per_shard: int = 4096
    device: str = "auto"
    resume: bool = False                 # finish an interrupted export into `out`
    overwrite: bool = False              # replace an existing export in `out`
    writers: int | None = None           # compression threads (None: default_writers())

    def check(self) -> None:
        """UserError naming the flag for any value no export can run with."""
        for value, name in ((self.n, "--n"), (self.block_size, "--block-size"),
                            (self.samples_per_shard, "--samples-per-shard"),
                            (1 if self.writers is None else self.writers, "--writers")):
            if value < 1:
                raise UserError(f"{name} must be positive, not {value}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, not {self.seed}")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite exclude each other")


def export_config(workspace_dir: Path, checkpoint: Path | None = None, dataset: str | None = None,
                  out: Path | None = None, **options: Any) -> ExportConfig:
    """`pairgen export`'s flags → ExportConfig: the checkpoint found (resolve_checkpoint), with --resume and no
    --out the interrupted export to finish; nothing is created (a new export's directory is numbered when it
    starts). options: the other ExportConfig fields."""
    path = resolve_checkpoint(Path(workspace_dir), checkpoint, dataset)
    if out is None and options.get("resume"):
        out = default_export_dir(Path(workspace_dir), path, resume=True)
    config = ExportConfig(checkpoint=str(path), out=None if out is None else str(out), **options)
    config.check()
    return config


def run_export(config: ExportConfig, workspace_dir: Path, show_progress: bool = True) -> Path:
    """Carry out an ExportConfig (under torchrun each rank writes its shards); returns the shard directory."""
    rank, world = distributed.init_from_env()  # under torchrun: each rank writes shards k ≡ rank (mod world)
    if config.out is None:
        target = distributed.on_rank0(lambda: default_export_dir(Path(workspace_dir), Path(config.checkpoint)))
        config = replace(config, out=str(target))
    return _export(load_source(Path(config.checkpoint), config.device, rank), config, show_progress, rank, world)


@dataclass
class Source:
    """A loaded generator and what the shards record about it."""

    generator: torch.nn.Module   # eval mode, on `device`
    config: GANConfig
    meta: dict[str, Any]         # sha256, dataset, fold_id, class_names, step
    device: torch.device


def load_source(checkpoint: Path, device: str = "auto", rank: int = 0) -> Source:
    from pairgen.checkpoint import load_generator

    resolved = resolve_device(device)
    generator, config, meta = load_generator(Path(checkpoint), resolved)
    # NHWC: the transposed convolutions run ~1.3x faster in oneDNN (scripts/bench.py, CPU) and suit cuDNN
    generator.to(memory_format=torch.channels_last)
    return Source(generator.eval(), config, meta, resolved)


def resolve_checkpoint(workspace_dir: Path, checkpoint: Path | None, dataset: str | None = None) -> Path:
    """The given checkpoint file (a run dir means its newest checkpoint), else the newest checkpoint of the
    newest GAN run in the workspace (of `dataset`, when given)."""
    from pairgen.checkpoint import newest_checkpoint

    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            found = newest_checkpoint(path)
            if found is None:
                raise UserError(f"--checkpoint {path}: directory holds no checkpoints/ckpt-*.pt")
            return found
        if not path.is_file():
            raise UserError(f"--checkpoint {path}: no such file")
        return path
    run = workspace.newest_gan_run(Path(workspace_dir), dataset)
    found = newest_checkpoint(run)
    if found is None:  # newest_gan_run only lists runs with a ckpt-*.pt, but it may not match the step pattern
        raise UserError(f"{run / 'checkpoints'}: no ckpt-<step>.pt checkpoint")
    return found


def default_export_dir(workspace_dir: Path, checkpoint_path: Path, resume: bool = False) -> Path:
    """Create and return <ws>/<dataset>/<fold_id>/synth/<NNNNN>-<gan run name>; with `resume`, return the newest
    such directory of this GAN run that has no manifest yet (an interrupted export) instead.

    The checkpoint lives in <run>/checkpoints/ckpt-*.pt; dataset and fold_id come from the checkpoint itself.
    """
    from pairgen.checkpoint import load_checkpoint

    state = load_checkpoint(Path(checkpoint_path))
    run_name = Path(checkpoint_path).resolve().parent.parent.name
    parent = workspace.fold_dir(Path(workspace_dir), state["dataset"], state["fold_id"]) / "synth"
    if not resume:
        return workspace.new_numbered_dir(parent, run_name)
    unfinished = sorted(p for p in parent.glob(f"[0-9][0-9][0-9][0-9][0-9]-{run_name}")
                        if p.is_dir() and not (p / shards.MANIFEST_NAME).exists())
    if not unfinished:
        raise UserError(f"{parent}: no unfinished export of GAN run {run_name} to resume; pass --out")
    return unfinished[-1]


def shard_range(k: int, n: int, samples_per_shard: int) -> tuple[int, int]:
    return k * samples_per_shard, min(n, (k + 1) * samples_per_shard)


def _owner(name: str, world_size: int) -> int | None:
    """Rank that owns a file this tool writes (0 for the manifest), None for a file it never writes."""
    if match := _SHARD.match(name) or _SHARD_TMP.match(name):
        return int(match.group(1)) % world_size
    if name == shards.MANIFEST_NAME or _MANIFEST_TMP.match(name):
        return 0
    return None


def _prepare(out: Path, resume: bool, overwrite: bool, rank: int, world_size: int) -> None:
    """Refuse a non-empty output, or clear (overwrite) / tidy (resume) the files this rank owns."""
    entries = sorted(p for p in out.iterdir() if p.name != LOCK_NAME)
    mine = [p for p in entries if _owner(p.name, world_size) == rank]
    if not resume and not overwrite:
        foreign = [p for p in entries if _owner(p.name, world_size) is None]
        if mine or foreign:
            raise UserError(f"{out}: output directory is not empty; pass --resume to continue or --overwrite")
        return
    for path in mine:
        # resume keeps final-named shards (checked later); the manifest is rewritten at the end
        if overwrite or not _SHARD.match(path.name):
            path.unlink(missing_ok=True)


def _existing(path: Path, lo: int, hi: int, stamp: dict[str, Any]) -> tuple[shards.ShardInfo | None, str]:
    """(ShardInfo, '') for a valid existing shard of [lo, hi), else (None, why); UserError if another export's.

    A final-named shard is complete by construction (temp → fsync → rename); reading every dataset once more
    still catches a damaged file (h5py raises many exception types on those: all mean "rewrite it").
    """
    try:
        with shards.open_shard(path) as h5:
            attrs = shards.read_attrs(h5)
            index = h5["sample_index"][:]
            for name in h5:
                h5[name][...]
    except Exception as exc:  # noqa: BLE001 (UserError, OSError, RuntimeError, KeyError, ValueError, TypeError)
        return None, f"unreadable ({str(exc)[:160]})"
    for key in ("generator_sha256", "seed", "kind"):
        if attrs.get(key) != stamp[key]:
            raise UserError(f"{path}: written with {key}={attrs.get(key)!r}, this export has {stamp[key]!r}; "
                            "use --overwrite or another --out")
    if not np.array_equal(index, np.arange(lo, hi)):
        return None, f"holds other sample indices than {lo}…{hi - 1} (other --n or --samples-per-shard)"
    return shards.ShardInfo(path.name, hi - lo, sha256_file(path), lo, hi - 1), ""


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def export(checkpoint: Path, out: Path, n: int, show_progress: bool = True, rank: int = 0, world_size: int = 1,
           **options: Any) -> Path:
    """Write n synthetic samples of `checkpoint` as shards + manifest.json into `out`; returns `out`.
    options: the other ExportConfig fields (seed, block_size, samples_per_shard, device, resume, …)."""
    config = ExportConfig(checkpoint=str(checkpoint), out=str(out), n=n, **options)
    config.check()   # before the generator is loaded
    _check_rank(rank, world_size)
    if not Path(checkpoint).exists():
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    return _export(load_source(Path(checkpoint), config.device, rank), config, show_progress, rank, world_size)


def _check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world size {world_size}")


def export_source(source: Source, out: Path, n: int, show_progress: bool = True, rank: int = 0,
                  world_size: int = 1, checkpoint: Path | None = None, **options: Any) -> Path:
    """`export` for an already loaded generator (tests, benchmarks). Ranks other than 0 return without waiting for
    the manifest unless torch.distributed is initialised (then every rank returns after it is written)."""
    config = ExportConfig(checkpoint=str(checkpoint) if checkpoint else "", out=str(out), n=n, **options)
    return _export(source, config, show_progress, rank, world_size)


def _export(source: Source, config: ExportConfig, show_progress: bool, rank: int, world_size: int) -> Path:
    """Write `config`'s shards with a loaded generator: this rank's shards, then (rank 0) the manifest. The export's
    size is checked against the free disk and memory first; rank 0 owns `out` (a lock) throughout."""
    config.check()
    out = Path(str(config.out))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    _check_size(source.config, config.n, config.samples_per_shard, out)
    dist = _dist()
    lead = (dist.get_rank() if dist is not None and world_size == 1 else rank) == 0
    with lock(out) if lead else nullcontext():   # a second export into the same --out is refused
        return _write_export(source, config, show_progress, rank, world_size)


def _check_size(config: Any, n: int, samples_per_shard: int, out: Path) -> None:
    """Refuse an export whose shards cannot fit on the disk, or one shard in memory (lower bounds: the images,
    latents and indices, which are stored uncompressed; the compressed masks are not counted)."""
    stored = config.height * config.width * config.image_channels + config.z_dim * 4 + 8
    in_memory = stored + config.height * config.width * (1 + 2 * config.mask_channels)
    present = sum(p.stat().st_size for p in out.glob("shard-*.h5")) if out.is_dir() else 0   # kept or replaced
    require_disk(n * stored - present, out, f"--n {n}")
    require_memory(min(n, samples_per_shard) * in_memory, f"--samples-per-shard {samples_per_shard}")


def _write_export(source: Source, config: ExportConfig, show_progress: bool, rank: int, world_size: int) -> Path:
    """_export's work, under its lock."""
    dist = _dist()
    if dist is not None and world_size == 1:  # under torchrun: the process group says who writes what
        rank, world_size = dist.get_rank(), dist.get_world_size()
    config.check()
    _check_rank(rank, world_size)
    n, samples_per_shard = config.n, config.samples_per_shard
    writers = default_writers() if config.writers is None else config.writers
    out = Path(str(config.out))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    with writing(out):  # read-only or forbidden --out: one clear line, nothing touched
        out.mkdir(parents=True, exist_ok=True)
        _prepare(out, config.resume, config.overwrite, rank, world_size)

    meta = source.meta
    class_names = list(meta["class_names"])
    stamp = {"kind": "synthetic", "dataset": meta["dataset"], "split": "synthetic", "fold": meta["fold_id"],
             "class_names": class_names, "generator_sha256": meta["sha256"], "trained_dataset": meta["dataset"],
             "trained_fold": meta["fold_id"], "seed": int(config.seed), "z_scheme": Z_SCHEME}
    n_shards = -(-n // samples_per_shard)
    if config.resume:  # stale shards past the end (an earlier, larger --n) are this rank's to remove
        for path in out.glob("shard-*.h5"):
            match = _SHARD.match(path.name)
            if match and int(match.group(1)) >= n_shards and int(match.group(1)) % world_size == rank:
                with writing(path):
                    path.unlink()
    todo, infos = [], {}
    for k in range(rank, n_shards, world_size):
        path = out / shards.SHARD_PATTERN.format(k)
        info, why = _existing(path, *shard_range(k, n, samples_per_shard), stamp) if path.exists() else (None, "")
        if info is not None:
            infos[k] = info
            continue
        if why:
            print(f"pairgen export: rewriting {path}: {why}", file=sys.stderr)
        todo.append(k)

    batch = min(config.block_size, samples_per_shard)  # forward batch: the same for every block of every shard
    total = sum(min(n, (k + 1) * samples_per_shard) - k * samples_per_shard for k in range(rank, n_shards, world_size))
    done = sum(i.n for i in infos.values())
    # shard k is written (compressed, hashed, fsynced: zlib, hashlib and fsync release the GIL) while shard k+1
    # is generated; `in_flight` shards at most are being written (module docstring). The compression pool is
    # entered first so that it outlives the shard writers that submit to it.
    in_flight = min(2, writers)
    with (tqdm(total=total, initial=done, unit="sample", desc=f"export {out.name}", dynamic_ncols=True,
               disable=not show_progress or rank != 0) as bar,
          (ThreadPoolExecutor(writers, "compress") if writers > 1 else nullcontext()) as pool,
          ThreadPoolExecutor(in_flight, "shard-writer") as writer):
        pending: deque[Future] = deque()
        for k in todo:
            lo, hi = shard_range(k, n, samples_per_shard)
            with fixed_cudnn_kernels():
                arrays = _generate_shard(source, config.seed, lo, hi, batch, bar)
            while len(pending) >= in_flight:
                infos.update([pending.popleft().result()])
            pending.append(writer.submit(_write_shard, out, k, arrays, stamp, pool))
        while pending:
            infos.update([pending.popleft().result()])

    if dist is not None:
        dist.barrier()
    if rank == 0:
        _finish(config, n_shards, world_size, infos, stamp, meta, waited=dist is None)
    if dist is not None:
        dist.barrier()  # nobody returns before the manifest exists
    return out


def _generate_shard(source: Source, seed: int, lo: int, hi: int, batch: int, bar: tqdm) -> dict[str, np.ndarray]:
    """Shard arrays for indices [lo, hi), forward passes of exactly `batch` latents each."""
    arrays: dict[str, np.ndarray] = {"sample_index": np.arange(lo, hi, dtype=np.int64)}
    for start in range(lo, hi, batch):
        stop = min(hi, start + batch)
        # always a full batch (the tail padded with the next indices' latents, outputs dropped): a GEMM with
        # another row count may round differently (seen on CPU below 8 rows), and sample i must not depend on n
        # or on where a shard ends
        z = latents(seed, start, start + batch, source.config.z_dim)
        block = generate_block(source.generator, z, source.config, source.device)
        for name, value in block.items():  # fill preallocated shard arrays: no concatenate copy
            if name not in arrays:
                arrays[name] = np.empty((hi - lo,) + value.shape[1:], value.dtype)
            arrays[name][start - lo:stop - lo] = value[:stop - start]
        bar.update(stop - start)
    return arrays


def _write_shard(out: Path, k: int, arrays: dict[str, np.ndarray], stamp: dict[str, Any],
                 pool: Executor | None) -> tuple[int, shards.ShardInfo]:
    return k, shards.write_shard(out / shards.SHARD_PATTERN.format(k), arrays, stamp, pool=pool)


def _finish(config: ExportConfig, n_shards: int, world_size: int, infos: dict[int, shards.ShardInfo],
            stamp: dict[str, Any], meta: dict[str, Any], waited: bool) -> None:
    """Rank 0: collect every shard (other ranks' by listing, checked like resume), then write the manifest."""
    out, n, samples_per_shard = Path(str(config.out)), config.n, config.samples_per_shard
    pending = [k for k in range(n_shards) if k not in infos]
    last_change = time.monotonic()
    while pending:
        found = [k for k in pending if (out / shards.SHARD_PATTERN.format(k)).exists()]
        for k in found:
            path = out / shards.SHARD_PATTERN.format(k)
            info, why = _existing(path, *shard_range(k, n, samples_per_shard), stamp)
            if info is None:
                raise UserError(f"{path}: {why}; re-run with --resume")
            infos[k] = info
        pending = [k for k in pending if k not in infos]
        if not pending:
            break
        if world_size == 1 or not waited or time.monotonic() - last_change > WAIT_STALL_S:
            raise UserError(f"{out}: shards {pending[:5]} missing after export; re-run with --resume")
        last_change = time.monotonic() if found else last_change
        time.sleep(0.5)
    attrs = {**stamp, "n_expected": int(n), "samples_per_shard": int(samples_per_shard),
             "generator_step": meta.get("step"), "checkpoint": meta.get("path", config.checkpoint or None),
             "export_config": config.to_json()}
    shards.write_manifest(out, attrs, infos.values())
