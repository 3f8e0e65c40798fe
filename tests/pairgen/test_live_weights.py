"""pairgen.checkpoint.derive_live_run (scripts/live_weights.py): the live weights of a weight-averaged run are the run without the average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pairgen.checkpoint import derive_live_run, load_checkpoint, load_generator
from pairgen.core.errors import UserError
from pairgen.presets import GANConfig
from pairgen.train import train
from tests.fixtures import small_config



def test_live_weights_equal_a_run_without_the_average(tmp_path: Path, real: Path) -> None:
    derive = derive_live_run
    gan = tmp_path / "ws" / "gan"
    averaged = small_config(iters=3, tick_every=1, ema_kimg=0.01, diffaug="translation,cutout")
    train(averaged, gan / "00000-tiny", real, show_progress=False)
    plain = train(small_config(iters=3, tick_every=1, diffaug="translation,cutout"), tmp_path / "plain", real,
                  show_progress=False)
    derived = derive(gan / "00000-tiny")
    assert derived == gan / "00001-tiny" and derive(gan / "00000-tiny") == derived   # once, then found again
    assert GANConfig.load(derived / "config.json").ema_kimg == 0.0
    state = load_checkpoint(sorted((derived / "checkpoints").glob("ckpt-*.pt"))[-1])
    assert "generator_ema" not in state and state["config"]["ema_kimg"] == 0.0
    # the average never fed back: the derived generator is the one trained without it, bit for bit
    live, _, meta = load_generator(derived)
    reference, _, _ = load_generator(plain)
    assert meta["weights"] == "live"
    for name, value in reference.state_dict().items():
        assert torch.equal(live.state_dict()[name], value)
    with pytest.raises(UserError, match="no weight average"):
        derive(tmp_path / "plain")
