"""Names and labels that tie a batch Job to its QuantizationJob (pure)."""

from __future__ import annotations

import hashlib

LABEL_JOB = "edgequant.io/quantizationjob"
LABEL_GENERATION = "edgequant.io/generation"
LABEL_METHOD = "edgequant.io/method"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "edgequant-operator"
CONTAINER_NAME = "quantizer"

_MAX_JOB_NAME = 63 - 6  # the Job controller appends "-xxxxx" to pod names; labels cap at 63


def job_name(name: str, generation: int) -> str:
    """Deterministic batch Job name for one generation: '<name>-g<gen>', hashed when too long."""
    suffix = f"-g{generation}"
    if len(name) + len(suffix) <= _MAX_JOB_NAME:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = _MAX_JOB_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-')}-{digest}{suffix}"
