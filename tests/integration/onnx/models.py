"""Test models for the ONNX Runtime and PyTorch backends. The conftest caches what this file makes, keyed by its hash.

- ``train_cnn``: a small PyTorch CNN (Conv-BN-ReLU-MaxPool x2, Linear) trained on Fashion-MNIST, saved as a
  torch.export program (.pt2, dynamic batch) and as ONNX (dynamo exporter) — the same weights in both.
- ``dense_heavy_onnx``: an untrained MLP of about 1.3M parameters, nearly all Gemm weights, built with onnx.helper.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

CNN_SAMPLES = 10000
CNN_EPOCHS = 1
CNN_SEED = 0


def fit(model: Any, images: np.ndarray, labels: np.ndarray, *, epochs: int, lr: float) -> None:
    """Adam on cross-entropy over mini-batches of 64 in a new random order each epoch (uint8 images scaled 1/255,
    NCHW); leaves ``model`` in eval mode. Seed torch before calling for a repeatable model."""
    import torch
    from torch import nn

    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()


def train_cnn(images: np.ndarray, labels: np.ndarray, out_dir: Path) -> tuple[Path, Path]:
    """(.pt2, .onnx) of a CNN trained for CNN_EPOCHS on the first CNN_SAMPLES images (uint8 [N, 28, 28]), NCHW input scaled 1/255."""
    import torch
    from torch import nn

    torch.manual_seed(CNN_SEED)
    torch.set_num_threads(1)

    class SmallCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(16 * 7 * 7, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(torch.relu(self.bn1(self.conv1(x))))
            x = self.pool(torch.relu(self.bn2(self.conv2(x))))
            return self.fc(torch.flatten(x, 1))

    model = SmallCnn()
    fit(model, images[:CNN_SAMPLES], labels[:CNN_SAMPLES], epochs=CNN_EPOCHS, lr=2e-3)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, 1, 28, 28),)
    batch = ({0: torch.export.Dim("batch")},)
    pt2 = out_dir / "fmnist-cnn.pt2"
    torch.export.save(torch.export.export(model, example, dynamic_shapes=batch), str(pt2))
    onnx_path = out_dir / "fmnist-cnn.onnx"
    torch.onnx.export(
        model, example, dynamo=True, dynamic_shapes=batch, input_names=["input"], output_names=["logits"]
    ).save(str(onnx_path))
    return pt2, onnx_path


def dense_heavy_onnx(path: Path, *, seed: int = 0) -> tuple[Path, int]:
    """Flatten -> Gemm 784x1024 -> Relu -> Gemm 1024x512 -> Relu -> Gemm 512x10 (He-initialised); (path, parameter count)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = [784, 1024, 512, 10]
    initializers, nodes, params = [], [helper.make_node("Flatten", ["input"], ["x0"], name="flatten", axis=1)], 0
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = np.zeros(n_out, dtype=np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        params += w.size + b.size
        last = i == len(sizes) - 2
        nodes.append(
            helper.make_node("Gemm", [f"x{i}", f"w{i}", f"b{i}"], ["logits" if last else f"g{i}"], name=f"dense{i}")
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"x{i + 1}"], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes,
        "dense_heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path, params
