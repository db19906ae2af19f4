"""Calibration-set validation on real Fashion-MNIST images: every rule, with the files it names."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.data.datasets import index_dataset
from edgequant.data.loader import PreparedSet, prepare_set
from edgequant.data.validation import check_calibration, has_errors
from edgequant.report.schema import DataFinding, Severity

GRAY28 = api.InputContract(shape=[28, 28, 1], color_order=api.ColorOrder.GRAY)


def _prepare(root: Path, *, contract: api.InputContract = GRAY28, samples: int | None = None) -> PreparedSet:
    index = index_dataset(root, layout=api.DatasetLayout.IMAGEFOLDER, uri=f"file://{root}/")
    return prepare_set(index, name="calibration", contract=contract, samples=samples, seed=0)


def _calibration_findings(
    prepared: PreparedSet, *, evaluation: set[int] | None = None, **calibration: Any
) -> list[DataFinding]:
    spec = api.Calibration(dataset=api.Dataset(uri="file:///c/"), **calibration)
    return prepared.findings + check_calibration(
        prepared.labels, calibration=spec, class_names=prepared.classes, evaluation_labels=evaluation
    )


def _codes(findings: list[DataFinding]) -> dict[str, Severity]:
    return {f.code: f.severity for f in findings}


@pytest.fixture
def real_set(tmp_path: Path, fashion_mnist: Any, imagefolder_writer: Callable[..., Path]) -> Path:
    """300 real test images, 30 per class."""
    idx = np.concatenate([np.flatnonzero(fashion_mnist.test_y == c)[:30] for c in range(10)])
    return imagefolder_writer(
        tmp_path / "cal", fashion_mnist.test_x[idx], fashion_mnist.test_y[idx], classes=fashion_mnist.classes
    )


def test_real_balanced_set_only_warns_about_the_recommended_size(real_set: Path) -> None:
    findings = _calibration_findings(_prepare(real_set), evaluation=set(range(10)))
    assert _codes(findings) == {"few-samples": Severity.WARNING}
    assert "300 calibration samples; 500-1000 are recommended" in findings[0].message
    assert not has_errors(findings)


def test_fewer_than_min_samples_is_an_error(real_set: Path) -> None:
    findings = _calibration_findings(_prepare(real_set, samples=60), samples=100, min_samples=100)
    too_few = next(f for f in findings if f.code == "too-few-samples")
    assert too_few.severity is Severity.ERROR
    assert "60 usable calibration sample(s), fewer than calibration.minSamples 100" in too_few.message


def test_evaluation_classes_missing_from_calibration_are_named(real_set: Path) -> None:
    shutil.rmtree(real_set / "09_ankle-boot")
    shutil.rmtree(real_set / "05_sandal")
    findings = _calibration_findings(_prepare(real_set), evaluation=set(range(10)))
    missing = [f for f in findings if f.code == "missing-classes"]
    assert missing and missing[0].severity is Severity.ERROR
    assert "2 class(es) of the evaluation set have no calibration sample: 5, 9" in missing[0].message


def test_empty_class_folder_is_an_error_without_evaluation(real_set: Path) -> None:
    for f in (real_set / "02_pullover").iterdir():
        f.unlink()
    findings = _calibration_findings(_prepare(real_set))
    assert any(f.code == "missing-classes" and "02_pullover" in f.message for f in findings)


@pytest.mark.parametrize(
    ("policy", "expected"), [("warn", Severity.WARNING), ("strict", Severity.ERROR), ("ignore", None)]
)
def test_strong_imbalance_follows_the_policy(real_set: Path, policy: str, expected: Severity | None) -> None:
    for c in ("03_dress", "04_coat"):
        for f in sorted((real_set / c).iterdir())[5:]:
            f.unlink()
    findings = _calibration_findings(_prepare(real_set), class_balance=policy)
    imbalance = [f for f in findings if f.code == "class-imbalance"]
    if expected is None:
        assert not imbalance
    else:
        assert imbalance[0].severity is expected
        assert "03_dress (5)" in imbalance[0].message and "04_coat (5)" in imbalance[0].message


def test_undecodable_files_are_named_and_left_out(real_set: Path) -> None:
    (real_set / "00_t-shirt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (real_set / "01_trouser" / "notes.txt").write_text("not an image")
    prepared = _prepare(real_set)
    finding = next(f for f in prepared.findings if f.code == "undecodable")
    assert finding.severity is Severity.ERROR
    assert sorted(finding.files) == ["00_t-shirt/broken.png", "01_trouser/notes.txt"]
    assert "00_t-shirt/broken.png" in finding.message
    assert len(prepared) == 300


def test_size_mismatch_is_named_when_resize_is_none(real_set: Path) -> None:
    from PIL import Image

    Image.new("L", (32, 30), 128).save(real_set / "06_shirt" / "big.png")
    contract = GRAY28.model_copy(update={"resize": api.Resize(mode=api.ResizeMode.NONE)})
    prepared = _prepare(real_set, contract=contract)
    finding = next(f for f in prepared.findings if f.code == "size-mismatch")
    assert finding.severity is Severity.ERROR and finding.files == ["06_shirt/big.png"]
    assert "not 28x28 and model.input.resize.mode is none" in finding.message
    assert len(prepared) == 300


def test_colour_images_for_a_gray_model_are_an_error(real_set: Path, fashion_mnist: Any) -> None:
    from PIL import Image

    colour = np.stack([fashion_mnist.test_x[0], fashion_mnist.test_x[0] // 2, fashion_mnist.test_x[0] // 3], axis=-1)
    Image.fromarray(colour).save(real_set / "07_sneaker" / "colour.png")
    # An RGB file whose channels are equal is a gray picture, not a mismatch.
    Image.fromarray(np.repeat(fashion_mnist.test_x[1][..., None], 3, axis=-1)).save(
        real_set / "07_sneaker" / "grey-rgb.png"
    )
    finding = next(f for f in _prepare(real_set).findings if f.code == "channel-mismatch")
    assert finding.severity is Severity.ERROR and finding.files == ["07_sneaker/colour.png"]


def test_gray_images_for_an_rgb_model_are_a_warning(real_set: Path) -> None:
    rgb = api.InputContract(shape=[28, 28, 3])
    finding = next(f for f in _prepare(real_set, contract=rgb).findings if f.code == "channel-mismatch")
    assert finding.severity is Severity.WARNING and finding.count == 300


def test_exact_duplicates_are_named(real_set: Path) -> None:
    original = sorted((real_set / "08_bag").iterdir())[0]
    shutil.copy(original, real_set / "08_bag" / "copy.png")
    finding = next(f for f in _prepare(real_set).findings if f.code == "duplicates")
    assert finding.severity is Severity.WARNING
    assert sorted(finding.files) == sorted([f"08_bag/{original.name}", "08_bag/copy.png"])


def test_random_noise_calibration_is_refused(tmp_path: Path, imagefolder_writer: Callable[..., Path]) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    root = imagefolder_writer(tmp_path / "noise", noise, np.arange(200) % 10)
    findings = _calibration_findings(_prepare(root), evaluation=set(range(10)))
    noise_finding = next(f for f in findings if f.code == "noise")
    assert noise_finding.severity is Severity.ERROR
    assert "200 of 200 image(s) have no spatial structure" in noise_finding.message
    assert "the set looks like random noise" in noise_finding.message
    assert len(noise_finding.files) == 20 and noise_finding.count == 200


def test_upscaled_noise_is_still_noise(tmp_path: Path, imagefolder_writer: Callable[..., Path]) -> None:
    """Statistics are measured on the stored pixels, before the resize smooths them."""
    noise = np.random.default_rng(1).integers(0, 256, size=(20, 12, 12), dtype=np.uint8)
    root = imagefolder_writer(tmp_path / "small-noise", noise, np.arange(20) % 2)
    assert any(f.code == "noise" and f.severity is Severity.ERROR for f in _prepare(root).findings)


def test_a_few_noise_or_blank_images_are_warnings(real_set: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)).save(
        real_set / "00_t-shirt" / "static.png"
    )
    Image.new("L", (28, 28), 0).save(real_set / "01_trouser" / "blank.png")
    codes = {f.code: f for f in _prepare(real_set).findings}
    assert codes["noise"].severity is Severity.WARNING and codes["noise"].files == ["00_t-shirt/static.png"]
    assert codes["constant"].severity is Severity.WARNING and codes["constant"].files == ["01_trouser/blank.png"]


def test_files_outside_class_folders_are_reported(real_set: Path) -> None:
    (real_set / "stray.png").write_bytes(b"")
    finding = next(f for f in _prepare(real_set).findings if f.code == "outside-class-folders")
    assert finding.files == ["stray.png"] and finding.severity is Severity.WARNING


def test_prepared_batches_are_the_shared_preprocessing(real_set: Path) -> None:
    prepared = _prepare(real_set, samples=100)
    batches = prepared.batches(batch_size=32)
    seen = list(batches)
    assert batches.count == 100 and [len(b) for b, _ in seen] == [32, 32, 32, 4]
    x, _y = seen[0]
    assert x.dtype == np.float32 and x.shape == (32, 28, 28, 1) and x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[0, ..., 0], prepared.pixels[0, ..., 0] / 255.0, rtol=1e-6)
    assert prepared.class_counts() == dict.fromkeys(prepared.classes.values(), 10)


def test_unlabeled_calibration_warns_that_class_coverage_was_not_checked(real_set: Path) -> None:
    """The same images read with labels: none: sampling and per-file rules still run; coverage and balance cannot."""
    shutil.rmtree(real_set / "09_ankle-boot")  # would be a missing-classes error with labels
    index = index_dataset(
        real_set, layout=api.DatasetLayout.IMAGEFOLDER, uri="file:///c/", labels=api.DatasetLabels.NONE
    )
    prepared = prepare_set(index, name="calibration", contract=GRAY28, samples=None, seed=0)
    assert not prepared.labeled and len(prepared) == 270 and prepared.class_counts() == {}
    spec = api.Calibration(dataset=api.Dataset(uri="file:///c/"))
    findings = check_calibration(
        prepared.labels, calibration=spec, class_names=prepared.classes, evaluation_labels=set(range(10)), labeled=False
    )
    assert _codes(findings) == {"few-samples": Severity.WARNING, "unlabeled": Severity.WARNING}
    assert "class coverage and balance were not checked" in findings[1].message and not has_errors(findings)
