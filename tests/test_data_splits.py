"""Every stratified split in mmbal, pinned: the ids below were produced by the three implementations
that existed before they were folded into one (``base.stratified_split``, ``assemble.carve_val`` and
the seeded split of ``mmbal prepare cremad``), so a change of any split's ids fails here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from trainables.data.cremad import CremaDPrepareParams, CremaDRecipe
from trainables.data.io.assemble import carve_val
from trainables.data.io.base import stratified_split
from trainables.data.io.lists import Sample
from trainables.data.mfeat import load_views


def digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]


def test_mfeat_default_split_is_pinned():
    _, labels = load_views()
    split = stratified_split(labels, {"train": 50, "val": 50, "test": 100}, 0)
    assert {k: (len(v), digest(v)) for k, v in split.items()} == {
        "train": (500, "fb866afe3b0c81a4"),
        "val": (500, "3c867511c397c543"),
        "test": (1000, "35aa9fa2e28ad3e3"),
    }


def test_counts_fractions_and_rest_are_pinned():
    labels = np.array([2, 0, 1, 2, 2, 0, 1, 2, 0, 2, 2, 1])
    split = stratified_split(labels, {"train": 2, "val": 0.25, "test": -1}, 7)
    assert {k: v.tolist() for k, v in split.items()} == {
        "train": [0, 1, 6, 8, 10, 11],
        "val": [2, 3, 5, 9],
        "test": [4, 7],
    }


def uneven_samples() -> list[Sample]:
    """Classes of 1, 2, 3, 7 and 10 samples in a shuffled order."""
    rows = [c for c, n in {0: 1, 1: 2, 2: 3, 3: 7, 4: 10}.items() for _ in range(n)]
    order = np.random.default_rng(123).permutation(len(rows))
    return [Sample(f"s{i:02d}", rows[j], "") for i, j in enumerate(order)]


@pytest.mark.parametrize(
    "fraction,seed,val_ids",
    [
        (0.1, 0, ["s01", "s09", "s10", "s21"]),
        (0.25, 1, ["s00", "s01", "s02", "s05", "s10", "s17"]),  # round(1.75) = 2 of the class of 7
        (0.34, 3, ["s02", "s07", "s08", "s11", "s12", "s16", "s18"]),
    ],
)
def test_validation_carve_is_pinned(fraction, seed, val_ids):
    samples = uneven_samples()
    train, val = carve_val(samples, fraction, seed)
    assert [s.id for s in val] == val_ids
    assert [s.id for s in train] == [s.id for s in samples if s.id not in val_ids]  # train keeps the list order
    assert carve_val([], fraction, seed) == ([], [])


@pytest.mark.parametrize(
    "fraction,seed,test_ids",
    [
        (0.1, 0, ["1004_IEO_SAD_XX", "1006_IEO_DIS_XX", "1007_IEO_NEU_XX", "1017_IEO_ANG_XX"]),
        (0.3, 5, ["1001_IEO_ANG_XX", "1003_IEO_ANG_XX", "1009_IEO_NEU_XX", "1011_IEO_SAD_XX", "1013_IEO_DIS_XX",
                  "1014_IEO_NEU_XX"]),
    ],
)  # fmt: skip
def test_cremad_prepare_split_without_lists_is_pinned(tmp_path, fraction, seed, test_ids):
    (tmp_path / "AudioWAV").mkdir()
    counts = {"NEU": 5, "HAP": 1, "SAD": 2, "DIS": 3, "ANG": 8}  # no FEA clip at all
    clips = [f"10{(k * 7) % 19:02d}_IEO_{c}_XX" for k, c in enumerate(c for c, n in counts.items() for _ in range(n))]
    for clip in clips:
        (tmp_path / "AudioWAV" / f"{clip}.wav").write_bytes(b"")  # the split reads file names only
    items, _ = CremaDRecipe().clips(tmp_path, tmp_path, CremaDPrepareParams(test_fraction=fraction, split_seed=seed))
    assert [it.id for it in items] == sorted(clips)
    assert [it.id for it in items if it.split == "test"] == test_ids
