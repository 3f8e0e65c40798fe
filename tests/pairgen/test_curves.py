"""Training-curve PNGs drawn from JSON-lines logs (pairgen.core.curves)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from pairgen.core.curves import GAN_PANELS, plot_curves, read_log


def _log(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_log_keeps_points_and_skips_torn_or_foreign_lines(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.jsonl", [
        json.dumps({"event": "tick", "step": 10, "critic_loss": -3.0}),
        json.dumps({"event": "resume", "step": 10, "checkpoint": "ckpt-0000010.pt"}),
        '{"event": "tick", "step": 2',                        # torn by a kill mid-append
        json.dumps({"iteration": 5}), "[1, 2]",
        json.dumps({"event": "tick", "step": 20, "critic_loss": float("nan")}),
    ])
    records = read_log(log, "step")
    assert [r["step"] for r in records] == [10, 10, 20]


def test_plot_curves_draws_a_png_and_nothing_for_an_empty_log(tmp_path: Path) -> None:
    ticks = [{"event": "tick", "step": s, "critic_loss": -s / 10, "wasserstein": s / 8, "gp": 0.1,
              "generator_loss": 1.0, "diversity": 0.2} for s in range(10, 110, 10)]
    log = _log(tmp_path / "log.jsonl", [json.dumps(t) for t in ticks])
    out = plot_curves(log, tmp_path / "curves.png", "step", GAN_PANELS, "a GAN")
    assert out == tmp_path / "curves.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 3 * image.height   # five panels side by side
    two = plot_curves(log, tmp_path / "loss.png", "step", ((("critic_loss", "gp"), "two series"),), "t", mark_x=50)
    assert two is not None and two.exists()
    empty = _log(tmp_path / "empty.jsonl", [json.dumps({"event": "resume", "checkpoint": "x"})])
    assert plot_curves(empty, tmp_path / "none.png", "step", GAN_PANELS, "nothing") is None
    assert not (tmp_path / "none.png").exists()
