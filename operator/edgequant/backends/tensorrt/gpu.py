"""Is there a GPU this process can use? Asked of the CUDA driver through ctypes, before TensorRT or pycuda load.

The worker fails fast with ``ExitCode.ACCELERATOR_UNAVAILABLE`` and a message
that says why and what to change, instead of a TensorRT or pycuda traceback.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgequant.util.errors import AcceleratorUnavailableError

DRIVER_LIBRARY = "libcuda.so.1"

#: CUresult values worth naming when the driver cannot report names itself (cuda.h).
_CUDA_ERRORS = {
    3: "CUDA_ERROR_NOT_INITIALIZED",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    999: "CUDA_ERROR_UNKNOWN",
}


@dataclass(frozen=True)
class GpuProbe:
    devices: int
    reason: str | None = None
    """Why no device is usable (None when ``devices`` > 0)."""


def _error_name(lib: Any, code: int) -> str:
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
            return name.value.decode()
    except AttributeError:
        pass
    return _CUDA_ERRORS.get(code, f"CUresult {code}")


def probe_cuda(*, load: Callable[[str], Any] = ctypes.CDLL) -> GpuProbe:
    """Count CUDA devices with the driver API (cuInit + cuDeviceGetCount); never raises."""
    try:
        lib = load(DRIVER_LIBRARY)
    except OSError:
        return GpuProbe(
            0, f"the NVIDIA driver library {DRIVER_LIBRARY} is not loadable (no GPU driver mounted into this container)"
        )
    code = lib.cuInit(0)
    if code != 0:
        return GpuProbe(0, f"cuInit failed with {_error_name(lib, code)}")
    count = ctypes.c_int(0)
    code = lib.cuDeviceGetCount(ctypes.byref(count))
    if code != 0:
        return GpuProbe(0, f"cuDeviceGetCount failed with {_error_name(lib, code)}")
    if count.value == 0:
        return GpuProbe(0, "the CUDA driver reports 0 devices")
    return GpuProbe(count.value)


def hidden_by_environment(env: Mapping[str, str]) -> str | None:
    """A GPU hidden on purpose: CUDA_VISIBLE_DEVICES empty or -1, NVIDIA_VISIBLE_DEVICES none/void."""
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None and cuda.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={cuda!r} hides every GPU"
    nvidia = env.get("NVIDIA_VISIBLE_DEVICES")
    if nvidia is not None and nvidia.strip().lower() in ("", "none", "void"):
        return f"NVIDIA_VISIBLE_DEVICES={nvidia!r}: the container runtime mounted no GPU"
    return None


def require_gpu(
    *,
    method: str,
    env: Mapping[str, str] | None = None,
    probe: Callable[[], GpuProbe] | None = None,
) -> int:
    """The number of usable GPUs; raises ``AcceleratorUnavailableError`` (exit code 14) when there is none."""
    reason = hidden_by_environment(os.environ if env is None else env)
    if reason is None:
        result = (probe or probe_cuda)()
        if result.devices > 0:
            return result.devices
        reason = result.reason or "no CUDA device"
    raise AcceleratorUnavailableError(
        f"spec.method {method} builds a TensorRT engine and needs an NVIDIA GPU, but this process sees none: {reason}. "
        "Run it on a GPU node: keep resources.accelerator auto or gpu (the operator requests nvidia.com/gpu and the "
        "quantizer-tensorrt image), and check that the node runs the NVIDIA device plugin; "
        "for CPU-only quantization use onnx-static instead"
    )
