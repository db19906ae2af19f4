"""Dataset layouts: ``imagefolder`` (``<class>/<image>``) and ``npz`` (arrays ``x``, ``y``).

Indexing lists samples and labels without decoding; ``DatasetIndex.decode``
opens one sample. Labels are integers that index the model's outputs:

- imagefolder: a class folder named with a leading integer (``3``, ``03_coat``,
  ``3-coat``) has that label; otherwise labels are the folder names' sorted
  positions (the Keras ``image_dataset_from_directory`` convention). Use the
  integer prefix when a split may miss a class, so labels never shift.
- npz: ``y`` holds the labels, an optional ``classes`` array their names;
  ``x`` holds uint8 pixels [N, H, W] or [N, H, W, C] (C = 1, or 3 in RGB order).

Unlabeled data is first-class (evaluation then measures agreement with FP32,
not accuracy): images directly in the folder (no class folders), an npz
without ``y``, or any dataset with ``labels: none``. Its samples carry the
label ``UNLABELED``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgequant.api import v1alpha1 as api
from edgequant.util.errors import InvalidInputError

_LABEL_PREFIX = re.compile(r"^(\d+)(?:[_\-. ].*)?$")
#: The label of every sample of an unlabeled dataset.
UNLABELED = -1


class DecodeError(InvalidInputError):
    """One file that Pillow cannot decode."""


@dataclass(frozen=True)
class Sample:
    source: str
    """File path relative to the dataset root, or ``name.npz[i]``: what findings name."""
    label: int


@dataclass
class DatasetIndex:
    uri: str
    root: Path
    layout: api.DatasetLayout
    samples: list[Sample]
    classes: dict[int, str]
    """label -> class name, for every class the dataset declares (folders, or npz labels/classes)."""
    stray_files: list[str] = field(default_factory=list)
    """Files that are not inside a class folder (imagefolder), ignored."""
    labeled: bool = True
    """False: every sample's label is ``UNLABELED`` (no class folders, npz without y, or labels: none)."""
    _arrays: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    def decode(self, i: int) -> Image.Image | np.ndarray:
        """The sample's pixels as stored: a Pillow image (files) or a uint8 array (npz)."""
        if self._arrays is not None:
            return self._arrays[i]
        path = self.root / self.samples[i].source
        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except Exception as exc:  # Pillow raises many types for broken files
            raise DecodeError(f"{self.samples[i].source}: cannot decode ({type(exc).__name__}: {exc})") from exc


def index_dataset(
    path: Path, *, layout: api.DatasetLayout, uri: str, labels: api.DatasetLabels = api.DatasetLabels.AUTO
) -> DatasetIndex:
    use_labels = labels is not api.DatasetLabels.NONE
    if layout is api.DatasetLayout.NPZ:
        return _index_npz(path, uri=uri, use_labels=use_labels)
    return _index_imagefolder(path, uri=uri, use_labels=use_labels)


def _class_labels(names: list[str]) -> dict[str, int]:
    matches = [_LABEL_PREFIX.match(n) for n in names]
    if names and all(matches):
        labels = {n: int(m.group(1)) for n, m in zip(names, matches) if m}
        if len(set(labels.values())) == len(labels):
            return labels
    return {n: i for i, n in enumerate(sorted(names))}


def _unlabeled_files(root: Path, *, uri: str) -> DatasetIndex:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    samples = [Sample(source=f.relative_to(root).as_posix(), label=UNLABELED) for f in files]
    return DatasetIndex(
        uri=uri, root=root, layout=api.DatasetLayout.IMAGEFOLDER, samples=samples, classes={}, labeled=False
    )


