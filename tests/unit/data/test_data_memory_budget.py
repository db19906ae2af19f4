"""Datasets are budgeted before they are decoded (issue 13, item 9): an npz is sized from its array headers, a
prepared set from its sample count and the model's input size, against the worker's memory budget."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.worker_contract import MEMORY_BUDGET_ENV
from edgequant.data.datasets import index_dataset, npz_array_bytes
from edgequant.data.loader import prepare_set
from edgequant.util.errors import InvalidInputError


def test_npz_headers_give_the_decoded_size_without_loading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((2000, 128, 128, 3), np.uint8), y=np.zeros(2000, np.int64))
    assert path.stat().st_size < 2**20  # 98 MiB of zeros compress to almost nothing
    tracemalloc.start()
    arrays = npz_array_bytes(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert arrays["x"][0] == (2000, 128, 128, 3) and arrays["x"][2] == 2000 * 128 * 128 * 3
    assert arrays["y"][2] == 2000 * 8
    assert peak < 2**20  # headers only: far below the 98 MiB the arrays decode to


def test_an_npz_past_the_budget_is_refused_naming_the_numbers_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((2000, 128, 128, 3), np.uint8), y=np.zeros(2000, np.int64))
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "64Mi")
    tracemalloc.start()
    with pytest.raises(InvalidInputError) as err:
        index_dataset(path, layout=api.DatasetLayout.NPZ, uri="s3://b/bomb.npz", labels=api.DatasetLabels.AUTO)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(err.value)
    assert "s3://b/bomb.npz" in message and "[2000, 128, 128, 3]" in message
    assert "93.8 MiB" in message and "64.0 MiB" in message and "50%" in message
    assert "spec.resources.limits.memory" in message
    assert peak < 8 * 2**20  # refused before the arrays were decoded
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "256Mi")  # within the budget it loads
    assert (
        len(
            index_dataset(
                path, layout=api.DatasetLayout.NPZ, uri="s3://b/bomb.npz", labels=api.DatasetLabels.AUTO
            ).samples
        )
        == 2000
    )


def test_a_prepared_set_past_the_budget_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.npz"
    np.savez(path, x=np.zeros((300, 8, 8, 3), np.uint8), y=np.arange(300) % 3)
    index = index_dataset(path, layout=api.DatasetLayout.NPZ, uri="s3://b/small.npz", labels=api.DatasetLabels.AUTO)
    contract = api.InputContract.model_validate({"shape": [512, 512, 3]})  # each sample 768 KiB at model size
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "128Mi")
    with pytest.raises(
        InvalidInputError, match=r"the evaluation set \(300 samples of 512x512x3 pixels.*225.0 MiB.*128.0 MiB"
    ):
        prepare_set(index, name="evaluation", contract=contract, samples=300, seed=0)
    assert len(prepare_set(index, name="evaluation", contract=contract, samples=50, seed=0)) == 50
