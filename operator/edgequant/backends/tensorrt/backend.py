"""The TensorRT backend: tensorrt-fp16, tensorrt-int8 and tensorrt-mixed engines from ONNX, on a GPU.

Construction checks for a GPU (exit code ACCELERATOR_UNAVAILABLE without one);
TensorRT and pycuda are imported on first use. The decisions come from pure
modules (``plan``, ``names``, ``calibration``); this class wires them to the
engine build and to storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import BackendOptions, TensorRTBackendOptions
from edgequant.api.methods import methods_served_by
from edgequant.backends.base import BaselineArtifact, QuantizedArtifact, QuantizeRequest, own_options
from edgequant.backends.tensorrt import plan as plans
from edgequant.backends.tensorrt.cache_store import CalibrationCacheStore, cache_prefix
from edgequant.backends.tensorrt.calibration import finish_calibration, prepare_calibration
from edgequant.backends.tensorrt.calibrator import DeviceAllocator, PycudaAllocator
from edgequant.backends.tensorrt.gpu import require_gpu
from edgequant.backends.tensorrt.model_info import OnnxModelInfo, read_model_info
from edgequant.backends.tensorrt.version import ApiGeneration, TensorRTVersion, api_generation, installed_version
from edgequant.storage import Stores
from edgequant.util.errors import InvalidInputError


@dataclass(frozen=True)
class TensorRTRuntime:
    module: Any
    version: TensorRTVersion
    generation: ApiGeneration


def _import_tensorrt() -> TensorRTRuntime:
    version = installed_version()
    generation = api_generation(version)
    import tensorrt as trt

    return TensorRTRuntime(module=trt, version=version, generation=generation)


def resolve_batch_size(info: OnnxModelInfo, options: api.TensorRTOptions) -> tuple[int, list[str]]:
    """The engine's largest batch (= calibration batch): the model's fixed batch, else spec.tensorrt.batchSize."""
    fixed = info.fixed_batch
    if fixed is None:
        return options.batch_size, []
    notes = []
    if fixed != options.batch_size:
        notes.append(
            f"the model's input has a fixed batch of {fixed}: engine and calibration use it (spec.tensorrt.batchSize {options.batch_size} ignored)"
        )
    return fixed, notes


class TensorRTBackend:
    name = "tensorrt"
    methods = methods_served_by(__name__)

    def __init__(
        self,
        *,
        stores: Stores,
        gpu_check: Callable[..., int] = require_gpu,
        allocator: Callable[[], DeviceAllocator] = PycudaAllocator,
        tensorrt: Callable[[], TensorRTRuntime] = _import_tensorrt,
    ) -> None:
        gpu_check(method="tensorrt-*")
        self._stores = stores
        self._allocator = allocator
        self._tensorrt_loader = tensorrt
        self._runtime: TensorRTRuntime | None = None

    # ------------------------------------------------------------------ helpers

    def _trt(self) -> TensorRTRuntime:
        if self._runtime is None:
            self._runtime = self._tensorrt_loader()
        return self._runtime

    @staticmethod
    def own(options: BackendOptions) -> TensorRTBackendOptions:
        """A request's options as this backend's own, or an error naming the method it does not run."""
        return own_options(options, TensorRTBackendOptions, backend="TensorRT")

    def quantizable_layers(self, request: QuantizeRequest) -> list[str]:
        """ONNX node names of the weighted ops (Conv, ConvTranspose, Gemm, MatMul), in graph order."""
        return read_model_info(request.model_path).quantizable_nodes()

    # ------------------------------------------------------------------ Backend

    def quantize(self, request: QuantizeRequest) -> QuantizedArtifact:
        method = request.method
        if method not in self.methods:
            raise InvalidInputError(f"spec.method: the TensorRT backend does not run {method.value}")
        options = self.own(request.options)
        runtime = self._trt()
        info = read_model_info(request.model_path)
        plan = plans.plan_build(
            method=method,
            generation=runtime.generation,
            options=options.tensorrt,
            calibration=options.calibration,
            keep_float=request.keep_float,
            fallback=options.fallback_precision,
        )
        batch_size, notes = resolve_batch_size(info, options.tensorrt)
        notes = [f"TensorRT {runtime.version} ({runtime.generation.value} API path)", *notes, *plan.notes]
        request.workdir.mkdir(parents=True, exist_ok=True)

        onnx_path, nodes = request.model_path, info.nodes
        if plan.source is plans.Source.QDQ_ONNX:
            onnx_path = self._qdq_model(request, info=info, plan=plan, batch_size=batch_size)
            nodes = read_model_info(onnx_path).nodes
            notes.append(
                f"explicit quantization: Q/DQ ONNX from ONNX Runtime ({plan.qdq_calibration.value if plan.qdq_calibration else 'minmax'}, symmetric INT8)"
            )

        prepared = None
        store = None
        if plan.calibration is not None:
            assert options.calibration is not None
            store = CalibrationCacheStore(
                stores=self._stores,
                prefix=cache_prefix(options.calibration, output_uri=options.output_uri),
                workdir=request.workdir,
            )
            prepared = prepare_calibration(
                plan=plan.calibration,
                model_path=request.model_path,
                batches=request.calibration,
                input_name=info.input_name,
                batch_size=batch_size,
                sample_shape=info.sample_shape,
                percentile=options.calibration.percentile,
                version=runtime.version,
                store=store,
                allocator=self._allocator,
                workdir=request.workdir,
                log=request.log,
            )

        from edgequant.backends.tensorrt.engine import build_engine

        request.log(
            f"building {method.value} engine: flags {', '.join(plan.builder_flags) or 'none'}"
            + (", strongly typed" if plan.strongly_typed else "")
        )
        result = build_engine(
            runtime.module,
            onnx_path=onnx_path,
            plan=plan,
            nodes=nodes,
            batch_size=batch_size,
            workspace_bytes=options.tensorrt.workspace_mib << 20,
            session=prepared.session if prepared else None,
            version=str(runtime.version),
            log=request.log,
        )
        stem = f"{request.model_path.stem}.{method.artifact_suffix}" + ("-pinned" if result.pins.decisions else "")
        path = request.workdir / f"{stem}.engine"
        path.write_bytes(result.serialized)
        extra: list[Path] = []
        if prepared is not None and store is not None:
            finished = finish_calibration(prepared, store=store)
            notes.extend(finished.notes)
            cache_file = request.workdir / f"{stem}.calibration.cache"
            cache_file.write_bytes(finished.data)
            extra.append(cache_file)
        notes.extend(_pin_notes(result))
        predictor = self._open(path)
        notes.append(
            f"engine device time, batch 1: {predictor.gpu_latency_ms(np.zeros((1, *info.sample_shape), dtype=np.float32)):.3f} ms (CUDA events)"
        )
        notes.append("a TensorRT engine runs only on the GPU architecture and TensorRT version that built it")
        return QuantizedArtifact(path=path, method=method, input=predictor.input, extra_files=extra, notes=notes)

    def _qdq_model(
        self, request: QuantizeRequest, *, info: OnnxModelInfo, plan: plans.BuildPlan, batch_size: int
    ) -> Path:
        from edgequant.backends.tensorrt.ort_calibration import quantize_qdq_for_tensorrt

        calibration = self.own(request.options).calibration
        if request.calibration is None or calibration is None:
            raise InvalidInputError("spec.calibration: explicit INT8 needs calibration.dataset for the Q/DQ scales")
        onnx_nodes = {n.name for n in info.nodes}
        exclude = [name for name in plan.pinned if name in onnx_nodes]
        request.log(f"quantizing to Q/DQ ONNX with ONNX Runtime ({len(exclude)} node(s) left unquantized)")
        return quantize_qdq_for_tensorrt(
            model_path=request.model_path,
            output_path=request.workdir / f"{request.model_path.stem}.qdq.onnx",
            batches=request.calibration,
            input_name=info.input_name,
            batch_size=batch_size,
            sample_shape=info.sample_shape,
            algorithm=calibration.algorithm,
            percentile=calibration.percentile,
            nodes_to_exclude=exclude,
        )

    def export_baseline(self, request: QuantizeRequest) -> BaselineArtifact:
        """An FP32 engine of the source model: baseline accuracy and latency in the same runtime on the same GPU."""
        from edgequant.backends.tensorrt.engine import build_engine

        options = self.own(request.options)
        runtime = self._trt()
        info = read_model_info(request.model_path)
        batch_size, _ = resolve_batch_size(info, options.tensorrt)
        request.workdir.mkdir(parents=True, exist_ok=True)
        request.log("building the FP32 baseline engine")
        result = build_engine(
            runtime.module,
            onnx_path=request.model_path,
            plan=plans.plan_fp32(runtime.generation),
            nodes=info.nodes,
            batch_size=batch_size,
            workspace_bytes=options.tensorrt.workspace_mib << 20,
            session=None,
            version=str(runtime.version),
            log=request.log,
        )
        path = request.workdir / f"{request.model_path.stem}.fp32.engine"
        path.write_bytes(result.serialized)
        return BaselineArtifact(path=path, input=self._open(path).input, format="tensorrt-fp32")

    def load(self, path: Path, *, options: BackendOptions) -> Any:
        """A built .engine on the GPU, or an .onnx model on ONNX Runtime's CPU provider (the ONNX Runtime backend's predictor)."""
        del options  # an engine or ONNX file carries all it needs
        return self._open(path)

    def _open(self, path: Path) -> Any:
        if path.suffix == ".engine":
            from edgequant.backends.tensorrt.runtime import EnginePredictor

            return EnginePredictor(path, trt=self._trt().module)
        from edgequant.backends.onnxruntime import OrtPredictor

        return OrtPredictor(path)


def _pin_notes(result: Any) -> list[str]:
    notes = []
    if result.pins.decisions:
        layers = ", ".join(d.layer for d in result.pins.decisions)
        precision = result.pins.decisions[0].precision
        notes.append(f"pinned {len(result.pins.decisions)} TensorRT layer(s) to {precision}: {layers}")
    for name, found in result.resolution.layers.items():
        if found != (name,):
            notes.append(f"ONNX node {name} -> TensorRT layer(s) {', '.join(found)}")
    for name in result.resolution.unmapped:
        notes.append(f"ONNX node {name} produced no TensorRT layer (folded by the parser); nothing to pin")
    for layer, why in result.pins.skipped.items():
        notes.append(f"layer {layer} not pinned: {why}")
    return notes
