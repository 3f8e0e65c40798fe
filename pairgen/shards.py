"""The shard format: one module owns the on-disk schema that pairgen writes and segbench reads.

A *shard directory* holds `shard-00000.h5 …` plus `manifest.json`. The manifest is written last (atomically),
so a directory with a manifest is complete; shards with a final name are always complete (temp name → fsync →
rename). numpy + h5py only (no torch) so that anything can import it cheaply. The checks of a shard's contents
beyond this schema (shapes, sizes, value ranges) are in pairgen.shardcheck; `pairgen verify` is pairgen.verify.

Per shard (first axis = sample, N samples):
  images        uint8   N×H×W×C   C = 1 (gray) or 3 (RGB); model space is [-1, 1] = v/127.5 - 1
  masks         uint8   N×H×W     class ids (thresholded for synthetic shards), 0 = background/void
  sample_index  int64   N         global, unique within the directory
  case_id       str     N         (real shards) the dataset's case name
  full_masks    vlen u8 N         (real test shards) mask at the evaluation resolution, flattened row-major
  full_shapes   int32   N×2       (real test shards) (rows, cols) of each full mask
  spacing_mm    float32 N×2       (real shards, where known) (row, col) pixel spacing of the full mask grid
  masks_raw     float16 N×H×W×K   (synthetic) raw tanh mask output, K = 1 for the scalar encoding
  latents       float32 N×Z       (synthetic) the z that produced each sample
  quality       float32 N         (synthetic, optional, schema 2) per-pair alignment score in [0, 1] from a judge
                                  U-Net (segbench.judge: Dice / mIoU of its segmentation vs the pair's mask)
File attributes: schema_version, kind ('real'|'synthetic'), dataset, split, fold, class_names (JSON list),
height, width, channels; synthetic also generator_sha256, trained_dataset, trained_fold.

Storage (not part of the schema: readers never need to know): masks and masks_raw are chunked by 256 samples and
stored with HDF5's standard filters shuffle (masks_raw) + deflate, computed outside libhdf5 by
pairgen.shardfilters so that several threads can compress at once (level 1, run-length strategy: ~2 % / ~20 %
of raw size on generator output); images, latents and the rest are stored uncompressed. Shards written before
(h5py's lzf filter on masks and masks_raw) read the same way; `write_shard(compression="lzf")` still writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from pairgen import shardfilters
from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_bytes, atomic_write_json, sha256_file
from pairgen.shardcheck import (declared_bytes, full_shapes_problem, layout_problems, same_shapes_problem,
                                value_problems)

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)   # 2 added the optional `quality` dataset; version 1 shards read unchanged
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.h5"
KINDS = ("real", "synthetic")

# dtype and rank (None = vlen) of every dataset the schema knows
DATASETS: dict[str, tuple[str, int | None]] = {
    "images": ("uint8", 4),
    "masks": ("uint8", 3),
    "sample_index": ("int64", 1),
    "case_id": ("str", 1),
    "full_masks": ("vlen", None),
    "full_shapes": ("int32", 2),
    "spacing_mm": ("float32", 2),
    "masks_raw": ("float16", 4),
    "latents": ("float32", 2),
    "quality": ("float32", 1),
}
REQUIRED = ("images", "masks", "sample_index")
REQUIRED_SYNTHETIC = ("masks_raw", "latents")
REQUIRED_ATTRS = ("schema_version", "kind", "dataset", "split", "fold", "class_names")
# Only masks are compressed: they shrink to 2-4 % (masks_raw ~20 %) while images and latents barely shrink (to
# 83-97 %) at 10x the write cost of storing them as they are (measured at the thesis shape, 256x256 lung pairs).
COMPRESSED = ("masks", "masks_raw")
COMPRESSIONS = ("gzip", "lzf", None)   # gzip: shuffle + deflate by pairgen.shardfilters (parallel); lzf: by h5py
CHUNK_SAMPLES = 256


@dataclass(frozen=True)
class ShardInfo:
    file: str
    n: int
    sha256: str
    first_index: int
    last_index: int


@dataclass
class Manifest:
    attrs: dict[str, Any]
    shards: list[ShardInfo] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(s.n for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {**self.attrs, "shards": [s.__dict__ for s in self.shards], "n_samples": self.n}


def _check_arrays(arrays: dict[str, np.ndarray], kind: str) -> int:
    for name in arrays:
        if name not in DATASETS:
            raise ValueError(f"unknown shard dataset {name!r}")
    missing = [n for n in REQUIRED + (REQUIRED_SYNTHETIC if kind == "synthetic" else ()) if n not in arrays]
    if missing:
        raise ValueError(f"shard is missing datasets {missing}")
    n = len(arrays["sample_index"])
    for name, value in arrays.items():
        if len(value) != n:
            raise ValueError(f"dataset {name} has {len(value)} samples, sample_index has {n}")
        dtype, rank = DATASETS[name]
        if dtype not in ("str", "vlen"):
            if np.asarray(value).dtype != np.dtype(dtype) or np.asarray(value).ndim != rank:
                raise ValueError(f"dataset {name} must be {dtype} rank {rank}, got {value.dtype} {value.shape}")
    return n


def write_shard(path: Path, arrays: dict[str, Any], attrs: dict[str, Any], compression: str | None = "gzip",
                pool: Executor | None = None) -> ShardInfo:
    """Write one complete shard atomically (temp name → fsync → rename) and return its manifest entry.

    `arrays` follow the module schema; `attrs` must hold REQUIRED_ATTRS (class_names as a list).
    `compression` (one of COMPRESSIONS) applies to the COMPRESSED datasets only. With "gzip" their chunks are
    compressed by `pool`'s threads when given (else in this thread), outside h5py's lock; the file's bytes do not
    depend on `pool`. The file is assembled in memory first (peak memory: the arrays plus about one file size);
    a failing write raises StorageError naming `path` (see atomic_write_bytes).
    """
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    kind = attrs["kind"]
    n = _check_arrays(arrays, kind)
    rows = max(1, min(n, CHUNK_SAMPLES))
    # chunks are queued on the pool before libhdf5 starts, so compression overlaps building the rest of the file
    deflated = {name: shardfilters.encoded_chunks(np.ascontiguousarray(arrays[name]), rows, pool)
                for name in COMPRESSED if compression == "gzip" and name in arrays and n and np.ndim(arrays[name]) > 1}
    # The file is built in memory and written by atomic_write_bytes. libhdf5 must never write to the disk itself:
    # when a write fails there (disk full, quota) its failed close leaves the library in a state that segfaults
    # the process at exit, turning a clean "disk full" error into a crash. A BytesIO rather than the core driver:
    # no get_file_image copy, which was half of the part of a shard that runs under h5py's lock (thesis shape).
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for name, value in arrays.items():
            dtype, _ = DATASETS[name]
            if dtype == "str":
                h5.create_dataset(name, data=np.asarray([str(v) for v in value], dtype=h5py.string_dtype()))
            elif dtype == "vlen":
                ds = h5.create_dataset(name, (n,), dtype=h5py.vlen_dtype(np.uint8))
                for i, item in enumerate(value):
                    ds[i] = np.ascontiguousarray(item, dtype=np.uint8).ravel()
            elif name in deflated:
                shardfilters.create_deflated(h5, name, np.asarray(value), rows, deflated[name])
            else:
                value = np.ascontiguousarray(value)
                chunks = (rows,) + value.shape[1:] if value.ndim > 1 and n else None
                h5.create_dataset(name, data=value, chunks=chunks,
                                  compression=compression if chunks and name in COMPRESSED else None)
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if key == "class_names" else value
        h5.attrs["schema_version"] = SCHEMA_VERSION
        images = arrays["images"]
        h5.attrs["height"], h5.attrs["width"], h5.attrs["channels"] = images.shape[1:4] if n else (0, 0, 0)
    image = buffer.getbuffer()
    atomic_write_bytes(path, image)
    digest = hashlib.sha256(image).hexdigest()
    index = np.asarray(arrays["sample_index"])
    return ShardInfo(path.name, n, digest, int(index.min()) if n else -1, int(index.max()) if n else -1)


def write_manifest(directory: Path, attrs: dict[str, Any], shards: Iterable[ShardInfo]) -> Manifest:
    """Write manifest.json last: its presence marks the directory complete."""
    manifest = Manifest({**attrs, "schema_version": SCHEMA_VERSION}, sorted(shards, key=lambda s: s.file))
    atomic_write_json(Path(directory) / MANIFEST_NAME, manifest.to_json())
    return manifest


# what a manifest or shard may declare; checked before any array is read (a 10 KB file can declare terabytes)
MAX_SAMPLES = 1 << 31
# manifest attributes and the types they must have when present (JSON: fold may be a number or a fold id)
ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "dataset": (str,), "split": (str,), "fold": (str, int), "class_names": (list,),
    "generator_sha256": (str,), "trained_dataset": (str,), "trained_fold": (str, int), "n_expected": (int,),
    "seed": (int,), "samples_per_shard": (int,),
}
# attributes every shard must share with its manifest (and with what the caller asked for)
AGREED_ATTRS = ("schema_version", "kind", "dataset", "split", "fold", "class_names", "generator_sha256",
                "trained_dataset", "trained_fold")
_INFO_TYPES = {"file": str, "n": int, "sha256": str, "first_index": int, "last_index": int}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _manifest_problem(raw: Any) -> str | None:
    """The first way a parsed manifest.json breaks the format (field types and ranges), None when it is fine."""
    if not isinstance(raw, dict) or not isinstance(raw.get("shards"), list):
        return "not an object with a 'shards' list"
    for key, types in ATTR_TYPES.items():
        if raw.get(key) is not None and not _is(raw[key], types):
            return f"field {key!r} is {raw[key]!r}, expected {' or '.join(t.__name__ for t in types)}"
    if "class_names" in raw and not (len(raw["class_names"]) >= 2 and all(isinstance(c, str) for c in raw["class_names"])):
        return f"class_names {raw['class_names']!r}: expected a list of at least two names"
    if "kind" in raw and raw["kind"] not in KINDS:
        return f"kind {raw['kind']!r} is not one of {KINDS}"
    if raw.get("n_expected") is not None and not 0 <= raw["n_expected"] <= MAX_SAMPLES:
        return f"n_expected {raw['n_expected']} outside 0..{MAX_SAMPLES}"
    names: set[str] = set()
    for entry in raw["shards"]:
        if not isinstance(entry, dict) or set(entry) != set(_INFO_TYPES):
            return f"shard entry {entry!r}: expected exactly the fields {sorted(_INFO_TYPES)}"
        for key, kind in _INFO_TYPES.items():
            if not _is(entry[key], (kind,)):
                return f"shard entry field {key!r} is {entry[key]!r}, expected {kind.__name__}"
        if not 0 <= entry["n"] <= MAX_SAMPLES:
            return f"shard {entry['file']!r} declares {entry['n']} samples (limit {MAX_SAMPLES})"
        if entry["file"] in names:
            return f"shard {entry['file']!r} is listed twice"
        names.add(entry["file"])
    return None


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a shard directory, every field type-checked (UserError naming the file otherwise)."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path}: no manifest (not a shard directory, or an export that never finished)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc})") from None
    if (problem := _manifest_problem(raw)) is not None:
        raise UserError(f"{path}: {problem}")
    shards = [ShardInfo(**s) for s in raw.pop("shards")]
    raw.pop("n_samples", None)
    if raw.get("schema_version") not in READABLE_VERSIONS:
        raise UserError(f"{path}: schema_version {raw.get('schema_version')}, this tool reads {READABLE_VERSIONS}")
    return Manifest(raw, shards)


def shard_path(directory: Path, name: str) -> Path:
    """directory/name for a manifest entry: a plain file name inside the directory, never a path (`../x.h5`,
    `/abs.h5`, `a/b.h5`) nor a symbolic link leading out of it (UserError otherwise)."""
    directory = Path(directory)
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0") or os.path.isabs(name)
            or Path(name).name != name):
        raise UserError(f"{directory / MANIFEST_NAME}: shard name {name!r} is not a plain file name in the folder")
    path = directory / name
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise UserError(f"{path}: a symbolic link leading out of the shard folder (to {path.resolve()})")
    return path


def read_attrs(h5: h5py.File) -> dict[str, Any]:
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
    if "class_names" in attrs:
        attrs["class_names"] = json.loads(attrs["class_names"])
    return attrs


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only and check its schema; errors are one-line UserErrors naming the file."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable HDF5 shard ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    problems = schema_problems(h5)
    if problems:
        h5.close()
        raise UserError(f"{path}: {problems[0]}")
    return h5


def schema_problems(h5: h5py.File) -> list[str]:
    """Every way an open shard breaks the schema (empty list = fine); never raises on a damaged file."""
    problems: list[str] = []
    try:
        _schema_problems(h5, problems)
    except Exception as exc:  # damaged object headers surface as RuntimeError, OSError, KeyError, ValueError…
        problems.append(f"unreadable ({exc.__class__.__name__}: {str(exc)[:120]})")
    return problems


def _schema_problems(h5: h5py.File, problems: list[str]) -> list[str]:
    """schema_problems' checks, appending to `problems` (so that findings before a crash are kept)."""
    try:
        attrs = dict(h5.attrs)
    except Exception as exc:  # a damaged attribute heap raises anything from OSError to JSON errors
        problems.append(f"unreadable attributes ({exc.__class__.__name__})")
        return problems
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(f"missing attribute {key!r}")
    if attrs.get("schema_version") not in (None, *READABLE_VERSIONS) and "schema_version" in attrs:
        problems.append(f"schema_version {attrs['schema_version']}, expected one of {READABLE_VERSIONS}")
    kind = attrs.get("kind")
    if kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {KINDS}")
    needed = REQUIRED + (REQUIRED_SYNTHETIC if kind == "synthetic" else ())
    for name in needed:
        if name not in h5:
            problems.append(f"missing dataset {name!r}")
    try:
        n = h5["sample_index"].shape[0] if "sample_index" in h5 else None
        for name in h5:
            if name not in DATASETS:
                problems.append(f"unknown dataset {name!r}")
                continue
            dtype, rank = DATASETS[name]
            ds = h5[name]
            if n is not None and ds.shape[0] != n:
                problems.append(f"dataset {name!r} has {ds.shape[0]} samples, sample_index has {n}")
            if dtype not in ("str", "vlen") and (ds.dtype != np.dtype(dtype) or ds.ndim != rank):
                problems.append(f"dataset {name!r} is {ds.dtype} rank {ds.ndim}, schema says {dtype} rank {rank}")
        if "images" in h5 and "masks" in h5 and h5["images"].shape[:3] != h5["masks"].shape[:3]:
            problems.append(f"images {h5['images'].shape} and masks {h5['masks'].shape} disagree")
    except Exception as exc:  # damaged object headers surface as OSError, KeyError, TypeError, RuntimeError...
        problems.append(f"unreadable ({exc.__class__.__name__}: {str(exc)[:120]})")
    return problems


