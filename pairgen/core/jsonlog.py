"""Append-only JSON-lines logs (log.jsonl of both trainings): one object per line, a torn last line tolerated.

A process killed while appending leaves a partial last line. Readers skip it, and a resumed run trims the log back
to its checkpoint with `trim_log` (which drops the torn line too) before appending again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from pairgen.core.errors import writing
from pairgen.core.files import atomic_write_bytes


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append `record` as one line (opened and closed per record: a crash loses at most this line)."""
    with writing(path), open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole JSON object of `path` in order; torn or non-object lines are skipped."""
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:   # a line torn by a kill
            continue
        if isinstance(record, dict):
            yield record


def trim_log(path: Path, key: str, last: int) -> None:
    """Keep the records whose `key` (missing: 0) is <= `last`, dropping torn lines: a resumed run that restarts
    from a checkpoint at `last` logs the later ones again. A missing file is left missing."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [json.dumps(r) + "\n" for r in read_records(path) if r.get(key, 0) <= last]
    atomic_write_bytes(path, "".join(kept).encode())
