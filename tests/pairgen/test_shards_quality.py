"""Schema 2: the optional per-pair `quality` dataset; version 1 shards still read and verify."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pairgen import shards
from pairgen.core.errors import UserError
from pairgen.verify import verify_directory
from tests.segbench.test_run import make_synthetic_export


def test_version_1_shards_still_read_and_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(shards, "SCHEMA_VERSION", 1)
        old = make_synthetic_export(tmp_path / "v1", n=6)
    with h5py.File(old / "shard-00000.h5") as h5:
        assert h5.attrs["schema_version"] == 1 and "quality" not in h5
    assert shards.read_manifest(old).attrs["schema_version"] == 1
    assert verify_directory(old) == []
    loaded = shards.load_shards(old)
    assert len(loaded) == 6 and loaded.quality is None


def test_add_quality_round_trip(tmp_path: Path) -> None:
    directory = make_synthetic_export(tmp_path / "e", n=6)
    before = shards.load_shards(directory, with_raw=True)
    scores = np.array([0.1, 0.9, 0.5, 1.0, 0.0, 0.75])
    shards.add_quality(directory, scores)
    assert verify_directory(directory) == []
    after = shards.load_shards(directory, with_raw=True)   # checksums of the rewritten shards match
    np.testing.assert_array_equal(after.quality, scores.astype(np.float32))
    np.testing.assert_array_equal(after.images, before.images)
    np.testing.assert_array_equal(after.masks_raw, before.masks_raw)
    assert after.attrs["schema_version"] == 2 and after.attrs["trained_fold"] == "fold1"
    with h5py.File(directory / "shard-00000.h5") as h5:      # plain h5py reads the new dataset
        assert h5["quality"].dtype == np.float32 and h5.attrs["schema_version"] == 2
        np.testing.assert_allclose(h5["quality"][:], scores)
    with pytest.raises(UserError, match="6 samples"):
        shards.add_quality(directory, scores[:4])


def test_unknown_schema_version_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "SCHEMA_VERSION", 3)
    directory = make_synthetic_export(tmp_path / "v3", n=2)
    monkeypatch.undo()
    with pytest.raises(UserError, match="schema_version 3"):
        shards.load_shards(directory)
    assert any("schema_version 3" in p for p in verify_directory(directory))
