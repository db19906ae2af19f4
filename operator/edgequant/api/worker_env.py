"""Environment variables the operator sets on the quantizer Job and the worker reads (one name, two sides)."""

from __future__ import annotations

#: The worker's memory budget: bytes or a Kubernetes quantity (3Gi). The Job sets it from the container's
#: memory limit (downward API); the layer analysis sizes its batches to it (docs/analysis.md).
MEMORY_BUDGET_ENV = "EDGEQUANT_MEMORY_BUDGET"

#: The scratch folder's size limit (bytes or a quantity): downloads that would not fit stop before they start.
SCRATCH_LIMIT_ENV = "EDGEQUANT_SCRATCH_LIMIT"

#: How long the worker waits for an S3 endpoint: seconds to connect, seconds for each read, attempts per request.
#: A hung endpoint (accepts, never answers) ends as StorageUnavailable after about attempts x (connect + read).
S3_CONNECT_TIMEOUT_ENV = "EDGEQUANT_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT_ENV = "EDGEQUANT_S3_READ_TIMEOUT"
S3_MAX_ATTEMPTS_ENV = "EDGEQUANT_S3_MAX_ATTEMPTS"
