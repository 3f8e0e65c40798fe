"""`pairgen verify`: every problem of a shard directory against its manifest, the schema and the value checks.

Unlike `load_shards`, which stops at the first problem, this lists them all. A shard whose checksum fails is
parsed in a forked child with a deadline (UNTRUSTED_PARSE_TIMEOUT_S): libhdf5 can spin forever or crash on some
damaged bytes, and verify must report that, not hang or die with it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path

import h5py

from pairgen.core.errors import UserError
from pairgen.core.files import sha256_file
from pairgen.shardcheck import (declared_bytes, full_shapes_problem, layout_problems, same_shapes_problem,
                                value_problems)
from pairgen.shards import (Manifest, ShardInfo, attr_problems, read_attrs, read_datasets, read_manifest,
                            schema_problems, shard_path)


def verify_directory(directory: Path) -> list[str]:
    """Every problem of a shard directory against its manifest and the schema (empty list = valid)."""
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except UserError as exc:
        return [str(exc)]
    problems: list[str] = []
    seen: dict[int, str] = {}
    reference: dict[str, tuple] = {}
    listed = {s.file for s in manifest.shards}
    for stray in sorted(p.name for p in directory.glob("shard-*.h5")):
        if stray not in listed:
            problems.append(f"{directory / stray}: not listed in the manifest")
    for info in manifest.shards:
        try:
            path = shard_path(directory, info.file)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
            continue
        trusted = sha256_file(path) == info.sha256
        if not trusted:
            problems.append(f"{path}: sha256 does not match the manifest")
        check = _shard_problems_guarded if trusted else _shard_problems_isolated
        problems.extend(f"{path}: {p}" for p in check(path, info, manifest, seen, reference))
    expected = manifest.attrs.get("n_expected")
    if expected is not None and (len(seen) != expected or (seen and (min(seen), max(seen)) != (0, expected - 1))):
        missing = int(expected) - len(seen)
        problems.append(f"{directory}: sample indices are not exactly 0…{int(expected) - 1} ({missing} missing)")
    return problems


# how long libhdf5 may take to inspect a shard that failed its checksum (it can loop forever on some damage)
UNTRUSTED_PARSE_TIMEOUT_S = 120.0


def _shard_problems_guarded(path: Path, info: ShardInfo, manifest: Manifest, seen: dict[int, str],
                            reference: dict[str, tuple]) -> list[str]:
    try:
        return _shard_problems(path, info, manifest, seen, reference)
    except Exception as exc:  # any damage h5py trips over is a finding to report, never a crash
        return [f"unreadable ({exc.__class__.__name__}: {str(exc)[:100]})"]


def _shard_problems_isolated(path: Path, info: ShardInfo, manifest: Manifest, seen: dict[int, str],
                             reference: dict[str, tuple]) -> list[str]:
    """_shard_problems for a file whose checksum failed, parsed in a forked child: libhdf5 can spin forever or
    crash on damaged bytes (found by fuzzing), and verify must report that, not hang or die with it."""
    if not hasattr(os, "fork"):
        return _shard_problems_guarded(path, info, manifest, seen, reference)
    read_end, write_end = os.pipe()
    pid = os.fork()   # plain fork, not multiprocessing: it also works inside daemonic worker processes
    if pid == 0:
        try:
            os.close(read_end)
            problems = _shard_problems_guarded(path, info, manifest, seen, reference)
            payload = json.dumps([problems, seen, {k: list(v) for k, v in reference.items()}]).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + UNTRUSTED_PARSE_TIMEOUT_S
    try:
        while (left := deadline - time.monotonic()) > 0 and select.select([read_end], [], [], left)[0]:
            if not (chunk := os.read(read_end, 1 << 16)):
                break
            chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)    # still parsing at the deadline
            chunks = []
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    try:
        problems, seen_after, reference_after = json.loads(b"".join(chunks))
    except ValueError:   # nothing came back: the child crashed (e.g. a segfault in libhdf5) or was killed
        return [f"unreadable (the HDF5 library crashed or did not finish within {UNTRUSTED_PARSE_TIMEOUT_S:.0f} s)"]
    seen.update((int(k), v) for k, v in seen_after.items())
    reference.update((k, tuple(v)) for k, v in reference_after.items())
    return problems


def _shard_problems(path: Path, info: ShardInfo, manifest: Manifest, seen: dict[int, str],
                    reference: dict[str, tuple]) -> list[str]:
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        return [f"not readable as HDF5 ({exc.__class__.__name__})"]
    with h5:
        problems = schema_problems(h5)
        if "sample_index" not in h5:
            return problems
        if (mismatch := same_shapes_problem(h5, reference)) is not None:
            problems.append(mismatch)
        index = h5["sample_index"][:]
        if len(index) != info.n:
            problems.append(f"holds {len(index)} samples, manifest says {info.n}")
        if len(index) and (int(index.min()), int(index.max())) != (info.first_index, info.last_index):
            problems.append(f"sample_index spans {int(index.min())}…{int(index.max())}, manifest says "
                            f"{info.first_index}…{info.last_index}")
        attrs = read_attrs(h5)
        problems += attr_problems(attrs, manifest.attrs, "manifest") + layout_problems(h5, attrs)
        for value in index.tolist():
            if value in seen:
                problems.append(f"sample_index {value} also in {seen[value]}")
            seen[value] = info.file
        if "full_shapes" in h5 and (bad := full_shapes_problem(h5["full_shapes"][:])):
            return problems + [bad]
        if problems or "masks" not in h5 or not isinstance(attrs.get("class_names"), list):
            return problems
        from pairgen.core.limits import require_memory

        try:   # the same value checks as load_shards, shard by shard
            require_memory(2 * declared_bytes(h5, with_raw=False), "its arrays")
        except UserError as exc:
            return problems + [str(exc)]
        arrays: dict[str, list] = {}
        read_datasets(h5, arrays, with_raw=False)
        problems += value_problems(len(attrs["class_names"]), arrays["masks"][0], arrays.get("full_masks"),
                                   arrays["spacing_mm"][0] if "spacing_mm" in arrays else None)
    return problems
