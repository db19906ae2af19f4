"""Write arrays in the two dataset layouts edgequant reads (for the demo, tests and users preparing data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def class_folder_names(classes: Sequence[str]) -> list[str]:
    """'00_t-shirt', '01_trouser', ...: the integer prefix is the label, so a split missing a class never shifts labels."""
    return [f"{i:02d}_{name}" for i, name in enumerate(classes)]


def write_imagefolder(
    root: Path, images: np.ndarray, labels: np.ndarray, *, classes: Sequence[str] | None = None, suffix: str = ".png"
) -> Path:
    """uint8 images ([N, H, W] or [N, H, W, 3]) -> root/<NN_class>/<index><suffix>; returns root."""
    count = int(np.max(labels)) + 1 if len(labels) else 0
    names = class_folder_names(classes) if classes is not None else [f"{i:02d}" for i in range(count)]
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / f"{i:05d}{suffix}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_npz(
    path: Path, images: np.ndarray, labels: np.ndarray | None, *, classes: Sequence[str] | None = None
) -> Path:
    """Arrays x (uint8 pixels) and y (int64 labels; left out for unlabeled data), plus optional class names; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, np.ndarray] = {"classes": np.asarray(list(classes))} if classes is not None else {}
    if labels is not None:
        extra["y"] = np.asarray(labels, dtype=np.int64)
    # Any values: numpy's stub would read a ** mapping of arrays as filling its allow_pickle flag.
    arrays: dict[str, Any] = {"x": np.asarray(images, dtype=np.uint8), **extra}
    np.savez(path, **arrays)
    return path
