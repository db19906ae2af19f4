"""A real Fashion-MNIST CNN as ONNX (dynamic batch, NCHW, [0, 1] input), trained once with PyTorch and cached under .cache/.

The cache key is a hash of this file, so changing the recipe retrains. The
graph is what torch's ONNX exporter writes (node names like ``/conv1/Conv``),
the same kind of model the tensorrt-* methods take.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache" / "tensorrt-models"
TRAIN_SAMPLES = 12_000
NCHW_GRAY = api.InputContract(shape=[1, 28, 28], layout=api.Layout.NCHW, color_order=api.ColorOrder.GRAY)


def _train_and_export(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 8, 3))
    model.add_module("relu1", nn.ReLU())
    model.add_module("pool1", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(8, 16, 3))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool2", nn.MaxPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(16 * 5 * 5, 64))
    model.add_module("relu3", nn.ReLU())
    model.add_module("fc2", nn.Linear(64, 10))
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _epoch in range(2):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (x[:1],),
        str(tmp),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    tmp.replace(path)


@pytest.fixture(scope="session")
def fashion_cnn_onnx(fashion_mnist: Any) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    path = CACHE / f"fashion-cnn-{digest}.onnx"
    if not path.exists():
        _train_and_export(fashion_mnist.train_x[:TRAIN_SAMPLES], fashion_mnist.train_y[:TRAIN_SAMPLES], path)
    return path


@pytest.fixture
def fashion_batches(fashion_mnist: Any) -> Callable[..., Batches]:
    """``make(n, batch_size=64, split='train', start=...)``: Fashion-MNIST through the shared data pipeline (PreparedSet)."""
    from edgequant.data.loader import PreparedSet

    def make(n: int, *, batch_size: int = 64, split: str = "train", start: int | None = None) -> Batches:
        images, labels = (
            (fashion_mnist.train_x, fashion_mnist.train_y)
            if split == "train"
            else (fashion_mnist.test_x, fashion_mnist.test_y)
        )
        first = (TRAIN_SAMPLES if split == "train" else 0) if start is None else start
        pixels = images[first : first + n][..., None]
        prepared = PreparedSet(
            name="calibration",
            uri="file:///fashion/",
            contract=NCHW_GRAY,
            pixels=pixels,
            labels=labels[first : first + n].astype(np.int64),
            sources=[f"{i}.png" for i in range(n)],
            classes=dict(enumerate(fashion_mnist.classes)),
        )
        return prepared.batches(batch_size=batch_size)

    return make
