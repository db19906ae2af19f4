"""Balanced, deterministic sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgequant.data.sampling import balanced_sample


def test_balanced_across_classes() -> None:
    labels = np.array([0] * 500 + [1] * 100 + [2] * 40)
    chosen = balanced_sample(labels, 90, seed=0)
    assert Counter(labels[chosen].tolist()) == {0: 30, 1: 30, 2: 30}
    assert len(set(chosen.tolist())) == 90


def test_small_classes_are_exhausted_then_others_fill_up() -> None:
    labels = np.array([0] * 500 + [1] * 100 + [2] * 10)
    counts = Counter(labels[balanced_sample(labels, 300, seed=1)].tolist())
    assert counts == {0: 190, 1: 100, 2: 10}


def test_deterministic_per_seed() -> None:
    labels = np.repeat(np.arange(10), 50)
    a, b = balanced_sample(labels, 100, seed=7), balanced_sample(labels, 100, seed=7)
    assert a.tolist() == b.tolist()
    assert a.tolist() != balanced_sample(labels, 100, seed=8).tolist()


def test_more_than_available_returns_everything_once() -> None:
    labels = np.array([3, 3, 1])
    assert sorted(balanced_sample(labels, 10, seed=0).tolist()) == [0, 1, 2]
    assert balanced_sample(labels, 0, seed=0).size == 0
