"""Tiny synthetic shard trees for tests that must not depend on an adapter or real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairgen import shards, wgan_gp

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def disc_pair(rng: np.random.Generator, height: int, width: int, channels: int, n_classes: int):
    """One learnable pair: bright discs (class k at intensity ~k) on a dark noisy background.

    Returns (image uint8 H×W×C, mask uint8 H×W with ids in [0, n_classes)).
    """
    rows, cols = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    image = rng.normal(40, 10, (height, width)).astype(np.float32)
    for k in range(1, n_classes):
        r = rng.uniform(0.15, 0.25) * min(height, width)
        cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
        mask[inside] = k
        image[inside] = 80 + 160 * k / max(1, n_classes - 1) + rng.normal(0, 5, inside.sum())
    image = np.clip(image, 0, 255).astype(np.uint8)[..., None].repeat(channels, axis=2)
    return image, mask


def make_real_split(directory: Path, n: int, height: int = 32, width: int = 32, channels: int = 1,
                    class_names: tuple[str, ...] = ("background", "left lung"), split: str = "train",
                    dataset: str = "test-discs", fold: str = "fold1", seed: int = 0,
                    full_scale: int = 2, spacing_mm: float = 0.7) -> Path:
    """Write one real shard directory (n samples) with a manifest; test splits get full-resolution masks."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [disc_pair(rng, height, width, channels, len(class_names)) for _ in range(n)]
    arrays = {
        "images": np.stack([p[0] for p in pairs]),
        "masks": np.stack([p[1] for p in pairs]),
        "sample_index": np.arange(n, dtype=np.int64),
        "case_id": [f"case{i:03d}" for i in range(n)],
        "spacing_mm": np.full((n, 2), spacing_mm / full_scale, np.float32),
    }
    if split == "test":
        full = [np.kron(p[1], np.ones((full_scale, full_scale), np.uint8)) for p in pairs]
        arrays["full_masks"] = full
        arrays["full_shapes"] = np.array([m.shape for m in full], np.int32)
    attrs = {"kind": "real", "dataset": dataset, "split": split, "fold": fold, "class_names": list(class_names)}
    info = shards.write_shard(directory / shards.SHARD_PATTERN.format(0), arrays, attrs)
    shards.write_manifest(directory, attrs, [info])
    return directory


def make_real_tree(parent: Path, n_train: int = 24, n_val: int = 8, n_test: int = 8, **kwargs) -> Path:
    """parent/{train,val,test} real shard directories, as `pairgen prepare` lays them out."""
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        make_real_split(Path(parent) / split, n, split=split, seed=offset, **kwargs)
    return Path(parent)


# ------------------------------------------------------------------------------------------- tiny GAN helpers
GAN_CLASSES = ("background", "left lung")
ORIGINAL_CRITIC_LOSS = wgan_gp.critic_loss   # captured at import, before any test patches it


def tiny_gan_config():
    """The 32×32 scr-lung generator/critic of the checkpoint and export tests (narrow, z_dim 8)."""
    from pairgen.presets import make_config

    return make_config("scr-lung", "tiny", class_names=GAN_CLASSES, g_channels=(16, 8, 4), d_channels=(4, 8, 16),
                       z_dim=8, keep_checkpoints=2)


def small_config(**overrides):
    """A 16×16 GAN training config that runs 6 iterations in about a second on one CPU thread."""
    from pairgen.presets import make_config

    values = dict(class_names=GAN_CLASSES, height=16, width=16, g_channels=(16, 8, 4), d_channels=(4, 8, 16),
                  z_dim=16, batch_size=4, iters=6, tick_every=2, sample_every=3, checkpoint_every=3, device="cpu",
                  seed=3)
    return make_config("scr-lung", "tiny", **{**values, **overrides})


def ticks(run: Path) -> list[dict]:
    """The 'tick' records of a GAN run's log.jsonl."""
    import json

    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [line for line in lines if line["event"] == "tick"]


def make_state(step: int, config=None) -> dict:
    """A complete GAN checkpoint state (one Adam step taken, so optimiser states are non-empty)."""
    import torch

    from pairgen import checkpoint as ckpt
    from pairgen.core import torchio
    from pairgen.networks import build_critic, build_generator

    config = config or tiny_gan_config()
    torch.manual_seed(step)
    generator, critic = build_generator(config), build_critic(config)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    generator(torch.randn(2, config.z_dim)).mean().backward()
    opt_g.step()
    return {"format": ckpt.FORMAT, "version": ckpt.VERSION, "config": config.to_json(), "step": step,
            "generator": generator.state_dict(), "critic": critic.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "rng": torchio.capture_rng(),
            "data_order": {"n": 4, "seed": 0, "epoch": 1, "position": 2}, "dataset": config.dataset,
            "fold_id": config.fold_id, "class_names": list(config.class_names)}


def make_checkpoint(run_dir: Path, config=None, step: int = 20) -> Path:
    """A loadable checkpoint with non-trivial batch-norm running statistics (eval mode must use them)."""
    import torch

    from pairgen import checkpoint as ckpt
    from pairgen.core import torchio
    from pairgen.networks import build_critic, build_generator

    config = config or tiny_gan_config()
    torch.manual_seed(1)
    generator, critic = build_generator(config), build_critic(config)
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "config": config.to_json(), "step": step,
             "generator": generator.state_dict(), "critic": critic.state_dict(), "opt_g": {}, "opt_d": {},
             "rng": torchio.capture_rng(), "data_order": {}, "dataset": config.dataset, "fold_id": config.fold_id,
             "class_names": list(config.class_names)}
    path = ckpt.checkpoint_path(run_dir, step)
    ckpt.save_checkpoint(path, state)
    return path


def nan_gp_at_call(call: int):
    """wgan_gp.critic_loss whose penalty (and so loss) is NaN at its `call`-th call (1-based)."""
    calls, original = {"n": 0}, ORIGINAL_CRITIC_LOSS   # not a patched one left by an earlier test

    def flaky(critic, real_batch, fake, gp_lambda, **kwargs):
        loss, terms = original(critic, real_batch, fake, gp_lambda, **kwargs)
        calls["n"] += 1
        if calls["n"] == call:
            terms["gp"] = terms["gp"] * float("nan")
            loss = loss + terms["gp"]
        return loss, terms

    return flaky


def nan_loss_always(*args, **kwargs):
    """wgan_gp.critic_loss with a NaN loss (finite terms) at every call."""
    loss, terms = ORIGINAL_CRITIC_LOSS(*args, **kwargs)
    return loss * float("nan"), terms


def run_cli(monkeypatch, capsys, tool: str, *args: str) -> tuple[int, str, str]:
    """Run `pairgen`/`segbench` ARGS in-process through its real entry point (run_app: one-line errors);
    returns (exit code, stdout, stderr)."""
    import sys

    from pairgen.cli import main as pairgen_main
    from segbench.cli import main as segbench_main

    monkeypatch.setattr(sys, "argv", [tool, *args])
    capsys.readouterr()
    code = 0
    try:
        (pairgen_main if tool == "pairgen" else segbench_main)()
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def kill_after_save(monkeypatch, train_module, iteration: int) -> None:
    """segbench.train's save_state that raises KeyboardInterrupt once, right after the training state of `iteration`
    is written (a kill between checkpoint and the next log line); every later save is a plain save, so the resumed
    run needs nothing restored."""
    save = train_module.save_state
    killed = []

    def save_then_die(path, state, *args, **kwargs):
        save(path, state, *args, **kwargs)
        if state["iteration"] == iteration and not killed:
            killed.append(iteration)
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(train_module, "save_state", save_then_die)
