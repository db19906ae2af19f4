"""A small Keras CNN for Fashion-MNIST, trained briefly and cached by a hash of what made it.

Conv -> BatchNorm -> ReLU blocks (the pattern tfmot folds for QAT), BatchNorm
momentum 0.9 (the default 0.99 leaves moving statistics far from the data
after a few hundred steps, and test accuracy collapses), logits output.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np


def build_cnn(*, input_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10, width: int = 16) -> Any:
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(width, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Conv2D(2 * width, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(classes),
        ],
        name="fmnist_cnn",
    )


def build_dense_heavy(*, input_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10) -> Any:
    """~1.4M parameters, almost all in one Dense layer: weights dominate the file, so size ratios approach 4x / 2x."""
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dense(classes),
        ],
        name="dense_heavy",
    )


def _cache_key(params: dict[str, Any]) -> str:
    from edgequant.backends.tflite.tf import import_keras

    source = inspect.getsource(build_cnn) + inspect.getsource(train_cnn)
    blob = json.dumps({"params": params, "keras": import_keras().__version__, "source": source}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_cnn(
    x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0, batch_size: int = 64, width: int = 16
) -> Any:
    """Train on uint8 images [N, 28, 28] scaled to [0, 1], the preprocessing the demo's jobs declare."""
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    model = build_cnn(width=width)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[..., None].astype("float32") / 255.0, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


def cached_cnn(cache_dir: Path, *, samples: int, epochs: int, seed: int = 0, width: int = 16) -> Path:
    """Path of the trained model's .keras file, training it only when no cached file matches."""
    params = {"samples": samples, "epochs": epochs, "seed": seed, "width": width}
    path = cache_dir / f"fmnist-cnn-{_cache_key(params)}.keras"
    if path.is_file():
        return path
    from edgequant.data.idx import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    model = train_cnn(x[:samples], y[:samples], epochs=epochs, seed=seed, width=width)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.keras")
    model.save(partial)
    partial.rename(path)
    return path
