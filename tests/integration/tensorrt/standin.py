"""Stand-ins for the ``tensorrt`` and ``pycuda`` modules, which cannot exist without a GPU (notes, item 17).

They expose only the documented Python API names the backend calls, per major
version (8.6 lacks STRONGLY_TYPED; a 10.x strongly typed network refuses layer
precisions and precision flags, as its docs say), so a misspelt or
version-wrong call fails here. Engines "run" their ONNX file (the Q/DQ one for
explicit builds) on ONNX Runtime's CPU provider through a device-memory
registry, so predictions, shapes and batching are real; TensorRT's own kernel
selection, fusion and INT8 arithmetic are not emulated. The calibrator
contract is TensorRT's: the cache is read first and used when its header names
this version and calibrator; otherwise batches are pulled until get_batch
returns None and the result is written through write_calibration_cache.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.backends.tensorrt.cache_format import CalibrationTable, parse, render
from edgequant.backends.tensorrt.version import parse_version

# --------------------------------------------------------------------------- pycuda


class DeviceMemory:
    """Address -> bytes for every live allocation (what the GPU would hold)."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.next = 0x7000_0000
        self.freed: list[int] = []

    def alloc(self, nbytes: int) -> int:
        ptr = self.next
        self.blocks[ptr] = bytearray(nbytes)
        self.next += max(nbytes, 256)
        return ptr

    def view(self, ptr: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(self.blocks[ptr], dtype=dtype, count=count).reshape(shape)


def make_pycuda(memory: DeviceMemory) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """pycuda, pycuda.driver and pycuda.autoprimaryctx modules over ``memory``."""

    class DeviceAllocation:
        __slots__ = ("_ptr",)

        def __init__(self, nbytes: int) -> None:
            self._ptr = memory.alloc(nbytes)

        def __int__(self) -> int:
            return self._ptr

        def free(self) -> None:
            memory.freed.append(self._ptr)

    class Stream:
        __slots__ = ("handle",)

        def __init__(self) -> None:
            self.handle = 0x5EED

        def synchronize(self) -> None:
            pass

    class Event:
        __slots__ = ("_t",)

        def __init__(self) -> None:
            self._t = 0.0

        def record(self, stream: Stream) -> None:
            self._t = float(len(memory.blocks))

        def synchronize(self) -> None:
            pass

        def time_since(self, other: Event) -> float:
            return 0.25

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        raw = np.ascontiguousarray(src).tobytes()
        memory.blocks[int(dest)][: len(raw)] = raw

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream) -> None:
        memcpy_htod(dest, src)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream) -> None:
        raw = memory.blocks[int(src)]
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = np.frombuffer(raw, dtype=np.uint8, count=flat.size)

    def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    driver = types.ModuleType("pycuda.driver")
    for name, value in {
        "mem_alloc": DeviceAllocation,
        "memcpy_htod": memcpy_htod,
        "memcpy_htod_async": memcpy_htod_async,
        "memcpy_dtoh_async": memcpy_dtoh_async,
        "pagelocked_empty": pagelocked_empty,
        "Stream": Stream,
        "Event": Event,
    }.items():
        setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    autoprimaryctx = types.ModuleType("pycuda.autoprimaryctx")
    package.autoprimaryctx = autoprimaryctx  # type: ignore[attr-defined]
    return package, driver, autoprimaryctx


# --------------------------------------------------------------------------- tensorrt


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 10


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class LayerType(enum.Enum):
    CONVOLUTION = 0
    ACTIVATION = 1
    POOLING = 2
    SHUFFLE = 3
    MATRIX_MULTIPLY = 4
    ELEMENTWISE = 5
    CONSTANT = 6
    QUANTIZE = 7
    DEQUANTIZE = 8
    UNARY = 9


_LAYER_OF_OP = {
    "Conv": LayerType.CONVOLUTION,
    "Relu": LayerType.ACTIVATION,
    "MaxPool": LayerType.POOLING,
    "Flatten": LayerType.SHUFFLE,
    "Reshape": LayerType.SHUFFLE,
    "Gemm": LayerType.MATRIX_MULTIPLY,
    "QuantizeLinear": LayerType.QUANTIZE,
    "DequantizeLinear": LayerType.DEQUANTIZE,
}