def _index_imagefolder(root: Path, *, uri: str, use_labels: bool = True) -> DatasetIndex:
    if not root.is_dir():
        raise InvalidInputError(
            f"{uri}: layout imagefolder needs a folder of <class>/<image> files (end the URI with '/')"
        )
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    stray = [p.name for p in entries if p.is_file()]
    if not use_labels or (not class_dirs and stray):
        return _unlabeled_files(root, uri=uri)
    if not class_dirs:
        raise InvalidInputError(
            f"{uri}: no images found; imagefolder expects <class>/<image> files, or images directly in the folder "
            "for unlabeled data (for arrays, use layout npz with x and optionally y)"
        )
    labels = _class_labels([d.name for d in class_dirs])
    samples: list[Sample] = []
    inside = root.resolve()
    for class_dir in class_dirs:
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and not file.name.startswith("."):
                if not file.resolve().is_relative_to(inside):
                    raise InvalidInputError(
                        f"{uri}: {file.relative_to(root).as_posix()} is a link that leads outside the dataset folder; "
                        "copy the file into the folder instead of linking it"
                    )
                samples.append(Sample(source=file.relative_to(root).as_posix(), label=labels[class_dir.name]))
    return DatasetIndex(
        uri=uri,
        root=root,
        layout=api.DatasetLayout.IMAGEFOLDER,
        samples=samples,
        classes={label: name for name, label in sorted(labels.items(), key=lambda kv: kv[1])},
        stray_files=stray,
    )


def npz_array_bytes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Shape, dtype and decoded bytes of every array in an .npz, read from the .npy headers without loading any."""
    import zipfile

    arrays: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _fortran, dtype = read_header(fh)
            count = 1
            for dim in shape:
                count *= int(dim)
            arrays[member.removesuffix(".npy")] = (tuple(int(d) for d in shape), dtype, count * dtype.itemsize)
    return arrays


def _check_npz_budget(path: Path, *, uri: str) -> None:
    """Refuse an .npz whose arrays would not fit in the memory budget before a byte of them is decoded."""
    import os

    from edgequant.util.memory import data_fits, memory_budget

    try:
        arrays = npz_array_bytes(path)
    except Exception as exc:
        raise InvalidInputError(f"{uri}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    needed = sum(size for name, (_, _, size) in arrays.items() if name in ("x", "y"))
    shapes = ", ".join(
        f"{name} {list(shape)} {dtype}" for name, (shape, dtype, _) in sorted(arrays.items()) if name in ("x", "y")
    )
    refusal = data_fits(what=f"{uri} ({shapes})", needed_bytes=needed, budget=memory_budget(os.environ))
    if refusal is not None:
        raise InvalidInputError(refusal)


def _index_npz(path: Path, *, uri: str, use_labels: bool = True) -> DatasetIndex:
    if not path.is_file():
        raise InvalidInputError(f"{uri}: layout npz needs one .npz file with arrays x and (for labeled data) y")
    _check_npz_budget(path, uri=uri)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise InvalidInputError(
                    f"{uri}: the npz file lacks array x (found {', '.join(data.files) or 'none'}); save images as x and labels, if any, as y"
                )
            x = data["x"]
            y = data["y"] if use_labels and "y" in data.files else None
            names = [str(n) for n in data["classes"]] if "classes" in data.files else None
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"{uri}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    if x.dtype != np.uint8:
        raise InvalidInputError(
            f"{uri}: x has dtype {x.dtype}; store uint8 pixels 0-255 (preprocessing comes from model.input, "
            "so already-scaled floats would be scaled twice)"
        )
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        hint = " (channels first? store [N, H, W, C])" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise InvalidInputError(f"{uri}: x has shape {x.shape}; expected [N, H, W] or [N, H, W, C] with C 1 or 3{hint}")
    if y is None:
        samples = [Sample(source=f"{path.name}[{i}]", label=UNLABELED) for i in range(x.shape[0])]
        return DatasetIndex(
            uri=uri,
            root=path.parent,
            layout=api.DatasetLayout.NPZ,
            samples=samples,
            classes={},
            labeled=False,
            _arrays=x,
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError(f"{uri}: y must be integer labels of shape [{x.shape[0]}]; found {y.dtype} {y.shape}")
    stem = path.name
    samples = [Sample(source=f"{stem}[{i}]", label=int(label)) for i, label in enumerate(y)]
    present = sorted({int(v) for v in np.unique(y)})
    if names is not None:
        classes = dict(enumerate(names))
    else:
        classes = {i: str(i) for i in present}
    return DatasetIndex(
        uri=uri, root=path.parent, layout=api.DatasetLayout.NPZ, samples=samples, classes=classes, _arrays=x
    )
