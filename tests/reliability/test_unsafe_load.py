"""Promise 4: checkpoints and training states load with torch.load(weights_only=True) only, on a torch without the
known weights_only bypass; a crafted pickle that would run code is refused by every entry point and runs nothing.

The payload's side effect is a marker file: the tests check it never appears. (Loading of crafted files by
pairgen.checkpoint itself is also covered in tests/pairgen/test_checkpoint.py.)
"""

from __future__ import annotations

import ast
import contextlib
import pickle
from pathlib import Path
from typing import Iterator

import pytest
import torch

from pairgen import checkpoint as ckpt
from pairgen.core import torchio
from pairgen.core.errors import UserError
from pairgen.export import export
from pairgen.core.workspace import real_dir
from tests.fixtures import make_real_tree, small_config
from tests.reliability import faults

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates `marker`: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted(path: Path, marker: Path, content: dict, container: str = "torch-zip") -> Path:
    """A file at `path` that runs Payload(marker) when unpickled without weights_only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {**content, "evil": Payload(marker)}
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    assert not marker.exists()
    return path


@contextlib.contextmanager
def payload_never_runs(marker: Path) -> Iterator[None]:
    """Fails with 'the payload ran' when `marker` exists after the block, whatever the block raised."""
    try:
        yield
    finally:
        assert not marker.exists(), "the crafted pickle's payload ran"


def gan_like(step: int = 1) -> dict:
    """Looks like a pairgen checkpoint from the outside (format, version, keys)."""
    return {"format": ckpt.FORMAT, "version": ckpt.VERSION, **{k: {} for k in ckpt.REQUIRED_KEYS[2:]},
            "step": step}


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_crafted_gan_checkpoint_runs_nothing_through_export_sample_and_train(
        tmp_path: Path, container: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    marker, ws = tmp_path / "pwned", tmp_path / "ws"
    run = ws / "scr-lung" / "fold1" / "gan" / "00000-tiny"
    evil = crafted(run / "checkpoints" / "ckpt-0000001.pt", marker, gan_like(), container)
    config = small_config()
    config.save(run / "config.json")              # a resumable run whose newest checkpoint is the crafted file
    make_real_tree(real_dir(ws, config.dataset, config.fold_id, config.height, config.width), 4, 2, 2,
                   height=16, width=16)
    with payload_never_runs(marker), pytest.raises(UserError, match="ckpt-0000001.pt"):
        export(evil, tmp_path / "out", 4, show_progress=False)
    for args in (["sample", "--checkpoint", str(evil), "--out", str(tmp_path / "s.png")],
                 ["export", "--checkpoint", str(evil), "--out", str(tmp_path / "e"), "--n", "4"],
                 ["export", "--workspace", str(ws), "--n", "4"],      # found as the newest run's checkpoint
                 ["train", "--resume", str(run), "--workspace", str(ws)]):
        with payload_never_runs(marker):
            code, err = faults.cli(monkeypatch, capsys, "pairgen", *args)
        assert code == 2 and "Traceback" not in err and "ckpt-0000001.pt" in err, (args, err)


def test_crafted_segbench_weights_and_training_state_run_nothing(tmp_path: Path) -> None:
    from segbench.predict import load_weights

    marker = tmp_path / "pwned"
    crafted(tmp_path / "run" / "weights.pt", marker, {"meta": {}, "state_dict": {}})
    with payload_never_runs(marker), pytest.raises(UserError, match="weights.pt"):
        load_weights(tmp_path / "run", torch.device("cpu"))
    state = crafted(tmp_path / "seg" / "training_state.pt", marker, {"model": {}})
    with payload_never_runs(marker), pytest.raises(UserError, match="training_state.pt"):
        resume_segbench(state.parent)


def resume_segbench(run_dir: Path) -> None:
    """segbench's resume path on `run_dir` (a tiny U-Net on a tiny split)."""
    from pairgen.shards import load_shards
    from segbench.mixing import MixedBatches, RealSource
    from segbench.presets import make_config
    from segbench.train import train_segmentation
    from segbench.unet import build_unet
    from tests.fixtures import make_real_split

    train = load_shards(make_real_split(run_dir.parent / "real" / "train", 4, height=16, width=16))
    val = load_shards(make_real_split(run_dir.parent / "real" / "val", 2, height=16, width=16, split="val"))
    config = make_config("test-discs", "tiny", depth=2, filters=4, max_iters=2, val_every=1, real_per_batch=2,
                         synth_per_batch=0)
    batches = MixedBatches(RealSource(train, "cpu"), None, 2, 0, torch.Generator().manual_seed(0))
    train_segmentation(config, build_unet(config, 1, 2), batches, val, run_dir, resume=True, show_progress=False)


@pytest.mark.parametrize("version, safe", [("2.5.1", False), ("2.5.1+cu124", False), ("1.13.0", False),
                                           ("2.6.0", True), ("2.6.0+cpu", True), ("2.10.1", True), ("3.0", True),
                                           ("garbage", False)])
def test_torch_version_gate(version: str, safe: bool) -> None:
    if safe:
        torchio.require_safe_torch(version)
    else:
        with pytest.raises(UserError, match="CVE-2025-32434"):
            torchio.require_safe_torch(version)


def test_an_old_torch_loads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a torch older than 2.6 the loaders refuse before torch.load ever sees the file."""
    from segbench.predict import load_weights

    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / "ckpt-0000001.pt", marker, gan_like())
    crafted(tmp_path / "run" / "weights.pt", marker, {})
    calls = []
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(UserError, match="torch 2.5.1 is too old"):
        ckpt.load_checkpoint(evil)
    with pytest.raises(UserError, match="torch 2.5.1 is too old"):
        load_weights(tmp_path / "run", torch.device("cpu"))
    assert calls == [] and not marker.exists()


def test_installed_torch_is_safe() -> None:
    torchio.require_safe_torch()


def test_every_torch_load_in_the_code_is_weights_only_and_nothing_unpickles() -> None:
    """Static guard: a new torch.load without weights_only=True, or a pickle.load, fails here."""
    offenders = []
    for package in ("pairgen", "segbench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if owner == "torch" and node.func.attr == "load":
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("weights_only")
                    if not (isinstance(value, ast.Constant) and value.value is True):
                        offenders.append(f"{where}: torch.load without weights_only=True")
                if owner in ("pickle", "dill", "cloudpickle", "joblib") and node.func.attr in ("load", "loads"):
                    offenders.append(f"{where}: {owner}.{node.func.attr}")
    assert offenders == []