_NPTYPE = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32}


def make_tensorrt(version: str, memory: DeviceMemory) -> types.ModuleType:
    """A ``tensorrt`` module of ``version`` (8.6.x or 10.x API surface)."""
    major = parse_version(version).major
    number = parse_version(version).number
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    builds: list[dict[str, Any]] = []
    trt.builds = builds  # type: ignore[attr-defined]  (what each build_serialized_network saw, for assertions)

    network_flags = (
        {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1} if major == 8 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    )
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flags)  # type: ignore[misc]
    builder_flags = [
        "FP16",
        "INT8",
        "DEBUG",
        "GPU_FALLBACK",
        "REFIT",
        "DISABLE_TIMING_CACHE",
        "TF32",
        "SPARSE_WEIGHTS",
        "SAFETY_SCOPE",
        "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS",
        "DIRECT_IO",
    ]
    BuilderFlag = enum.Enum("BuilderFlag", {name: i for i, name in enumerate(builder_flags)})  # type: ignore[misc]

    class ILogger:
        Severity = Severity

        def __init__(self) -> None:
            pass

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            self.min_severity = min_severity

        def log(self, severity: Severity, msg: str) -> None:
            pass

    class ITensor:
        __slots__ = ("dtype", "name", "shape")

        def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class ILayer:
        __slots__ = ("_network", "_outputs", "_precision", "name", "output_types", "type")

        def __init__(self, name: str, kind: LayerType, outputs: list[ITensor], network: INetworkDefinition) -> None:
            self.name, self.type, self._outputs, self._network = name, kind, outputs, network
            self._precision: DataType | None = None
            self.output_types: dict[int, DataType] = {}

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        @property
        def precision(self) -> DataType:
            return self._precision or DataType.FLOAT

        @precision.setter
        def precision(self, dtype: DataType) -> None:
            if self._network.strongly_typed:
                raise RuntimeError("setting layer precision is not allowed in a strongly typed network")
            self._precision = dtype

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

        def set_output_type(self, index: int, dtype: DataType) -> None:
            if self._network.strongly_typed:
                raise RuntimeError("setting layer output types is not allowed in a strongly typed network")
            self._outputs[index]  # IndexError for a bad index, like TensorRT's assertion
            self.output_types[index] = dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            known = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise ValueError(f"unknown network creation flags {flags:#x}")
            self.explicit_batch = major >= 10 or bool(flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
            self.strongly_typed = major >= 10 and bool(flags & (1 << NetworkDefinitionCreationFlag["STRONGLY_TYPED"]))
            self.layers: list[ILayer] = []
            self.inputs: list[ITensor] = []
            self.outputs: list[str] = []
            self.onnx_path: str | None = None

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, index: int) -> ILayer:
            return self.layers[index]

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

    class ParserError:
        def __init__(self, node: int, desc: str) -> None:
            self._node, self._desc = node, desc

        def node(self) -> int:
            return self._node

        def desc(self) -> str:
            return self._desc

    class OnnxParser:
        """Layers as onnx-tensorrt names them: node name, then <node>_<n> for extra layers; Constant folds away."""

        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self._network, self._errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def parse_from_file(self, model: str) -> bool:
            import onnx

            if not self._network.explicit_batch:
                self._errors.append(
                    ParserError(-1, "Network must have explicit batch (EXPLICIT_BATCH) for ONNX models")
                )
                return False
            proto = onnx.load(model)
            net = self._network
            net.onnx_path = model
            inits = {i.name for i in proto.graph.initializer}
            graph_input = next(i for i in proto.graph.input if i.name not in inits)
            dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in graph_input.type.tensor_type.shape.dim)
            net.inputs.append(ITensor(graph_input.name, dims, DataType.FLOAT))
            counter = 0
            for node in proto.graph.node:
                if node.op_type == "Constant":
                    continue
                kind = _LAYER_OF_OP.get(node.op_type)
                if kind is None:
                    self._errors.append(ParserError(len(net.layers), f"no importer for {node.op_type}"))
                    return False
                if node.op_type == "Gemm":  # MatrixMultiply then an ElementWise bias add, as the 8.x importer does
                    tmp = ITensor(f"{node.output[0]}_matmul", (), DataType.FLOAT)
                    net.layers.append(ILayer(node.name, LayerType.MATRIX_MULTIPLY, [tmp], net))
                    counter += 1
                    net.layers.append(
                        ILayer(
                            f"{node.name}_{counter}",
                            LayerType.ELEMENTWISE,
                            [ITensor(node.output[0], (), DataType.FLOAT)],
                            net,
                        )
                    )
                    continue
                out_type = DataType.INT8 if node.op_type == "QuantizeLinear" else DataType.FLOAT
                net.layers.append(ILayer(node.name, kind, [ITensor(o, (), out_type) for o in node.output], net))
            net.outputs = [o.name for o in proto.graph.output]
            return True

    class IOptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002  (TensorRT's keyword names)
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        __slots__ = ("calibration_profile", "flags", "int8_calibrator", "pools", "profiles")

        def __init__(self) -> None:
            self.flags: list[Any] = []
            self.pools: dict[Any, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.calibration_profile: IOptimizationProfile | None = None
            self.int8_calibrator: Any = None

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            self.pools[pool] = pool_size

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, BuilderFlag):
                raise TypeError(f"not a BuilderFlag: {flag!r}")
            self.flags.append(flag)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self.calibration_profile = profile
            return True

    class IHostMemory(bytes):
        pass

    class CalibratorBase:
        algorithm_name = ""

        def __init__(self) -> None:
            self._initialised = True

    class IInt8EntropyCalibrator2(CalibratorBase):
        algorithm_name = "EntropyCalibration2"

    class IInt8MinMaxCalibrator(CalibratorBase):
        algorithm_name = "MinMaxCalibration"

    def _calibrate(network: INetworkDefinition, config: IBuilderConfig, log: ILogger) -> dict[str, Any]:
        calibrator = config.int8_calibrator
        if not getattr(calibrator, "_initialised", False):
            raise RuntimeError("calibrator base class __init__ was not called")
        header = f"TRT-{number}-{type(calibrator).__mro__[1].algorithm_name}"
        cached = calibrator.read_calibration_cache()
        if cached:
            table = parse(bytes(cached))
            if table.header == header:
                return {"calibration": "cache", "batches": 0}
            log.log(Severity.WARNING, f"calibration cache header {table.header} does not match {header}: recalibrating")
        tensor = network.get_input(0)
        shape = tensor.shape
        if shape[0] < 0:
            profile = config.calibration_profile or config.profiles[0]
            shape = profile.shapes[tensor.name][1]  # calibration runs at kOPT
        seen: list[np.ndarray] = []
        while True:
            pointers = calibrator.get_batch([tensor.name])
            if not pointers:
                break
            seen.append(memory.view(int(pointers[0]), np.float32, shape).copy())
        if not seen:
            log.log(Severity.ERROR, "Calibration failure occurred with no scaling factors detected")
            return {"calibration": "failed", "batches": 0}
        data = np.concatenate(seen)
        scale_in = float(np.abs(data).max()) / 127.0
        table = CalibrationTable(version=number, algorithm=header.split("-", 2)[2], scales={tensor.name: scale_in})
        calibrator.write_calibration_cache(memoryview(render(table)))
        return {"calibration": "batches", "batches": len(seen)}

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
            names = {f.name for f in config.flags}
            record: dict[str, Any] = {"flags": sorted(names), "strongly_typed": network.strongly_typed}
            builds.append(record)
            if network.strongly_typed and names & {
                "FP16",
                "INT8",
                "OBEY_PRECISION_CONSTRAINTS",
                "PREFER_PRECISION_CONSTRAINTS",
            }:
                self._logger.log(Severity.ERROR, "precision flags are not allowed with a strongly typed network")
                return None
            tensor = network.get_input(0)
            dynamic = tensor.shape[0] < 0
            if dynamic and not config.profiles:
                self._logger.log(Severity.ERROR, "network has dynamic inputs but no optimization profile")
                return None
            pinned = {
                layer.name: {
                    "precision": layer.precision.name,
                    "outputs": {str(i): t.name for i, t in layer.output_types.items()},
                }
                for layer in network.layers
                if layer.precision_is_set
            }
            record["pinned"] = pinned
            if pinned and not names & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}:
                self._logger.log(
                    Severity.WARNING, "layer precisions set without a precision-constraints flag are ignored"
                )
            if "INT8" in names and config.int8_calibrator is not None:
                if dynamic and config.calibration_profile is None:
                    self._logger.log(
                        Severity.ERROR, "INT8 calibration of a dynamic network needs a calibration profile"
                    )
                    return None
                record.update(_calibrate(network, config, self._logger))
                if record["calibration"] == "failed":
                    return None
            shapes = config.profiles[0].shapes[tensor.name] if dynamic else (tensor.shape,) * 3
            record["profile"] = shapes
            plan = {
                "onnx": network.onnx_path,
                "input": tensor.name,
                "shapes": shapes,
                "outputs": network.outputs,
                "version": version,
                "flags": sorted(names),
                "pinned": pinned,
            }
            return IHostMemory(json.dumps(plan).encode())

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._shape = engine.plan["shapes"][2] if engine.dynamic else engine.plan["shapes"][0]
            self._addresses: dict[str, int] = {}
            self._session: Any = None

        def set_input_shape(self, name: str, shape: Any) -> bool:
            low, _opt, high = self._engine.plan["shapes"]
            shape = tuple(shape)
            if name != self._engine.plan["input"] or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
            self._shape = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == self._engine.plan["input"]:
                return self._shape
            return (self._shape[0], self._engine.classes)

        def set_tensor_address(self, name: str, memory_ptr: int) -> bool:
            self._addresses[name] = int(memory_ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            import onnxruntime as ort

            if self._session is None:
                self._session = ort.InferenceSession(self._engine.plan["onnx"], providers=["CPUExecutionProvider"])
            plan = self._engine.plan
            x = memory.view(self._addresses[plan["input"]], np.float32, self._shape)
            y = self._session.run(None, {plan["input"]: np.array(x)})[0].astype(np.float32)
            target = memory.blocks[self._addresses[plan["outputs"][0]]]
            target[: y.nbytes] = y.tobytes()
            return True

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            import onnx

            self.plan = plan
            self.dynamic = plan["shapes"][0] != plan["shapes"][2]
            output = onnx.load(plan["onnx"]).graph.output[0]
            self.classes = output.type.tensor_type.shape.dim[-1].dim_value

        @property
        def num_io_tensors(self) -> int:
            return 1 + len(self.plan["outputs"])

        def get_tensor_name(self, index: int) -> str:
            return [self.plan["input"], *self.plan["outputs"]][index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            first = tuple(self.plan["shapes"][0])
            shape = (-1, *first[1:]) if self.dynamic else first
            return shape if name == self.plan["input"] else (shape[0], self.classes)

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            return [tuple(s) for s in self.plan["shapes"]]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            try:
                plan = json.loads(bytes(serialized_engine))
            except ValueError:
                return None
            if plan.get("version") != version:
                return None
            return ICudaEngine(plan)

    def nptype(dtype: DataType) -> Any:
        return _NPTYPE[dtype]

    for name, value in {
        "ILogger": ILogger,
        "Logger": Logger,
        "Builder": Builder,
        "OnnxParser": OnnxParser,
        "Runtime": Runtime,
        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
        "BuilderFlag": BuilderFlag,
        "DataType": DataType,
        "MemoryPoolType": MemoryPoolType,
        "LayerType": LayerType,
        "TensorIOMode": TensorIOMode,
        "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "IInt8MinMaxCalibrator": IInt8MinMaxCalibrator,
        "nptype": nptype,
    }.items():
        setattr(trt, name, value)
    return trt


def install(monkeypatch: Any, *, version: str) -> tuple[types.ModuleType, DeviceMemory]:
    """Put stand-in ``tensorrt`` and ``pycuda`` modules into sys.modules for one test."""
    memory = DeviceMemory()
    trt = make_tensorrt(version, memory)
    package, driver, autoprimaryctx = make_pycuda(memory)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.autoprimaryctx", autoprimaryctx)
    return trt, memory


def engine_plan(path: Path) -> dict[str, Any]:
    """What the stand-in builder recorded in a serialized engine."""
    return json.loads(path.read_bytes())
