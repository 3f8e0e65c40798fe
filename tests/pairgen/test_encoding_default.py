"""The mask encoding a run gets unless it asks for one: one-hot with more than one foreground class, scalar for a
binary mask; resolved once into the run's config (an old scalar run stays scalar); sweep manifests that reproduce
the thesis pin scalar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairgen.encoding import default_encoding
from pairgen.presets import GANConfig, make_config
from pairgen.train import resolve_training

CAMVID_CLASSES = ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")


def test_default_encoding_by_class_count() -> None:
    assert [default_encoding(n) for n in (2, 3, 8, 12)] == ["scalar", "onehot", "onehot", "onehot"]


@pytest.mark.parametrize("dataset, structures, classes, encoding", [
    ("camvid", (), 8, "onehot"),                          # void + 7 categories (Cityscapes' 8)
    ("cityscapes", (), 8, "onehot"),
    ("shapes", (), 4, "onehot"),                          # background, disc, square, triangle
    ("scr-lung", (), 2, "scalar"),                        # background, left lung (the thesis' task)
    ("scr-lung", ("left lung", "heart"), 3, "onehot"),    # two foreground structures: multi-class
])
def test_default_per_dataset_is_resolved_from_the_adapters_classes(dataset, structures, classes, encoding) -> None:
    flags = make_config(dataset, "tiny", structures=structures or None)
    assert flags.mask_encoding == "auto"                  # class names unknown until the adapter is asked
    resolved = resolve_training(flags)
    assert (resolved.n_classes, resolved.mask_encoding) == (classes, encoding)
    assert resolved.mask_channels == (1 if encoding == "scalar" else classes)


def test_known_class_names_resolve_at_once_and_a_flag_overrides() -> None:
    assert make_config("folder", "tiny", class_names=("background", "road")).mask_encoding == "scalar"
    assert make_config("camvid", "tiny", class_names=CAMVID_CLASSES).mask_encoding == "onehot"
    assert resolve_training(make_config("camvid", "tiny", mask_encoding="scalar")).mask_encoding == "scalar"
    assert resolve_training(make_config("scr-lung", "tiny", mask_encoding="onehot")).mask_channels == 2
    with pytest.raises(ValueError, match="not resolved"):   # a bug, never a silent guess
        _ = make_config("camvid", "tiny").mask_channels


def test_train_flag_and_dry_run(cli, tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    code, out, err = cli("pairgen", "train", "--dataset", "camvid", "--preset", "tiny", "--workspace", ws, "--dry-run")
    assert code == 0, err
    assert json.loads(out)["mask_encoding"] == "onehot"   # the printed config is the resolved one
    code, out, err = cli("pairgen", "train", "--dataset", "camvid", "--preset", "tiny", "--mask-encoding", "scalar",
                         "--workspace", ws, "--dry-run")
    assert code == 0 and json.loads(out)["mask_encoding"] == "scalar", err
    code, _, err = cli("pairgen", "train", "--dataset", "camvid", "--mask-encoding", "rgb", "--dry-run")
    assert code == 2 and "--mask-encoding must be one of scalar, onehot, auto" in err


def test_an_old_scalar_run_keeps_loading_and_sampling_as_scalar(tmp_path: Path) -> None:
    """A CamVid run trained before one-hot became the default: config.json and checkpoint say scalar."""
    import numpy as np
    import torch

    from pairgen.checkpoint import load_generator
    from pairgen.sampling import generate_block, latents
    from tests.fixtures import make_checkpoint

    old = make_config("camvid", "tiny", class_names=CAMVID_CLASSES, image_channels=3, mask_encoding="scalar",
                      g_channels=(16, 8, 4), d_channels=(4, 8, 16), z_dim=8)
    run = tmp_path / "camvid" / "fold1" / "gan" / "00000-tiny"
    make_checkpoint(run, old)
    old.save(run / "config.json")
    assert GANConfig.load(run / "config.json").mask_encoding == "scalar"
    assert resolve_training(make_config("camvid", "tiny"), run).mask_encoding == "scalar"   # resume: as saved
    generator, config, _ = load_generator(run)
    assert config.mask_encoding == "scalar"
    z = latents(0, 0, 3, config.z_dim)
    block = generate_block(generator, z, config, torch.device("cpu"))
    assert block["masks_raw"].shape == (3, 32, 64, 1)        # one scalar channel, not 8
    with torch.no_grad():
        raw = generator(torch.from_numpy(z))[:, 3, :, :].numpy()   # the mask channel after RGB
    levels = np.clip(np.round((raw + 1) * 3.5), 0, 7)       # class k sits at -1 + 2k/7: the nearest level
    assert np.array_equal(block["masks"], levels.astype(np.uint8))
