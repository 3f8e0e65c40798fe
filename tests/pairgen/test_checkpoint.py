"""Checkpoints: round trip, atomic saves, pruning, and refusal of crafted or broken files."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pairgen import checkpoint as ckpt
from pairgen.core import torchio
from pairgen.core.errors import UserError
from pairgen.shards import sha256_file
from tests.fixtures import make_state, tiny_gan_config

CONFIG = tiny_gan_config()


def test_round_trip_and_load_generator(tmp_path: Path) -> None:
    state = make_state(3)
    path = ckpt.checkpoint_path(tmp_path, 3)
    ckpt.save_checkpoint(path, state)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["data_order"]["position"] == 2
    assert torch.equal(loaded["generator"]["project.weight"], state["generator"]["project.weight"])
    generator, config, meta = ckpt.load_generator(path)
    assert config == CONFIG and not generator.training
    assert meta == {"sha256": sha256_file(path), "dataset": "scr-lung", "fold_id": "fold1",
                    "class_names": ["background", "left lung"], "step": 3, "path": str(path), "weights": "live"}
    assert torch.equal(generator.state_dict()["project.weight"], state["generator"]["project.weight"])
    assert ckpt.load_generator(tmp_path)[2]["step"] == 3          # a run dir resolves to its newest checkpoint


def test_rng_state_survives_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(5)
    np.random.seed(5)
    rng = torchio.capture_rng()
    expected = (torch.rand(3), np.random.rand(3))
    path = tmp_path / "ckpt-0000001.pt"
    ckpt.save_checkpoint(path, {**make_state(1), "rng": rng})
    torch.rand(10), np.random.rand(10)
    torchio.restore_rng(ckpt.load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(first, make_state(1, dataclasses.replace(CONFIG, keep_checkpoints=1)))
    before = first.read_bytes()

    def torn_save(obj, handle):              # write half a file, then fail like a full disk would
        handle.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 2), make_state(2))
    monkeypatch.undo()
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]   # no torn file, no temp left
    assert first.read_bytes() == before and ckpt.load_checkpoint(first)["step"] == 1
    assert ckpt.newest_checkpoint(tmp_path) == first


def test_prunes_to_keep_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), make_state(step))
    (tmp_path / "checkpoints" / ".ckpt-0000009.pt.x.tmp").write_bytes(b"torn")   # a crashed save's leftover
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.pt"))
    assert names == ["ckpt-0000002.pt", "ckpt-0000003.pt"]
    assert ckpt.newest_checkpoint(tmp_path).name == "ckpt-0000003.pt"
    assert ckpt.newest_checkpoint(tmp_path / "empty") is None


def test_refuses_non_finite_weights(tmp_path: Path) -> None:
    state = make_state(1)
    state["critic"]["score.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="critic.score.weight"):
        ckpt.save_checkpoint(tmp_path / "ckpt-0000001.pt", state)
    assert not list(tmp_path.iterdir())


class Payload:
    """Unpickling this would create a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip"])
def test_crafted_pickle_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-0000001.pt"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps({"format": ckpt.FORMAT, "generator": Payload(marker)}))
    else:
        torch.save({"format": ckpt.FORMAT, "generator": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UserError, match=str(path)):
        ckpt.load_checkpoint(path)
    with pytest.raises(UserError, match=str(path)):
        ckpt.load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "truncated", "foreign", "future"])
def test_broken_or_foreign_files_are_user_errors(tmp_path: Path, content) -> None:
    path = tmp_path / "ckpt-0000001.pt"
    if content == "truncated":
        ckpt.save_checkpoint(path, make_state(1))
        path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    elif content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "future":
        torch.save({**make_state(1), "version": 99}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        ckpt.load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="holds no checkpoints"):
        ckpt.load_generator(tmp_path)
