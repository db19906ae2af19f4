"""Environment variables the operator sets on the quantizer Job and the worker reads (one name, two sides)."""

from __future__ import annotations

#: The worker's memory budget: bytes or a Kubernetes quantity (3Gi). The Job sets it from the container's
#: memory limit (downward API); the layer analysis sizes its batches to it (docs/analysis.md).
MEMORY_BUDGET_ENV = "EDGEQUANT_MEMORY_BUDGET"

#: The scratch folder's size limit (bytes or a quantity): downloads that would not fit stop before they start.
SCRATCH_LIMIT_ENV = "EDGEQUANT_SCRATCH_LIMIT"
