"""Names and labels that tie a batch Job to its QuantizationJob (pure).

A QuantizationJob name is a DNS subdomain (up to 253 characters) but label values and the Job name (which the Job
controller copies into its pods' ``job-name`` label) stop at 63. Long names are therefore shortened the same way
everywhere: a readable prefix plus a hash of the whole name, and the full name travels in an annotation that the
operator reads back (``quantization_job_of``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

LABEL_JOB = "edgequant.io/quantizationjob"
ANNOTATION_JOB = "edgequant.io/quantizationjob-name"
LABEL_GENERATION = "edgequant.io/generation"
LABEL_METHOD = "edgequant.io/method"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "edgequant-operator"
CONTAINER_NAME = "quantizer"

MAX_LABEL_VALUE = 63
_MAX_JOB_NAME = 63 - 6  # the Job controller appends "-xxxxx" to pod names; labels cap at 63
_DIGEST_CHARS = 8


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_CHARS]


def _shorten(name: str, limit: int) -> str:
    """``name`` if it fits ``limit``, else its prefix and a hash of the whole name; starts and ends alphanumeric."""
    if len(name) <= limit:
        return name
    keep = limit - _DIGEST_CHARS - 1
    return f"{name[:keep].rstrip('-.')}-{_digest(name)}"


def label_value(name: str) -> str:
    """The value of the ``edgequant.io/quantizationjob`` label for a QuantizationJob name (at most 63 characters)."""
    return _shorten(name, MAX_LABEL_VALUE)


def job_name(name: str, generation: int) -> str:
    """Deterministic batch Job name for one generation: '<name>-g<gen>', hashed when too long."""
    suffix = f"-g{generation}"
    return _shorten(name, _MAX_JOB_NAME - len(suffix)) + suffix


def quantization_job_of(meta: Mapping[str, Any]) -> str | None:
    """The QuantizationJob a Job or pod belongs to: the full name from the annotation, else the label (older Jobs)."""
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return annotations.get(ANNOTATION_JOB) or labels.get(LABEL_JOB) or None
