"""Balanced, deterministic choice of N samples. Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_sample(labels: Sequence[int] | np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Indices of up to ``n`` samples, drawn round-robin over classes from per-class shuffles.

    Every class contributes equally until it runs out; the same labels, n and
    seed always give the same indices, whatever order the files were listed in
    (callers list files sorted).
    """
    labels = np.asarray(labels)
    if n <= 0 or labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    depth = max(len(g) for g in groups)
    # Column-major walk of the [class, rank] table = round robin.
    table = np.full((len(groups), depth), -1, dtype=np.int64)
    for row, group in enumerate(groups):
        table[row, : len(group)] = group
    order = table.T.ravel()
    return order[order >= 0][:n]
