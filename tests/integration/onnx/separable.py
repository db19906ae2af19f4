"""A MobileNet-style depthwise-separable CNN trained on Fashion-MNIST, for the post-training techniques' tests.

Stem Conv-BN-ReLU (stride 2), four blocks of depthwise 3x3 Conv-BN-ReLU -> pointwise 1x1 Conv-BN-ReLU (BatchNorm folded by
ONNX Runtime's pre-processing, which is where equalization and bias correction act), global average pool, Linear.
Seeded; the test module caches the ONNX file keyed by this file's and models.py's hashes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.integration.onnx.models import fit

SAMPLES = 8000
EPOCHS = 2
SEED = 0


def train_separable_cnn(images: np.ndarray, labels: np.ndarray, out_dir: Path) -> Path:
    """The .onnx of the network trained for EPOCHS on the first SAMPLES images (uint8 [N, 28, 28]); NCHW input scaled 1/255."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    def unit(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]

    layers: list[nn.Module] = unit(1, 16, 3, stride=2)  # 14x14 from the stem on: cheap to train on a CPU
    for c_in, c_out, stride in ((16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 1)):
        layers += unit(c_in, c_in, 3, stride, groups=c_in) + unit(c_in, c_out, 1)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))

    fit(model, images[:SAMPLES], labels[:SAMPLES], epochs=EPOCHS, lr=3e-3)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fmnist-separable.onnx"
    example = (torch.zeros(2, 1, 28, 28),)
    torch.onnx.export(
        model,
        example,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        input_names=["input"],
        output_names=["logits"],
    ).save(str(path))
    return path
