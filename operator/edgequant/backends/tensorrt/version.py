"""Which TensorRT Python API generation to drive, chosen from the installed version. Pure, except ``installed_version``.

Supported: 8.6-8.x and 10.x. Both run engines through the name-based tensor API
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, new in
8.5), and 8.6 is the oldest release the calls here were checked against; 9.x
were limited releases; 11.x removed the weakly typed builder flags (FP16, INT8,
precision constraints) and the INT8 calibrators that this backend's FP16,
implicit INT8 and mixed paths are built on.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from edgequant.util.errors import InvalidInputError


class ApiGeneration(enum.StrEnum):
    TRT8 = "tensorrt-8"
    """Explicit batch must be requested (EXPLICIT_BATCH); no strongly typed networks."""
    TRT10 = "tensorrt-10"
    """Networks are always explicit batch; STRONGLY_TYPED exists; implicit calibrators deprecated (10.1)."""


class UnsupportedTensorRTError(InvalidInputError):
    """The image carries a TensorRT this backend does not drive."""


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def number(self) -> int:
        """NV_TENSORRT_VERSION, as written in calibration cache headers (TRT-8601-..., TRT-100300-...).

        NvInferVersion.h (8.x): major*1000 + minor*100 + patch;
        NvInferRuntimeBase.h (10.x, NV_TENSORRT_VERSION_INT): major*10000 + minor*100 + patch.
        """
        if self.major < 10:
            return self.major * 1000 + self.minor * 100 + self.patch
        return self.major * 10000 + self.minor * 100 + self.patch


_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> TensorRTVersion:
    """'8.6.1', '8.6.1.post1', '10.3.0.26' -> TensorRTVersion; anything else is an error naming the text."""
    match = _VERSION.match(text)
    if match is None:
        raise UnsupportedTensorRTError(f"cannot read a TensorRT version from {text!r}: expected MAJOR.MINOR.PATCH")
    major, minor, patch = match.groups()
    return TensorRTVersion(int(major), int(minor), int(patch or 0))


_IMAGE_HINT = "use the quantizer-tensorrt image (or an execution.image built on TensorRT 8.6-8.x or 10.x)"


def api_generation(version: TensorRTVersion) -> ApiGeneration:
    """The code path for ``version``; an error naming the version and the fix when there is none."""
    if version.major == 8 and version.minor >= 6:
        return ApiGeneration.TRT8
    if version.major == 10:
        return ApiGeneration.TRT10
    if version.major < 8 or version.major == 8:
        reason = "it is older than 8.6, the oldest TensorRT whose Python API this backend was checked against"
    elif version.major == 9:
        reason = "9.x were limited releases; TensorRT 10 replaced them"
    else:
        reason = (
            "TensorRT 11 removed the FP16/INT8 builder flags, precision constraints and INT8 calibrators "
            "that the FP16, implicit INT8 and mixed engines are built with"
        )
    raise UnsupportedTensorRTError(f"TensorRT {version} is not supported: {reason}; {_IMAGE_HINT}")


def installed_version() -> TensorRTVersion:
    """The version of the importable ``tensorrt`` module (imports it)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise InvalidInputError(
            f"the tensorrt-* methods need the TensorRT Python bindings, which this image lacks ({exc}); {_IMAGE_HINT}"
        ) from exc
    return parse_version(str(trt.__version__))
