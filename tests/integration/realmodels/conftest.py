"""Real pretrained classifiers on real photographs (tests/realmodels.py: weights and photos from packages, cached).

- ``photos``: calibration.npz (500) and evaluation.npz (300) tiles of disjoint photographs, unlabeled (y = 0).
- ``lite0_onnx`` / ``lite0_keras`` / ``nsfw_onnx``: the models with their ``model.input`` contracts.
- ``model_inputs(model, split, samples)``: float32 model inputs through edgequant's own data pipeline
  (``prepare_set`` + ``normalize``), so the tests exercise the contract exactly as the worker applies it.
- ``real_spec(model, method, out, **extra)``: a QuantizationJob spec dict on the photographs with file:// URIs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import realmodels
from tests.realmodels import PhotoSets, RealModel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def photos() -> PhotoSets:
    return realmodels.photo_sets()


@pytest.fixture(scope="session")
def lite0_onnx() -> RealModel:
    return realmodels.efficientnet_lite0_onnx()


@pytest.fixture(scope="session")
def lite0_keras() -> RealModel:
    return realmodels.efficientnet_lite0_keras()


@pytest.fixture(scope="session")
def nsfw_onnx() -> RealModel:
    return realmodels.open_nsfw_onnx()


def contract_of(model: RealModel) -> Any:
    from edgequant.api import v1alpha1 as api

    return api.InputContract.model_validate(model.contract)


@pytest.fixture(scope="session")
def model_inputs(photos: PhotoSets) -> Callable[[RealModel, str, int], np.ndarray]:
    from edgequant.api import v1alpha1 as api
    from edgequant.data.datasets import index_dataset
    from edgequant.data.loader import prepare_set

    def make(model: RealModel, split: str, samples: int) -> np.ndarray:
        path: Path = getattr(photos, split)
        index = index_dataset(path, layout=api.DatasetLayout.NPZ, uri=path.as_uri())
        prepared = prepare_set(index, name=split, contract=contract_of(model), samples=samples, seed=0)
        return np.concatenate([x for x, _ in prepared.batches(batch_size=64)])

    return make


@pytest.fixture(scope="session")
def real_spec(photos: PhotoSets) -> Callable[..., dict[str, Any]]:
    def make(model: RealModel, method: str, out: Path, *, samples: int = 100, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "method": method,
            "model": {"uri": model.uri, "input": model.contract},
            "calibration": {
                "dataset": {"uri": photos.calibration.as_uri(), "layout": "npz", "labels": "none"},
                "samples": samples,
            },
            "evaluation": {
                "dataset": {"uri": photos.evaluation.as_uri(), "layout": "npz", "labels": "none"},
                "samples": samples,
            },
            "output": {"uri": out.as_uri() + "/"},
        }
        spec.update(extra)
        return spec

    return make
