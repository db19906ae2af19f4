"""The no-GPU failure: clear message, exit code ACCELERATOR_UNAVAILABLE, before TensorRT or pycuda load."""

from __future__ import annotations

import ctypes
import sys

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.backends.tensorrt.gpu import GpuProbe, hidden_by_environment, probe_cuda, require_gpu
from edgequant.storage import Stores
from edgequant.util.errors import AcceleratorUnavailableError


def test_this_machine_is_probed_and_without_a_gpu_says_so_with_the_fix() -> None:
    """Asks this machine's driver: with a GPU the check passes and counts it; without one it fails naming the fix."""
    probe = probe_cuda()
    if probe.devices > 0:  # a GPU machine: the GPU path
        assert require_gpu(method="tensorrt-int8", env={}) == probe.devices
        assert "tensorrt" not in sys.modules and "pycuda" not in sys.modules
        return
    assert probe.reason, "no GPU here: the probe must say why"
    with pytest.raises(AcceleratorUnavailableError) as info:
        require_gpu(method="tensorrt-int8", env={})
    message = str(info.value)
    assert "spec.method tensorrt-int8" in message and probe.reason in message
    assert "resources.accelerator" in message and "nvidia.com/gpu" in message
    assert info.value.exit_code is ExitCode.ACCELERATOR_UNAVAILABLE == 14
    assert "tensorrt" not in sys.modules and "pycuda" not in sys.modules


class DriverWithoutDevices:
    """The CUDA driver API as a node without GPUs answers it (cuInit -> CUDA_ERROR_NO_DEVICE)."""

    def __init__(self, init_code: int = 100, count: int = 0) -> None:
        self.init_code, self.count = init_code, count

    def cuInit(self, flags: int) -> int:
        return self.init_code

    def cuDeviceGetCount(self, out: object) -> int:
        ctypes.cast(out, ctypes.POINTER(ctypes.c_int))[0] = self.count
        return 0


def test_driver_answers_are_turned_into_reasons() -> None:
    assert probe_cuda(load=lambda _name: DriverWithoutDevices()).reason == "cuInit failed with CUDA_ERROR_NO_DEVICE"
    assert (
        probe_cuda(load=lambda _name: DriverWithoutDevices(init_code=0, count=0)).reason
        == "the CUDA driver reports 0 devices"
    )
    assert probe_cuda(load=lambda _name: DriverWithoutDevices(init_code=0, count=2)) == GpuProbe(2)

    def missing(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    assert "libcuda.so.1 is not loadable" in (probe_cuda(load=missing).reason or "")


@pytest.mark.parametrize(
    ("env", "hidden"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES=''"),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES='-1'"),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, "NVIDIA_VISIBLE_DEVICES='void'"),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, "NVIDIA_VISIBLE_DEVICES='none'"),
        ({"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all"}, None),
        ({}, None),
    ],
)
def test_gpus_hidden_by_the_environment(env: dict[str, str], hidden: str | None) -> None:
    reason = hidden_by_environment(env)
    assert (reason is None) == (hidden is None)
    if hidden is not None:
        assert hidden in reason


def test_hidden_gpus_fail_without_asking_the_driver() -> None:
    def probe() -> GpuProbe:
        raise AssertionError("the driver must not be asked when the environment hides every GPU")

    with pytest.raises(AcceleratorUnavailableError, match="NVIDIA_VISIBLE_DEVICES='void'"):
        require_gpu(method="tensorrt-fp16", env={"NVIDIA_VISIBLE_DEVICES": "void"}, probe=probe)


def test_visible_devices_are_counted() -> None:
    assert require_gpu(method="tensorrt-fp16", env={}, probe=lambda: GpuProbe(3)) == 3


def test_backend_construction_checks_the_gpu_before_loading_tensorrt() -> None:
    """Without a GPU (this machine's driver says) construction fails fast; with one it succeeds. Neither loads TensorRT."""
    from edgequant.backends import registry

    stores = Stores(storage=api.Storage())
    if probe_cuda().devices > 0:  # a GPU machine: the GPU path
        backend = registry.backend_for(api.Method.TENSORRT_FP16, stores=stores)
        assert api.Method.TENSORRT_FP16 in backend.methods
    else:
        with pytest.raises(AcceleratorUnavailableError, match="needs an NVIDIA GPU"):
            registry.backend_for(api.Method.TENSORRT_FP16, stores=stores)
    assert "tensorrt" not in sys.modules and "pycuda" not in sys.modules
