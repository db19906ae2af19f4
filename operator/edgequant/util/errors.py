"""The worker's error hierarchy: every deliberate failure carries the exit code it ends the run with.

Storage, data and backend code raise these (or subclasses); the worker turns
them into an exit code and a one-line message in exactly one place
(``edgequant.worker.main``). Anything else is an internal error. Messages say
what is wrong, name the field, file or URI, and say how to fix it.
"""

from __future__ import annotations

from typing import ClassVar

from edgequant.api.exitcodes import ExitCode


class EdgequantError(Exception):
    """Base of deliberate failures; the class decides the exit code."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL_ERROR


class InvalidInputError(EdgequantError):
    """The spec, the model or a dataset is unusable as given."""

    exit_code = ExitCode.INVALID_INPUT


class DataValidationError(EdgequantError):
    """Calibration or evaluation data broke a calibration rule."""

    exit_code = ExitCode.DATA_VALIDATION_FAILED


class AcceptanceError(EdgequantError):
    """The quantized model missed the acceptance budget."""

    exit_code = ExitCode.ACCEPTANCE_FAILED


class StorageUnavailableError(EdgequantError):
    """Object storage could not be reached or refused a transfer."""

    exit_code = ExitCode.STORAGE_UNAVAILABLE


class AcceleratorUnavailableError(EdgequantError):
    """The method needs an accelerator that this process cannot see."""

    exit_code = ExitCode.ACCELERATOR_UNAVAILABLE
