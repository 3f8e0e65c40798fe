"""Derive, from a GAN run trained with a generator weight average (ema_kimg > 0), the run without it.

The average never feeds back into training (pairgen.train: the critic and generator steps read the live
weights only, and the average is a separate copy), so the live weights of an ema_kimg > 0 run are exactly the
weights the same run with ema_kimg = 0 would have reached. This writes them as a run of their own, beside the
source under <ws>/<dataset>/<fold>/gan/NNNNN-<preset>/: config.json and every checkpoint with ema_kimg = 0 and
no generator_ema, plus derived_from.txt naming the source. `segbench sweep` then finds it as the trained GAN of
a manifest that sets the same [gan] fields without ema_kimg (docs/RESULTS.md "Making synthetic pairs help"
uses it for the "+ DiffAugment" rows, so the study trains one GAN, not two, for "+DA" and "+DA + average").

    python scripts/live_weights.py WORKSPACE/scr-lung/fold1-frac10/gan/00001-small
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pairgen.checkpoint import _checkpoints, load_checkpoint, save_checkpoint
from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_json
from pairgen.presets import GANConfig


def derive(source: Path) -> Path:
    """The derived run directory (created once; a second call returns the existing one)."""
    config = GANConfig.load(source / "config.json")
    if not config.ema_kimg:
        raise UserError(f"{source}: ema_kimg is 0, the run has no weight average to drop")
    parent = source.parent
    for run in sorted(parent.iterdir()):
        if (run / "derived_from.txt").is_file() and (run / "derived_from.txt").read_text().strip() == str(source):
            return run
    numbers = [int(p.name.split("-")[0]) for p in parent.iterdir() if p.name.split("-")[0].isdigit()]
    target = parent / f"{max(numbers, default=-1) + 1:05d}-{config.preset}"
    work = parent / f".{target.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    (work / "checkpoints").mkdir(parents=True)
    live = config.to_json() | {"ema_kimg": 0.0}
    atomic_write_json(work / "config.json", live)
    for name in ("log.jsonl", "curves.png"):
        if (source / name).is_file():
            shutil.copy2(source / name, work / name)
    for _, path in _checkpoints(source / "checkpoints"):
        state = load_checkpoint(path)
        state.pop("generator_ema", None)
        state["config"] = dict(state["config"]) | {"ema_kimg": 0.0}
        save_checkpoint(work / "checkpoints" / path.name, state)
    (work / "derived_from.txt").write_text(f"{source}\n")
    work.rename(target)   # atomic: a half-written copy is never taken for a trained run
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/live_weights.py GAN_RUN_DIR")
    try:
        print(derive(Path(sys.argv[1]).resolve()))
    except UserError as exc:
        sys.exit(f"error: {exc}")
