"""Worker exit codes: the contract between the quantizer pod and the operator's podFailurePolicy.

Codes stay clear of 1 (any Python crash) and 2 (argparse usage errors) so that a
deliberate outcome is never confused with an accident.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Why the worker stopped. Values are part of the public API: never renumber."""

    SUCCESS = 0
    INTERNAL_ERROR = 1
    INVALID_INPUT = 10
    """The spec, the model file or a dataset is unusable as given (missing object, wrong format, bad shape)."""
    DATA_VALIDATION_FAILED = 11
    """The calibration/evaluation data broke a calibration rule (too few samples, missing classes, noise)."""
    ACCEPTANCE_FAILED = 12
    """The quantized model missed the acceptance budget and ``onFailure`` is ``fail``."""
    STORAGE_UNAVAILABLE = 13
    """Object storage could not be reached or refused a transfer; retrying may help."""
    ACCELERATOR_UNAVAILABLE = 14
    """The method needs a GPU (TensorRT) and none is visible to the process."""


#: Outcomes that retrying cannot change: the operator fails the Job at once.
NON_RETRIABLE: frozenset[ExitCode] = frozenset(
    {
        ExitCode.INVALID_INPUT,
        ExitCode.DATA_VALIDATION_FAILED,
        ExitCode.ACCEPTANCE_FAILED,
        ExitCode.ACCELERATOR_UNAVAILABLE,
    }
)

#: CamelCase reasons used in conditions and results, one per exit code.
REASONS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "Completed",
    ExitCode.INTERNAL_ERROR: "InternalError",
    ExitCode.INVALID_INPUT: "InvalidInput",
    ExitCode.DATA_VALIDATION_FAILED: "DataValidationFailed",
    ExitCode.ACCEPTANCE_FAILED: "AcceptanceFailed",
    ExitCode.STORAGE_UNAVAILABLE: "StorageUnavailable",
    ExitCode.ACCELERATOR_UNAVAILABLE: "AcceleratorUnavailable",
}
