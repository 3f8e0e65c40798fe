"""Split protocols: sizes, disjointness, coverage, determinism, recorded lists, partial trees, low-data subsets."""

from __future__ import annotations

import random
import warnings

import pytest

from pairgen import splits
from pairgen.datasets.base import Case, Sample
from pairgen.core.errors import UserError


def fake_cases(ids: list[str], source: str = "all") -> list[Case]:
    def never() -> Sample:
        raise AssertionError("splits must not load cases")
    return [Case(i, source, never) for i in ids]


def recorded_ids(dataset: str) -> list[str]:
    lists = splits.load_protocol(dataset)["cases"]["1"]
    return sorted(c for names in lists.values() for c in names)


SCR_IDS = [f"JPCLN{i:03d}" for i in range(1, 155)] + [f"JPCNN{i:03d}" for i in range(1, 94)]


def test_scr_three_folds_thesis_sizes_and_every_case_once_as_test() -> None:
    assert recorded_ids("scr-lung") == sorted(SCR_IDS)
    cases = fake_cases(SCR_IDS)
    tests_seen: list[str] = []
    for fold in (1, 2, 3):
        split = splits.split_cases("scr-lung", cases, fold)
        sizes = {k: len(v) for k, v in split.items()}
        assert sizes["train"] == 135
        assert (sizes["val"], sizes["test"]) in ((30, 82), (29, 83))
        assert set(split["train"]).isdisjoint(split["val"]) and set(split["train"]).isdisjoint(split["test"])
        assert set(split["val"]).isdisjoint(split["test"])
        assert sorted(split["train"] + split["val"] + split["test"]) == sorted(SCR_IDS)
        tests_seen += split["test"]
    assert sorted(tests_seen) == sorted(SCR_IDS)


def test_recorded_lists_equal_the_protocol_computation() -> None:
    shapes = fake_cases([f"shape{i:04d}" for i in range(300)])
    for dataset, cases in (("scr-lung", fake_cases(SCR_IDS)), ("shapes", shapes)):
        protocol = splits.load_protocol(dataset)
        for fold in range(1, protocol["folds"] + 1):
            assert splits.compute_split(protocol, cases, fold) == protocol["cases"][str(fold)]
            assert splits.split_cases(dataset, cases, fold) == protocol["cases"][str(fold)]


def test_split_ignores_input_order_and_is_deterministic() -> None:
    shuffled = SCR_IDS[:]
    random.Random(5).shuffle(shuffled)
    in_order = splits.split_cases("scr-lung", fake_cases(SCR_IDS), 2)
    assert splits.split_cases("scr-lung", fake_cases(shuffled), 2) == in_order


def test_partial_tree_warns_and_still_partitions() -> None:
    subset = SCR_IDS[::10]                                      # 25 cases
    with pytest.warns(UserWarning, match="25 cases present, the protocol expects 247"):
        split = splits.split_cases("scr-lung", fake_cases(subset), 1)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(subset)
    assert len(split["test"]) == 9 and len(split["train"]) == 14 and len(split["val"]) == 2   # 9 | ceil(16·135/165)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # the full set never warns
        splits.split_cases("scr-lung", fake_cases(SCR_IDS), 1)


def test_train_fraction_keeps_a_nested_seeded_subset() -> None:
    cases = fake_cases(SCR_IDS)
    full = splits.split_cases("scr-lung", cases, 1)
    half = splits.split_cases("scr-lung", cases, 1, train_fraction=0.5)
    quarter = splits.split_cases("scr-lung", cases, 1, train_fraction=0.25)
    assert len(half["train"]) == 68 and len(quarter["train"]) == 34
    assert set(quarter["train"]) < set(half["train"]) < set(full["train"])
    assert half["val"] == full["val"] and half["test"] == full["test"]
    assert len(splits.split_cases("scr-lung", cases, 1, train_fraction=0.001)["train"]) == 1


def test_bad_fold_and_fraction_are_user_errors() -> None:
    cases = fake_cases(SCR_IDS)
    with pytest.raises(UserError, match="--fold 4: dataset 'scr-lung' has folds 1..3"):
        splits.split_cases("scr-lung", cases, 4)
    with pytest.raises(UserError, match="--fold 0"):
        splits.split_cases("scr-lung", cases, 0)
    with pytest.raises(UserError, match="--fold 2: dataset 'camvid' has folds 1..1"):
        splits.split_cases("camvid", cases, 2)
    with pytest.raises(UserError, match="train-fraction"):
        splits.split_cases("scr-lung", cases, 1, train_fraction=1.5)


def test_cityscapes_holdout_sizes() -> None:
    cases = (fake_cases([f"t{i:04d}" for i in range(2975)], "train")
             + fake_cases([f"v{i:03d}" for i in range(500)], "val"))
    split = splits.split_cases("cityscapes", cases, 1)
    assert {k: len(v) for k, v in split.items()} == {"train": 2575, "val": 400, "test": 500}
    assert all(c.startswith("v") for c in split["test"]) and all(c.startswith("t") for c in split["val"])


def test_camvid_holdout_ignores_official_test_and_matches_record() -> None:
    protocol = splits.load_protocol("camvid")
    recorded = protocol["cases"]["1"]
    cases = (fake_cases(recorded["train"] + recorded["val"], "train") + fake_cases(recorded["test"], "val")
             + fake_cases([f"Seq05VD_f{i:05d}" for i in range(233)], "test"))
    assert splits.compute_split(protocol, cases, 1) == recorded
    split = splits.split_cases("camvid", cases, 1)
    assert split == recorded and {k: len(v) for k, v in split.items()} == {"train": 318, "val": 49, "test": 101}


def test_shapes_and_unknown_dataset_use_60_20_20() -> None:
    shapes = splits.split_cases("shapes", fake_cases([f"shape{i:04d}" for i in range(300)]), 1)
    assert {k: len(v) for k, v in shapes.items()} == {"train": 180, "val": 60, "test": 60}
    folder = splits.split_cases("folder", fake_cases([f"img{i:02d}" for i in range(10)]), 1)
    assert {k: len(v) for k, v in folder.items()} == {"train": 6, "val": 2, "test": 2}
