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

import sys
from pathlib import Path

from pairgen.checkpoint import derive_live_run
from pairgen.core.errors import UserError

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python scripts/live_weights.py GAN_RUN_DIR")
    try:
        print(derive_live_run(Path(sys.argv[1]).resolve()))
    except UserError as exc:
        sys.exit(f"error: {exc}")
