"""TFLite integration fixtures: real Fashion-MNIST data on disk, a briefly trained CNN (cached), a 1.4M-parameter model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
#: Trained test models live here between runs, keyed by a hash of the code and settings that made them.
MODEL_CACHE = ROOT / ".cache" / "test-models"


@pytest.fixture(scope="session")
def trained_cnn() -> Path:
    """The demo's CNN trained for one epoch on 12000 Fashion-MNIST images (about 85% test accuracy)."""
    from edgequant.demo.model import cached_cnn

    return cached_cnn(MODEL_CACHE, samples=12000, epochs=1)


@pytest.fixture(scope="session")
def dense_heavy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An untrained model with ~1.4M parameters, nearly all in one Dense kernel; (path, parameter count)."""
    from edgequant.demo.model import build_dense_heavy

    model = build_dense_heavy()
    path = tmp_path_factory.mktemp("dense") / "dense-heavy.keras"
    model.save(path)
    return path, int(model.count_params())


@pytest.fixture(scope="session")
def fmnist_files(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: Any) -> dict[str, Path]:
    """calibration/ (imagefolder, 300 train images, 30 a class), test/ (imagefolder, 500), train.npz (3000), test.npz (500)."""
    from edgequant.data.export import write_imagefolder, write_npz

    root = tmp_path_factory.mktemp("fmnist")
    fm = fashion_mnist
    cal = np.concatenate([np.flatnonzero(fm.train_y[-6000:] == c)[:30] for c in range(10)]) + (len(fm.train_y) - 6000)
    return {
        "calibration": write_imagefolder(root / "calibration", fm.train_x[cal], fm.train_y[cal], classes=fm.classes),
        "test": write_imagefolder(root / "test", fm.test_x[:500], fm.test_y[:500], classes=fm.classes),
        "train.npz": write_npz(root / "train.npz", fm.train_x[:3000], fm.train_y[:3000], classes=fm.classes),
        "test.npz": write_npz(root / "test.npz", fm.test_x[:500], fm.test_y[:500], classes=fm.classes),
    }


def job_spec(
    method: str,
    *,
    model: str,
    out: str,
    calibration: str | None = None,
    evaluation: str | None = None,
    training: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A QuantizationJob spec for the 28x28 gray inputs, scaled 1/255 (as the models were trained)."""
    spec: dict[str, Any] = {
        "method": method,
        "model": {"uri": model, "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "output": {"uri": out},
    }
    if calibration:
        spec["calibration"] = {
            "dataset": {"uri": calibration, "layout": "npz" if calibration.endswith(".npz") else "imagefolder"},
            "samples": 300,
        }
    if evaluation:
        spec["evaluation"] = {
            "dataset": {"uri": evaluation, "layout": "npz" if evaluation.endswith(".npz") else "imagefolder"},
            "samples": 500,
        }
    if training:
        spec["training"] = {
            "dataset": {"uri": training, "layout": "npz"},
            "epochs": 1,
            "learningRate": 1e-4,
            "batchSize": 64,
            "maxSamples": 3000,
        }
    spec.update(extra)
    return spec


@pytest.fixture
def spec_for() -> Callable[..., dict[str, Any]]:
    return job_spec
