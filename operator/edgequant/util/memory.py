"""The worker's memory budget and the probe batch size it allows. Pure functions, no framework.

The layer analysis runs two models (float and quantized) with their
intermediate tensors exposed; one batch of B samples holds
``B x bytes_per_sample`` (both models' exposed tensors) until it has been
accumulated and dropped. The batch is sized so that this stays within a share
of the budget, whatever the number of probe samples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgequant.api.worker_contract import MEMORY_BUDGET_ENV

#: The setting that gives the worker its budget: bytes, or a Kubernetes quantity (3Gi, 512Mi, 2G).
BUDGET_ENV = MEMORY_BUDGET_ENV
DEFAULT_BUDGET_BYTES = 2 * 1024**3
#: Share of the budget one probe batch's exposed tensors may take: the rest is the process itself (runtimes,
#: models, sessions' own buffers, the datasets).
PROBE_SHARE = 0.25
MIN_PROBE_BATCH = 1
MAX_PROBE_BATCH = 64
#: cgroup v2 and v1 files holding the container's memory limit.
CGROUP_LIMIT_FILES = ("memory.max", "memory/memory.limit_in_bytes")
#: cgroup v1 reports "no limit" as a huge number (a page-rounded 2^63-1); anything above this means unlimited.
_UNLIMITED = 1 << 60

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str
    """Where it came from: the setting, the cgroup limit, or the default."""


def parse_quantity(text: str) -> int:
    """Bytes in ``text``: a plain number or a Kubernetes quantity (``3Gi``, ``512Mi``, ``2G``, ``1.5Gi``)."""
    match = _QUANTITY.match(text)
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(
            f"{BUDGET_ENV}={text!r}: not a memory quantity; give bytes or a Kubernetes quantity such as 3Gi or 512Mi"
        )
    value = int(float(match.group(1)) * _SUFFIXES[match.group(2)])
    if value <= 0:
        raise ValueError(f"{BUDGET_ENV}={text!r}: the budget must be positive")
    return value


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The container's memory limit in bytes, or None when there is none (or no cgroup file to read)."""
    for name in CGROUP_LIMIT_FILES:
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < _UNLIMITED:
            return int(text)
        return None  # "max" or a huge number: unlimited
    return None


def memory_budget(env: Mapping[str, str], *, cgroup_root: Path = Path("/sys/fs/cgroup")) -> MemoryBudget:
    """The setting, else the cgroup limit, else ``DEFAULT_BUDGET_BYTES``."""
    setting = env.get(BUDGET_ENV, "").strip()
    if setting:
        return MemoryBudget(parse_quantity(setting), f"{BUDGET_ENV}")
    limit = cgroup_limit(cgroup_root)
    if limit is not None:
        return MemoryBudget(limit, "the container's cgroup memory limit")
    return MemoryBudget(DEFAULT_BUDGET_BYTES, "the default (no setting, no cgroup limit)")


def probe_batch_size(*, budget_bytes: int, bytes_per_sample: int, share: float = PROBE_SHARE) -> int:
    """Samples per probe batch: ``share x budget / bytes_per_sample``, clamped to [1, 64]."""
    if bytes_per_sample <= 0:
        return MAX_PROBE_BATCH
    fits = int(share * budget_bytes) // bytes_per_sample
    return max(MIN_PROBE_BATCH, min(MAX_PROBE_BATCH, fits))


def tensor_bytes_per_sample(shape: tuple[int | str | None, ...], itemsize: int) -> int | None:
    """Bytes of one sample of a tensor whose first dimension is the batch; None when another dimension is unknown."""
    size = itemsize
    for dim in shape[1:]:
        if not isinstance(dim, int) or dim < 0:
            return None
        size *= dim
    return size


#: Share of the budget the decoded arrays of one dataset may take: models, runtimes and the other sets need the rest.
DATA_SHARE = 0.5


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def data_fits(*, what: str, needed_bytes: int, budget: MemoryBudget, share: float = DATA_SHARE) -> str | None:
    """None when ``needed_bytes`` fits in ``share`` of the budget, else the refusal naming the numbers and the fix."""
    allowed = int(share * budget.bytes)
    if needed_bytes <= allowed:
        return None
    return (
        f"{what} needs {mib(needed_bytes)} of memory decoded, more than {share:.0%} of the worker's memory budget "
        f"({mib(budget.bytes)}, from {budget.source}); raise spec.resources.limits.memory (for a local run, "
        f"{BUDGET_ENV}), or use fewer samples (a smaller file, or a lower samples / maxSamples)"
    )