@dataclass
class ShardSet:
    """All samples of a shard directory, loaded into memory (the hot loop only indexes these arrays)."""

    directory: Path
    attrs: dict[str, Any]
    images: np.ndarray            # uint8 N×H×W×C
    masks: np.ndarray             # uint8 N×H×W
    sample_index: np.ndarray      # int64 N
    case_id: list[str] | None = None
    full_masks: list[np.ndarray] | None = None   # uint8 rows×cols each
    spacing_mm: np.ndarray | None = None         # float32 N×2
    masks_raw: np.ndarray | None = None          # float16 N×H×W×K
    latents: np.ndarray | None = None            # float32 N×Z
    quality: np.ndarray | None = None            # float32 N (schema 2, when scored)

    def __len__(self) -> int:
        return len(self.sample_index)

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["class_names"])


def attr_problems(attrs: dict[str, Any], reference: dict[str, Any], source: str) -> list[str]:
    """Every AGREED_ATTRS value of a shard's `attrs` that differs from `reference` (named `source` in the text)."""
    return [f"attribute {key}={attrs.get(key)!r}, {source} says {reference[key]!r}"
            for key in AGREED_ATTRS if key in reference and attrs.get(key) != reference[key]]


def load_shards(directory: Path, verify_checksums: bool = True, with_raw: bool = False,
                expect: dict[str, Any] | None = None) -> ShardSet:
    """Read a complete shard directory into memory: THE trusted reader every command uses.

    Before any array is read: the manifest's field types; shard names (plain file names inside `directory`, no
    duplicates, no symbolic link leading out); checksums; each shard's schema and its attributes (AGREED_ATTRS)
    against the manifest, and the manifest's against `expect` (what the caller asked for, e.g.
    {"kind": "real", "split": "test", "dataset": "scr-lung"}); per-sample shapes across shards; the declared size
    against MAX_SIDE and the memory available. After reading: `value_problems` and unique sample indices.
    Everything fails as one-line UserErrors naming the file.
    `with_raw` also loads masks_raw and latents of synthetic shards (large; segbench trains on `masks`).
    `verify_checksums=False` is for files the caller trusts: libhdf5 can loop forever on some damaged bytes, and
    the checksum is what keeps those from ever reaching it.
    """
    from pairgen.core.limits import human, require_memory

    directory = Path(directory)
    manifest = read_manifest(directory)
    if not manifest.shards:
        raise UserError(f"{directory}: manifest lists no shards")
    if problems := attr_problems(manifest.attrs, dict(expect or {}), "the command"):
        raise UserError(f"{directory / MANIFEST_NAME}: {problems[0]}")
    reference: dict[str, tuple] = {}
    paths, total = [], 0
    for info in manifest.shards:
        path = shard_path(directory, info.file)
        if not path.is_file():
            raise UserError(f"{path}: listed in the manifest but missing")
        if verify_checksums and sha256_file(path) != info.sha256:
            raise UserError(f"{path}: sha256 does not match the manifest (corrupt or modified shard)")
        with open_shard(path) as h5:
            try:
                attrs = read_attrs(h5)
                n = h5["sample_index"].shape[0]
                problems = attr_problems(attrs, manifest.attrs, "the manifest") + layout_problems(h5, attrs)
                if (mismatch := same_shapes_problem(h5, reference)) is not None:
                    problems.append(mismatch)
                if n != info.n:
                    problems.append(f"holds {n} samples, manifest says {info.n}")
                if not problems and "full_shapes" in h5 and (bad := full_shapes_problem(h5["full_shapes"][:])):
                    problems.append(bad)
                total += declared_bytes(h5, with_raw) if not problems else 0
            except Exception as exc:  # damaged HDF5 structures raise RuntimeError, OSError, KeyError, ValueError…
                raise UserError(f"{path}: unreadable data ({exc.__class__.__name__}: {str(exc)[:100]})") from None
        if problems:
            raise UserError(f"{path}: {problems[0]}")
        paths.append(path)
    # the arrays, then one concatenated copy of them
    require_memory(2 * total, f"{directory}: its shards declare {human(total)} of arrays, which")
    parts: dict[str, list] = {}
    for path in paths:
        with open_shard(path) as h5:
            try:
                read_datasets(h5, parts, with_raw)
            except Exception as exc:  # damaged HDF5 structures raise RuntimeError, OSError, KeyError, ValueError…
                raise UserError(f"{path}: unreadable data ({exc.__class__.__name__}: {str(exc)[:100]})") from None
    arrays = {k: (v if k in ("full_masks", "case_id") else np.concatenate(v)) for k, v in parts.items()}
    shard_set = ShardSet(directory=directory, attrs=dict(manifest.attrs), **arrays)
    problems = value_problems(len(shard_set.class_names), shard_set.masks, shard_set.full_masks, shard_set.spacing_mm)
    if len(np.unique(shard_set.sample_index)) != len(shard_set):
        problems.append("sample_index holds duplicates")
    if problems:
        raise UserError(f"{directory}: {problems[0]} (`pairgen verify {directory}` lists every problem)")
    return shard_set


