"""Calibration-set validation: the reference rules as pure functions over per-image facts.

Each rule yields ``DataFinding``s that name the files involved; the worker puts all
of them in the report and fails the run (exit code 11) when any is an error.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgequant.api import v1alpha1 as api
from edgequant.report.schema import MAX_FILES_NAMED, DataFinding, Severity

#: The reference workflows recommend 500-1000 calibration samples.
RECOMMENDED_SAMPLES = 500
#: Largest / smallest class count above this is "strong imbalance".
IMBALANCE_RATIO = 2.0
#: Correlation of neighbouring pixels below this looks like noise (photos: > 0.7, Fashion-MNIST: > 0.25, noise: ~0).
NOISE_CORRELATION = 0.15
#: Pixel standard deviation (0-255) below this is a constant image.
CONSTANT_STD = 2.0
#: When at least this fraction of a set is noise or constant, the set is unusable (error), else a warning.
NOISE_FRACTION_ERROR = 0.5
#: Side of the centre crop used for image statistics (keeps large photos cheap, no resampling).
_STATS_CROP = 512


@dataclass(frozen=True)
class ImageFacts:
    """What validation needs to know about one sample, measured on its pixels as stored."""

    source: str
    label: int
    error: str | None = None
    width: int = 0
    height: int = 0
    channels: int = 0
    """1 for grayscale storage, 3 for colour storage (RGB, palette, CMYK...)."""
    colour: bool = False
    """True when the colour channels actually differ (an RGB file of a gray picture is not colour)."""
    digest: str = ""
    std: float = 0.0
    neighbour_correlation: float = 1.0


def neighbour_correlation(gray: np.ndarray) -> float:
    """Pearson correlation of horizontally and vertically adjacent pixels; ~0 for white noise."""
    g = gray.astype(np.float64)
    a = np.concatenate([g[:, :-1].ravel(), g[:-1, :].ravel()])
    b = np.concatenate([g[:, 1:].ravel(), g[1:, :].ravel()])
    a -= a.mean()
    b -= b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 1.0


def inspect_image(source: str, label: int, image: Image.Image | np.ndarray) -> ImageFacts:
    """Facts about one decoded sample as stored (before resizing, so upscaled noise still reads as noise)."""
    if isinstance(image, Image.Image):
        channels = 1 if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
        array = np.asarray(image.convert("RGB") if channels == 3 else image.convert("L"))
    else:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        channels = 1 if array.ndim == 2 else 3
    height, width = array.shape[:2]
    colour = bool(
        channels == 3
        and not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))
    )
    digest = hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()
    gray = array.mean(axis=2) if array.ndim == 3 else array
    top, left = max(0, (height - _STATS_CROP) // 2), max(0, (width - _STATS_CROP) // 2)
    crop = gray[top : top + _STATS_CROP, left : left + _STATS_CROP]
    return ImageFacts(
        source=source,
        label=label,
        width=width,
        height=height,
        channels=channels,
        colour=colour,
        digest=digest,
        std=float(crop.std()),
        neighbour_correlation=neighbour_correlation(crop),
    )


def _finding(severity: Severity, code: str, dataset: str, message: str, files: Sequence[str] = ()) -> DataFinding:
    return DataFinding(
        severity=severity,
        code=code,
        dataset=dataset,
        message=message,
        files=list(files[:MAX_FILES_NAMED]),
        count=len(files),
    )


def _names(files: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def check_images(
    facts: Sequence[ImageFacts], *, dataset: str, contract: api.InputContract, stray_files: Sequence[str] = ()
) -> list[DataFinding]:
    """Rules about individual files, for every dataset the run reads."""
    findings: list[DataFinding] = []
    broken = [f.source for f in facts if f.error is not None]
    if broken:
        findings.append(
            _finding(
                Severity.ERROR,
                "undecodable",
                dataset,
                f"{len(broken)} file(s) cannot be decoded as images: {_names(broken)} (remove or re-encode them)",
                broken,
            )
        )
    usable = [f for f in facts if f.error is None]
    if contract.resize.mode is api.ResizeMode.NONE:
        wrong = [f.source for f in usable if (f.height, f.width) != (contract.height, contract.width)]
        if wrong:
            findings.append(
                _finding(
                    Severity.ERROR,
                    "size-mismatch",
                    dataset,
                    f"{len(wrong)} image(s) are not {contract.width}x{contract.height} and model.input.resize.mode is none: "
                    f"{_names(wrong)} (resize them, or set resize.mode to stretch, center-crop or pad)",
                    wrong,
                )
            )
    if contract.color_order is api.ColorOrder.GRAY:
        colour = [f.source for f in usable if f.colour]
        if colour:
            findings.append(
                _finding(
                    Severity.ERROR,
                    "channel-mismatch",
                    dataset,
                    f"{len(colour)} colour image(s) for a GRAY (1-channel) model: {_names(colour)} "
                    "(convert the dataset to grayscale, or fix model.input.colorOrder and shape)",
                    colour,
                )
            )
    else:
        gray = [f.source for f in usable if f.channels == 1]
        if gray:
            findings.append(
                _finding(
                    Severity.WARNING,
                    "channel-mismatch",
                    dataset,
                    f"{len(gray)} grayscale image(s) for a {contract.color_order.value} model will be replicated to 3 channels: {_names(gray)}",
                    gray,
                )
            )
    by_digest: dict[str, list[str]] = defaultdict(list)
    for f in usable:
        by_digest[f.digest].append(f.source)
    dup_groups = [g for g in by_digest.values() if len(g) > 1]
    if dup_groups:
        extra = [s for g in dup_groups for s in g[1:]]
        pairs = "; ".join(" = ".join(g[:3]) for g in dup_groups[:3])
        findings.append(
            _finding(
                Severity.WARNING,
                "duplicates",
                dataset,
                f"{len(extra)} exact duplicate image(s) in {len(dup_groups)} group(s): {pairs} (duplicates over-weight their content; remove them)",
                [s for g in dup_groups for s in g],
            )
        )
    noise = [f.source for f in usable if f.std >= CONSTANT_STD and f.neighbour_correlation < NOISE_CORRELATION]
    constant = [f.source for f in usable if f.std < CONSTANT_STD]
    if usable and (noise or constant):
        share = (len(noise) + len(constant)) / len(usable)
        severity = Severity.ERROR if share >= NOISE_FRACTION_ERROR else Severity.WARNING
        if noise:
            what = (
                "the set looks like random noise, not real images"
                if severity is Severity.ERROR
                else "they look like random noise"
            )
            findings.append(
                _finding(
                    severity,
                    "noise",
                    dataset,
                    f"{len(noise)} of {len(usable)} image(s) have no spatial structure (neighbouring pixels uncorrelated): {what}: "
                    f"{_names(noise)} (use real, unaugmented images like the ones the model will see)",
                    noise,
                )
            )
        if constant:
            findings.append(
                _finding(
                    severity,
                    "constant",
                    dataset,
                    f"{len(constant)} of {len(usable)} image(s) are (nearly) a single colour: {_names(constant)} "
                    "(use real images; blank frames teach the quantizer nothing)",
                    constant,
                )
            )
    if stray_files:
        findings.append(
            _finding(
                Severity.WARNING,
                "outside-class-folders",
                dataset,
                f"{len(stray_files)} file(s) at the dataset root are ignored (imagefolder reads <class>/<image>): {_names(list(stray_files))}",
                list(stray_files),
            )
        )
    return findings


def check_calibration(
    labels: Iterable[int],
    *,
    calibration: api.Calibration,
    class_names: dict[int, str],
    evaluation_labels: Iterable[int] | None,
    dataset: str = "calibration",
    labeled: bool = True,
) -> list[DataFinding]:
    """Set-level rules for the usable calibration samples: count, class coverage, balance.

    Unlabeled calibration data gets the count rules and one warning: class
    coverage and balance cannot be checked without labels.
    """
    counts = Counter(int(v) for v in labels)
    total = sum(counts.values())
    findings: list[DataFinding] = []

    def name(label: int) -> str:
        return class_names.get(label, str(label))

    if total < calibration.min_samples:
        findings.append(
            _finding(
                Severity.ERROR,
                "too-few-samples",
                dataset,
                f"{total} usable calibration sample(s), fewer than calibration.minSamples {calibration.min_samples} "
                f"(add real images; {RECOMMENDED_SAMPLES}-1000 recommended)",
            )
        )
    elif total < RECOMMENDED_SAMPLES:
        findings.append(
            _finding(
                Severity.WARNING,
                "few-samples",
                dataset,
                f"{total} calibration samples; {RECOMMENDED_SAMPLES}-1000 are recommended for stable activation ranges",
            )
        )
    if not labeled:
        findings.append(
            _finding(
                Severity.WARNING,
                "unlabeled",
                dataset,
                "calibration data has no labels, so class coverage and balance were not checked "
                "(make sure it covers every kind of input the model will see, or use class folders)",
            )
        )
        return findings
    if evaluation_labels is not None:
        missing = sorted({int(v) for v in evaluation_labels} - set(counts))
        if missing:
            findings.append(
                _finding(
                    Severity.ERROR,
                    "missing-classes",
                    dataset,
                    f"{len(missing)} class(es) of the evaluation set have no calibration sample: "
                    f"{', '.join(name(m) for m in missing[:10])} (add images of every class to calibration.dataset)",
                )
            )
    empty = sorted(set(class_names) - set(counts))
    if evaluation_labels is None and empty and total:
        findings.append(
            _finding(
                Severity.ERROR,
                "missing-classes",
                dataset,
                f"class folder(s) without usable images: {', '.join(name(m) for m in empty[:10])} (add images or remove the folders)",
            )
        )
    if len(counts) >= 2 and calibration.class_balance is not api.ClassBalancePolicy.IGNORE:
        most, least = max(counts.values()), min(counts.values())
        if most > IMBALANCE_RATIO * least:
            low = sorted((c for c in counts if counts[c] * IMBALANCE_RATIO < most), key=lambda c: counts[c])
            severity = (
                Severity.ERROR if calibration.class_balance is api.ClassBalancePolicy.STRICT else Severity.WARNING
            )
            findings.append(
                _finding(
                    severity,
                    "class-imbalance",
                    dataset,
                    f"classes are imbalanced ({most} vs {least} samples): under-represented "
                    f"{', '.join(f'{name(c)} ({counts[c]})' for c in low[:10])} (add images of those classes"
                    + ("; calibration.classBalance strict makes this an error)" if severity is Severity.ERROR else ")"),
                )
            )
    return findings


def has_errors(findings: Iterable[DataFinding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)
