"""The QuantizationJob API: models, constants, exit codes and the generated CRD.

Internal code imports modules (``from edgequant.api import v1alpha1``); this
package re-exports the names users of the library need.
"""

from edgequant.api.conditions import ConditionStatus, ConditionType, Phase, Reason
from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Method,
    MethodFamily,
    QuantizationJob,
    QuantizationJobSpec,
    QuantizationJobStatus,
    Results,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ConditionStatus",
    "ConditionType",
    "ExitCode",
    "Method",
    "MethodFamily",
    "Phase",
    "QuantizationJob",
    "QuantizationJobSpec",
    "QuantizationJobStatus",
    "Reason",
    "Results",
    "WorkerResult",
]
