"""Dataset layouts: imagefolder labels, npz checks, decoding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.data.datasets import UNLABELED, DecodeError, index_dataset
from edgequant.util.errors import InvalidInputError

IMAGEFOLDER, NPZ = api.DatasetLayout.IMAGEFOLDER, api.DatasetLayout.NPZ


def _img(tmp: Path, rel: str) -> None:
    from PIL import Image

    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp / rel)


def test_integer_prefixed_folders_keep_their_labels(tmp_path: Path) -> None:
    for rel in ("03_coat/a.png", "07_sneaker/b.png", "07_sneaker/c.png"):
        _img(tmp_path, rel)
    (tmp_path / "README.txt").write_text("notes")
    index = index_dataset(tmp_path, layout=IMAGEFOLDER, uri="file://x/")
    assert [(s.source, s.label) for s in index.samples] == [
        ("03_coat/a.png", 3),
        ("07_sneaker/b.png", 7),
        ("07_sneaker/c.png", 7),
    ]
    assert index.classes == {3: "03_coat", 7: "07_sneaker"}
    assert index.stray_files == ["README.txt"]
    assert np.asarray(index.decode(0)).shape == (4, 4)


def test_named_folders_use_sorted_positions(tmp_path: Path) -> None:
    for rel in ("dog/1.png", "cat/1.png", "bird/x/1.png"):
        _img(tmp_path, rel)
    index = index_dataset(tmp_path, layout=IMAGEFOLDER, uri="file://x/")
    assert index.classes == {0: "bird", 1: "cat", 2: "dog"}
    assert {s.source: s.label for s in index.samples}["bird/x/1.png"] == 0


def test_broken_file_raises_decode_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "0_a").mkdir()
    (tmp_path / "0_a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    index = index_dataset(tmp_path, layout=IMAGEFOLDER, uri="file://x/")
    with pytest.raises(DecodeError, match="0_a/broken.jpg: cannot decode"):
        index.decode(0)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="needs a folder"):
        index_dataset(tmp_path / "absent", layout=IMAGEFOLDER, uri="file://absent/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no images found.*directly in the folder for unlabeled data"):
        index_dataset(tmp_path / "empty", layout=IMAGEFOLDER, uri="file://empty/")


def test_images_directly_in_the_folder_are_unlabeled_data(tmp_path: Path) -> None:
    for rel in ("b.png", "a.png", ".hidden.png"):
        _img(tmp_path, rel)
    index = index_dataset(tmp_path, layout=IMAGEFOLDER, uri="file://flat/")
    assert not index.labeled and index.classes == {} and index.stray_files == []
    assert [(s.source, s.label) for s in index.samples] == [("a.png", UNLABELED), ("b.png", UNLABELED)]


def test_labels_none_reads_class_folders_as_unlabeled_images(tmp_path: Path) -> None:
    for rel in ("03_coat/a.png", "07_sneaker/b.png"):
        _img(tmp_path, rel)
    index = index_dataset(tmp_path, layout=IMAGEFOLDER, uri="file://x/", labels=api.DatasetLabels.NONE)
    assert not index.labeled and index.labels.tolist() == [UNLABELED, UNLABELED]
    assert [s.source for s in index.samples] == ["03_coat/a.png", "07_sneaker/b.png"]


def test_npz_without_y_or_with_labels_none_is_unlabeled(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((3, 4, 4), np.uint8))
    index = index_dataset(path, layout=NPZ, uri="file://x.npz")
    assert not index.labeled and index.labels.tolist() == [UNLABELED] * 3 and index.decode(2).shape == (4, 4)
    labeled = tmp_path / "xy.npz"
    np.savez(labeled, x=np.zeros((2, 4, 4), np.uint8), y=np.array([1, 0]))
    assert index_dataset(labeled, layout=NPZ, uri="file://xy.npz").labeled
    ignored = index_dataset(labeled, layout=NPZ, uri="file://xy.npz", labels=api.DatasetLabels.NONE)
    assert not ignored.labeled and ignored.labels.tolist() == [UNLABELED] * 2


def test_npz_reads_x_y_and_classes(tmp_path: Path, npz_writer: Callable[..., Path]) -> None:
    path = npz_writer(tmp_path / "d.npz", np.zeros((3, 5, 5), np.uint8), np.array([0, 2, 2]), classes=["a", "b", "c"])
    index = index_dataset(path, layout=NPZ, uri="file://d.npz")
    assert [s.source for s in index.samples] == ["d.npz[0]", "d.npz[1]", "d.npz[2]"]
    assert index.labels.tolist() == [0, 2, 2]
    assert index.classes == {0: "a", 1: "b", 2: "c"}
    assert index.decode(1).shape == (5, 5)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros(2, np.int64)}, "lacks array x"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.int64)}, "x has dtype float32; store uint8"),
        ({"x": np.zeros((2, 3, 8, 8), np.uint8), "y": np.zeros(2, np.int64)}, "channels first\\?"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(3, np.int64)}, "y must be integer labels of shape \\[2\\]"),
    ],
)
def test_npz_problems_are_named(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InvalidInputError, match=message):
        index_dataset(path, layout=NPZ, uri="s3://b/bad.npz")


@pytest.mark.parametrize("link", ["file", "class_folder"])
def test_links_out_of_the_dataset_folder_are_refused(tmp_path: Path, link: str) -> None:
    root, outside = tmp_path / "cal", tmp_path / "private"
    _img(root, "0_shirt/a.png")
    _img(outside, "secret.png")
    if link == "file":
        (root / "0_shirt" / "b.png").symlink_to(outside / "secret.png")
        named = "0_shirt/b.png"
    else:
        (root / "1_coat").symlink_to(outside, target_is_directory=True)
        named = "1_coat/secret.png"
    with pytest.raises(
        InvalidInputError, match=f"file://cal/: {named} is a link that leads outside the dataset folder"
    ):
        index_dataset(root, layout=IMAGEFOLDER, uri="file://cal/")
    (root / "0_shirt" / "c.png").symlink_to(root / "0_shirt" / "a.png")  # a link that stays inside is fine
    if link == "file":
        (root / "0_shirt" / "b.png").unlink()
    else:
        (root / "1_coat").unlink()
    assert [s.source for s in index_dataset(root, layout=IMAGEFOLDER, uri="file://cal/").samples] == [
        "0_shirt/a.png",
        "0_shirt/c.png",
    ]
