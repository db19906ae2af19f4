"""The contract between the operator and the quantizer pod: what the rendered Job sets and the worker reads.

One name, two sides: ``controller/render.py`` (and ``controller/sweep.py`` for the sweep's report Job) writes these
environment variables, paths and commands into the Job; ``worker/`` (main, sandbox), ``storage/`` and
``util/memory.py`` read them. How the worker ends is the other half of the contract: its exit codes and their
reasons are ``edgequant.api.exitcodes`` (the Job's podFailurePolicy is rendered from that table).
"""

from __future__ import annotations

# --------------------------------------------------------------------------- commands

#: The quantizer container's command (the quantizer images' entry point too): ``edgequant.worker.main``.
WORKER_COMMAND: tuple[str, ...] = ("edgequant-worker",)
#: The command of a sweep's report Job (``edgequant.cli.sweep_report``), run in the quantizer image.
SWEEP_REPORT_COMMAND: tuple[str, ...] = ("edgequant", "sweep-report")

# --------------------------------------------------------------------------- paths in the pod

#: The scratch emptyDir (its sizeLimit is spec.resources.scratchSize): workdir, TMPDIR and HOME of the worker.
SCRATCH_DIR = "/scratch"
#: Where the storage CA bundle ConfigMap (spec.storage.caBundle) is mounted.
CA_BUNDLE_DIR = "/etc/edgequant/ca"
#: Where Kubernetes reads the worker's termination message (the compact WorkerResult).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# --------------------------------------------------------------------------- environment

#: The job: a QuantizationJob as JSON (metadata name/namespace/generation and the spec).
SPEC_ENV = "EDGEQUANT_SPEC"
#: The scratch folder the worker works in (the Job sets SCRATCH_DIR; locally a temporary folder).
WORKDIR_ENV = "EDGEQUANT_WORKDIR"
#: Overrides TERMINATION_MESSAGE_PATH (the test node and local runs point it at a file of theirs).
TERMINATION_LOG_ENV = "EDGEQUANT_TERMINATION_LOG"
#: SANDBOX_ON: run the pipeline in a child process without the storage keys (worker/sandbox.py).
SANDBOX_ENV = "EDGEQUANT_SANDBOX"
SANDBOX_ON = "1"
#: The sandboxed child's end of the storage broker socket (set by the parent, never by the Job).
BROKER_FD_ENV = "EDGEQUANT_STORAGE_BROKER_FD"
#: The PEM file of the storage CA bundle (below CA_BUNDLE_DIR in the pod; any file locally).
CA_BUNDLE_ENV = "EDGEQUANT_CA_BUNDLE"

#: The worker's memory budget: bytes or a Kubernetes quantity (3Gi). The Job sets it from the container's
#: memory limit (downward API); the layer analysis sizes its batches to it (docs/analysis.md).
MEMORY_BUDGET_ENV = "EDGEQUANT_MEMORY_BUDGET"
#: The scratch folder's size limit (bytes or a quantity): downloads that would not fit stop before they start.
SCRATCH_LIMIT_ENV = "EDGEQUANT_SCRATCH_LIMIT"

#: Threads a backend's runtime uses for inference and QAT (the backends' defaults suit a 4-core edge board).
THREADS_ENV = "EDGEQUANT_THREADS"

#: How long the worker waits for an S3 endpoint: seconds to connect, seconds for each read, attempts per request.
#: A hung endpoint (accepts, never answers) ends as StorageUnavailable after about attempts x (connect + read).
S3_CONNECT_TIMEOUT_ENV = "EDGEQUANT_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT_ENV = "EDGEQUANT_S3_READ_TIMEOUT"
S3_MAX_ATTEMPTS_ENV = "EDGEQUANT_S3_MAX_ATTEMPTS"

#: The sweep's report Job: the sweep (spec and the status the operator gathered) as JSON, in place of SPEC_ENV.
SWEEP_ENV = "EDGEQUANT_SWEEP"
