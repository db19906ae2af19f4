"""Engine builds with the TensorRT Python API, driven by a ``BuildPlan``. Needs TensorRT and a GPU.

The ``trt`` module is passed in (imported by the backend), so this file imports
nothing heavy. Every call used here exists in TensorRT 8.6 and 10.x (see the
API table in docs/tensorrt.md); the plan carries what differs between them
(network creation flags, strong typing, calibrators).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgequant.backends.onnx_graph import OnnxNode
from edgequant.backends.tensorrt.calibrator import CalibrationSession, make_calibrator
from edgequant.backends.tensorrt.names import PinPlan, PinResolution, TrtLayer, pin_decisions, resolve_pins
from edgequant.backends.tensorrt.plan import BuildPlan
from edgequant.util.errors import EdgequantError, InvalidInputError


class EngineBuildError(EdgequantError):
    """TensorRT could not build an engine for a model it parsed (unsupported layer/precision combination)."""


def make_logger(trt: Any, *, echo: Callable[[str], None]) -> Any:
    """An ILogger that keeps warnings and errors for error messages and echoes them to the job log."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(
                trt.ILogger.Severity.WARNING
            ):  # INTERNAL_ERROR=0 < ERROR < WARNING < INFO < VERBOSE
                text = f"TensorRT {getattr(severity, 'name', severity)}: {msg}"
                self.messages.append(text)
                echo(text)

    return CollectingLogger()


def describe_layers(network: Any) -> list[TrtLayer]:
    """Name, type and outputs of every layer of a parsed network."""
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        layers.append(
            TrtLayer(
                name=layer.name,
                type=layer.type.name,
                outputs=tuple(t.name for t in outputs),
                output_dtypes=tuple(t.dtype.name for t in outputs),
            )
        )
    return layers


def network_flags(trt: Any, names: Sequence[str]) -> int:
    flags = 0
    for name in names:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


@dataclass
class BuildResult:
    serialized: bytes
    layers: list[TrtLayer]
    pins: PinPlan = field(default_factory=PinPlan)
    resolution: PinResolution = field(default_factory=PinResolution)
    log: list[str] = field(default_factory=list)


def build_engine(
    trt: Any,
    *,
    onnx_path: Path,
    plan: BuildPlan,
    nodes: Sequence[OnnxNode],
    batch_size: int,
    workspace_bytes: int,
    session: CalibrationSession | None,
    version: str,
    log: Callable[[str], None],
) -> BuildResult:
    """Parse, configure and build one serialized engine as ``plan`` says."""
    logger = make_logger(trt, echo=log)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(f"node {error.node()}: {error.desc()}")
        raise InvalidInputError(
            f"{onnx_path.name}: TensorRT {version}'s ONNX parser rejected the model: {'; '.join(errors[:5]) or 'no detail'} "
            "(simplify or re-export the model with a supported opset)"
        )
    layers = describe_layers(network)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))

    tensor = network.get_input(0)
    dims = tuple(int(d) for d in tensor.shape)
    profile = None
    if any(d < 0 for d in dims):
        sample = dims[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, (1, *sample), (batch_size, *sample), (batch_size, *sample))
        config.add_optimization_profile(profile)

    if plan.calibration is not None:
        if session is None:
            raise ValueError("an implicit INT8 plan needs a calibration session")
        if profile is not None:
            config.set_calibration_profile(
                profile
            )  # calibration runs at the profile's kOPT shape = the calibration batch
        config.int8_calibrator = make_calibrator(trt, algorithm=plan.calibration.calibrator, session=session)

    result = BuildResult(serialized=b"", layers=layers)
    if plan.pinned and plan.pin_precision is not None:
        result.resolution = resolve_pins(
            plan.pinned, nodes=nodes, layers=layers, field_name="spec.mixedPrecision.pinnedLayers"
        )
        by_name = {layer.name: layer for layer in layers}
        wanted = [name for found in result.resolution.layers.values() for name in found]
        result.pins = pin_decisions(wanted, layers=by_name, precision=plan.pin_precision)
        apply_pins(trt, network, result.pins)

    serialized = builder.build_serialized_network(network, config)
    if session is not None:
        session.close()
        if session.error is not None:
            raise session.error
    result.log = list(logger.messages)
    if serialized is None:
        detail = " | ".join(logger.messages[-5:]) or "no message from TensorRT"
        raise EngineBuildError(f"TensorRT {version} could not build the engine for {onnx_path.name}: {detail}")
    result.serialized = bytes(memoryview(serialized))
    return result


def apply_pins(trt: Any, network: Any, pins: PinPlan) -> None:
    """layer.precision and layer.set_output_type for each decision (the builder flag makes TensorRT obey them)."""
    wanted = {d.layer: d for d in pins.decisions}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        decision = wanted.get(layer.name)
        if decision is None:
            continue
        dtype = getattr(trt.DataType, decision.precision)
        layer.precision = dtype
        for index in decision.outputs:
            layer.set_output_type(index, dtype)