_FIELDS = {f.name for f in dataclasses.fields(ShardSet)}


def read_datasets(h5: h5py.File, parts: dict[str, list], with_raw: bool) -> None:
    """Append one open shard's ShardSet fields to `parts` (name → list of arrays; full_masks and case_id as one
    item per sample, full masks reshaped to full_shapes); masks_raw and latents only `with_raw`."""
    for name in h5:
        if (name in ("masks_raw", "latents") and not with_raw) or (name not in _FIELDS and name != "full_shapes"):
            continue   # optional datasets this reader does not use are skipped, not refused
        if name == "full_masks":
            shapes = h5["full_shapes"][:]
            flat = h5["full_masks"][:]
            parts.setdefault(name, []).extend(m.reshape(s) for m, s in zip(flat, shapes))
        elif name == "case_id":
            parts.setdefault(name, []).extend(v.decode() if isinstance(v, bytes) else str(v) for v in h5[name][:])
        elif name != "full_shapes":
            parts.setdefault(name, []).append(h5[name][:])


def add_quality(directory: Path, quality: np.ndarray) -> Manifest:
    """Store per-pair scores (float32, one per sample in `load_shards` order) as the `quality` dataset of every
    synthetic shard of a complete directory; returns the new manifest.

    Each shard is rewritten whole (atomically, with its other datasets and attributes unchanged), then the manifest
    with the new checksums. If interrupted in between, the directory fails `verify` until the same call is run
    again (it reads the shards without checksums, so it can finish the job).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    quality = np.asarray(quality, dtype=np.float32)
    if manifest.attrs.get("kind") != "synthetic" or len(quality) != manifest.n:
        raise UserError(f"{directory}: quality needs a synthetic shard directory with {len(quality)} samples "
                        f"(it holds kind={manifest.attrs.get('kind')!r}, {manifest.n} samples)")
    infos, start = [], 0
    for info in manifest.shards:
        with open_shard(directory / info.file) as h5:
            attrs, arrays = read_attrs(h5), {name: h5[name][:] for name in h5}
        arrays["quality"] = quality[start:start + info.n]
        start += info.n
        infos.append(write_shard(directory / info.file, arrays, attrs))
    return write_manifest(directory, manifest.attrs, infos)
