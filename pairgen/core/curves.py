"""Training curves as a PNG next to the JSON-lines log they are drawn from (people would rather look than read).

pairgen train writes <run>/curves.png with every sample sheet (critic loss, Wasserstein estimate, gradient
penalty, generator loss, sample diversity against the generator iteration; with scoring on, also the judge's
alignment and Fréchet distance, the best step marked); segbench run writes <run>/curves.png
when training ends (train and validation loss against the iteration, the kept best iteration marked). The log
stays the record; the picture is redrawn from it, so a resumed run's picture shows the whole run.
matplotlib is imported inside the function and drives the Agg canvas directly (no global backend switch).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

from pairgen.core.files import atomic_write_bytes

GAN_PANELS = (("critic_loss", "critic loss"), ("wasserstein", "Wasserstein estimate"), ("gp", "gradient penalty"),
              ("generator_loss", "generator loss"), ("diversity", "sample diversity"))
# pair quality ('score' records of pairgen train --score-every): drawn only when the log holds them
QUALITY_PANELS = (("alignment", "alignment (judge Dice/mIoU)"), ("fd", "Fréchet distance (judge features)"))


def read_log(path: Path, x_key: str) -> list[dict]:
    """The JSON lines of `path` that carry `x_key` (unreadable or torn lines are skipped: the log is appended)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get(x_key), (int, float)):
            records.append(record)
    return records


def _series(records: list[dict], x_key: str, key: str) -> tuple[list[float], list[float]]:
    points = [(r[x_key], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


Panels = Sequence[tuple[str | tuple[str, ...], str]]


def plot_curves(log_path: Path, out: Path, x_key: str, panels: Panels, title: str, mark_x: float | None = None,
                optional: Panels = ()) -> Path | None:
    """Small multiples, one panel per (key or keys, label), of the log's values against `x_key`, then each of the
    `optional` panels whose key the log holds; a vertical line at `mark_x` (e.g. the best iteration). Returns the
    PNG path, or None when the log has no points yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_log(log_path, x_key)
    if not records:
        return None
    panels = [*panels, *(p for p in optional
                         if any(_series(records, x_key, k)[0] for k in ((p[0],) if isinstance(p[0], str) else p[0])))]
    fig = Figure(figsize=(max(5.0, 3.2 * len(panels)), 2.8))
    FigureCanvasAgg(fig)
    for i, (keys, label) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in (keys,) if isinstance(keys, str) else keys:
            xs, ys = _series(records, x_key, key)
            if xs:
                ax.plot(xs, ys, linewidth=1.2, label=key.replace("_", " "))
        if mark_x is not None:
            ax.axvline(mark_x, color="grey", linestyle="--", linewidth=0.8)
        if not isinstance(keys, str):
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(x_key.replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)
