"""Up-front limits: how much memory and disk a command may ask for, checked before any work starts.

A request that cannot fit (a shard declaring 20000×20000 images, `--n 1e9` on a disk with 70 GB free) fails in one
line naming the flag or file, instead of a MemoryError traceback after minutes of work.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pairgen.core.errors import UserError

# the largest image side any reader accepts (shards, dataset images, predict inputs): 8192² RGB is 200 MB
MAX_SIDE = 16384
# the largest image (pixels) any image reader decodes, checked from the header: 134 M (11585²), 30x a JSRT
# radiograph and 60x a Cityscapes frame; below PIL's own bomb error (179 M), above its warning (89 M)
MAX_IMAGE_PIXELS = 1 << 27


def available_memory() -> int:
    """Bytes of memory this process may still use: MemAvailable from /proc/meminfo (Linux), else total RAM."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62   # unknown: do not refuse


def free_disk(path: Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human(n_bytes: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as `df -H` prints)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n_bytes) < 1000 or unit == "PB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} PB"


def require_memory(n_bytes: float, what: str) -> None:
    """UserError when `n_bytes` exceed the memory available now; `what` names the flag or file asking for it."""
    available = available_memory()
    if n_bytes > available:
        raise UserError(f"{what}: needs about {human(n_bytes)} of memory, {human(available)} available")


def require_disk(n_bytes: float, where: Path, what: str) -> None:
    """UserError when `n_bytes` exceed the free space on `where`'s file system."""
    free = free_disk(where)
    if n_bytes > free:
        raise UserError(f"{what}: needs about {human(n_bytes)} on {where}, {human(free)} free")
