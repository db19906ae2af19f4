"""The PyTorch backend: torch-qat, a torch.export program fine-tuned with PT2E QAT and shipped as ONNX Q/DQ.

Both the FP32 baseline and the artifact are ONNX files scored by ONNX
Runtime (``BaselineExport``), so accuracy, size and latency compare like
with like.
"""

from __future__ import annotations

from pathlib import Path

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import BackendOptions, TorchQATBackendOptions
from edgequant.api.methods import methods_served_by
from edgequant.backends.base import BaselineArtifact, QuantizedArtifact, QuantizeRequest, TensorContract, own_options
from edgequant.backends.onnxruntime import OrtPredictor, check_input, choose_reduce_range, read_model
from edgequant.backends.pytorch.export import example_batch, export_onnx
from edgequant.backends.pytorch.source import TorchSource, check_source_input, load_program
from edgequant.util import cpu as cpu_features
from edgequant.util.errors import InvalidInputError


def _contract(source: TorchSource) -> TensorContract:
    return TensorContract(dtype="float32", shape=tuple(d if isinstance(d, int) else -1 for d in source.input_shape))


class TorchQATBackend:
    name = "pytorch"
    methods = methods_served_by(__name__)

    def __init__(self, *, cpu: cpu_features.CpuFeatures | None = None) -> None:
        self.cpu = cpu or cpu_features.detect()
        self._sources: dict[Path, TorchSource] = {}
        self._baselines: dict[Path, BaselineArtifact] = {}

    @staticmethod
    def own(options: BackendOptions) -> TorchQATBackendOptions:
        """A request's options as this backend's own, or an error naming the method it does not run."""
        return own_options(options, TorchQATBackendOptions, backend="PyTorch")

    def _source(self, request: QuantizeRequest) -> TorchSource:
        key = request.model_path.resolve()
        if key not in self._sources:
            options = self.own(request.options)
            fmt = options.model_format
            if fmt is not None and fmt is not api.ModelFormat.TORCH_EXPORT:
                raise InvalidInputError(
                    f"spec.model.format: torch-qat takes a torch.export program (.pt2), not {fmt.value}"
                )
            source = load_program(request.model_path)
            check_source_input(source, options.input)
            self._sources[key] = source
        return self._sources[key]

    def _example(self, source: TorchSource) -> object:
        sample = tuple(int(d) if isinstance(d, int) else 0 for d in source.input_shape[1:])
        if any(d <= 0 for d in sample):
            raise InvalidInputError(
                f"{source.path.name}: only the batch dimension of input {source.input_name!r} may be dynamic"
            )
        return example_batch(sample, fixed_batch=None if source.dynamic_batch else int(source.input_shape[0]))  # type: ignore[arg-type]

    def export_baseline(self, request: QuantizeRequest) -> BaselineArtifact:
        """The FP32 program as ONNX, scored by ONNX Runtime like the QAT artifact."""
        key = request.model_path.resolve()
        if key not in self._baselines:
            source = self._source(request)
            request.log(f"exporting the FP32 program to ONNX ({source.path.name})")
            path = export_onnx(
                source.program.module(),
                example=self._example(source),
                path=request.workdir / f"{request.model_path.stem}.fp32.onnx",
                dynamic_batch=source.dynamic_batch,
            )
            self._baselines[key] = BaselineArtifact(path=path, input=_contract(source), format="onnx-fp32")
        return self._baselines[key]

    def export_float16(self, request: QuantizeRequest) -> QuantizedArtifact:
        """The FP32 ONNX export in float16 (the degrade ladder's last rung)."""
        from edgequant.backends.onnxruntime import FLOAT16_NOTE, convert_to_float16

        baseline = self.export_baseline(request)
        output = convert_to_float16(baseline.path, request.workdir / f"{request.model_path.stem}.float16.onnx")
        return QuantizedArtifact(path=output, method=api.Method.TORCH_QAT, input=baseline.input, notes=[FLOAT16_NOTE])

    def quantize(self, request: QuantizeRequest) -> QuantizedArtifact:
        from edgequant.backends.pytorch import qat

        if request.method is not api.Method.TORCH_QAT:
            raise InvalidInputError(f"spec.method: the PyTorch backend runs torch-qat, not {request.method.value}")
        if request.keep_float:
            raise InvalidInputError(
                "spec.mixedPrecision.pinnedLayers: torch-qat has no per-layer precision to choose; "
                "pin layers with onnx-static (or tflite-int8 / tensorrt-mixed), or remove the pinned layers"
            )
        options = self.own(request.options)
        if request.training is None or options.training is None:
            raise InvalidInputError("spec.training: torch-qat fine-tunes on training data; add training.dataset")
        source = self._source(request)
        training = options.training
        choice = choose_reduce_range(options.onnx.reduce_range, cpu=self.cpu, weight_type=api.OnnxQuantType.INT8)
        request.log(choice.note)
        request.log(
            f"QAT: fine-tuning {training.epochs} epoch(s) at learning rate {training.learning_rate:g} on {request.training.count} samples"
        )
        converted = qat.fine_tune(
            program=source.program,
            training=request.training,
            spec=training,
            reduce_range=choice.enabled,
            log=request.log,
        )
        path = export_onnx(
            converted,
            example=self._example(source),
            path=request.workdir / f"{request.model_path.stem}.{request.method.artifact_suffix}.onnx",
            dynamic_batch=source.dynamic_batch,
        )
        notes = [
            f"PT2E quantization-aware training (torchao X86InductorQuantizer: uint8 activations, int8 per-channel weights): "
            f"{training.epochs} epoch(s) at learning rate {training.learning_rate:g} on {request.training.count} training samples; "
            "exported to ONNX Q/DQ by torch.onnx's dynamo exporter",
            ("warning: " if choice.warning else "") + choice.note,
        ]
        if request.calibration is not None:
            notes.append("calibration.dataset is not used by torch-qat: ranges are learned while fine-tuning")
        return QuantizedArtifact(path=path, method=api.Method.TORCH_QAT, input=_contract(source), notes=notes)

    def load(self, path: Path, *, options: BackendOptions) -> OrtPredictor:
        """An ONNX file (baseline or artifact) on ONNX Runtime; a .pt2 program is exported to ONNX first."""
        if path.suffix == ".onnx":
            check_input(read_model(path), self.own(options).input)
            return OrtPredictor(path)
        request = QuantizeRequest(options=options, model_path=path, workdir=path.parent / f".{path.name}.edgequant")
        return OrtPredictor(self.export_baseline(request).path)
