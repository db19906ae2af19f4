"""From a dataset index to preprocessed batches: sample, decode, inspect, bring to model size.

A ``PreparedSet`` keeps uint8 pixels at model size (4x smaller than floats)
and normalizes each batch on the fly, so calibration, evaluation and QAT all
read the same pixels through the same ``normalize``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.data.datasets import DatasetIndex, DecodeError
from edgequant.data.preprocess import ImageSizeError, normalize, to_model_pixels
from edgequant.data.sampling import balanced_sample
from edgequant.data.validation import ImageFacts, check_images, inspect_image
from edgequant.report.schema import DataFinding
from edgequant.util.errors import InvalidInputError
from edgequant.util.memory import data_fits, memory_budget


@dataclass
class PreparedSet:
    name: str
    """calibration, evaluation or training."""
    uri: str
    contract: api.InputContract
    pixels: np.ndarray
    """uint8 [N, H, W, C] at model size, channels in the contract's colour order."""
    labels: np.ndarray
    sources: list[str]
    classes: dict[int, str]
    findings: list[DataFinding] = field(default_factory=list)
    requested: int = 0
    available: int = 0
    labeled: bool = True
    """False: ``labels`` are all ``UNLABELED`` (accuracy cannot be measured, only agreement with FP32)."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, *, batch_size: int = 64) -> Batches:
        """Float32 model inputs (the contract's layout) with labels, replayable."""
        pixels, labels, contract = self.pixels, self.labels, self.contract

        def make_iter() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for start in range(0, len(labels), batch_size):
                yield normalize(pixels[start : start + batch_size], contract), labels[start : start + batch_size]

        return Batches(make_iter=make_iter, count=len(labels), batch_size=batch_size)

    def class_counts(self) -> dict[str, int]:
        if not self.labeled:
            return {}
        counts = Counter(int(v) for v in self.labels)
        return {self.classes.get(label, str(label)): counts[label] for label in sorted(counts)}


def prepare_set(
    index: DatasetIndex,
    *,
    name: str,
    contract: api.InputContract,
    samples: int | None,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> PreparedSet:
    """Sample (balanced, deterministic), decode and inspect every chosen file; keep the usable ones.

    Files that fail to decode or to reach model size are left out of the
    pixels and named in ``findings`` (with every other per-file rule).
    """
    if not index.samples:
        raise InvalidInputError(f"{index.uri}: the {name} dataset holds no samples")
    chosen = balanced_sample(index.labels, samples if samples is not None else len(index.samples), seed=seed)
    h, w, c = contract.height, contract.width, contract.channels
    # Budgeted before it is spent: the model-size pixels of every chosen sample are held at once.
    refusal = data_fits(
        what=f"the {name} set ({len(chosen)} samples of {h}x{w}x{c} pixels from {index.uri})",
        needed_bytes=len(chosen) * h * w * c,
        budget=memory_budget(os.environ),
    )
    if refusal is not None:
        raise InvalidInputError(refusal)
    pixels = np.zeros((len(chosen), h, w, c), dtype=np.uint8)
    keep = np.zeros(len(chosen), dtype=bool)
    facts: list[ImageFacts] = []
    for n, i in enumerate(chosen):
        sample = index.samples[int(i)]
        try:
            image = index.decode(int(i))
        except DecodeError as exc:
            facts.append(ImageFacts(source=sample.source, label=sample.label, error=str(exc)))
            continue
        facts.append(inspect_image(sample.source, sample.label, image))
        try:
            pixels[n] = to_model_pixels(image, contract, source=sample.source)
            keep[n] = True
        except ImageSizeError:
            pass  # named by the size-mismatch rule from the facts just recorded
        if progress is not None and (n + 1) % 256 == 0:
            progress(n + 1, len(chosen))
    if progress is not None:
        progress(len(chosen), len(chosen))
    findings = check_images(facts, dataset=name, contract=contract, stray_files=index.stray_files)
    return PreparedSet(
        name=name,
        uri=index.uri,
        contract=contract,
        pixels=pixels[keep],
        labels=index.labels[chosen][keep],
        sources=[index.samples[int(i)].source for i, k in zip(chosen, keep) if k],
        classes=index.classes,
        findings=findings,
        requested=samples or len(index.samples),
        available=len(index.samples),
        labeled=index.labeled,
    )
