"""The ONNX Runtime backend: onnx-dynamic and onnx-static (Q/DQ) behind the Backend protocol.

One instance serves one run (one calibration set): it pre-processes the
source model once and calibrates once per algorithm, so re-quantizing with
other nodes kept in float (mixed precision) costs only the Q/DQ insertion.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import onnxruntime

from edgequant.analysis import post_training as pt
from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import BackendOptions, OnnxRuntimeBackendOptions
from edgequant.api.methods import methods_served_by
from edgequant.backends import calibration_cache as cc
from edgequant.backends.base import QuantizedArtifact, QuantizeRequest, TensorContract, own_options
from edgequant.backends.onnxruntime import options as opts
from edgequant.backends.onnxruntime.calibration import calibrate
from edgequant.backends.onnxruntime.model import activation_bytes_per_sample, check_input, read_model
from edgequant.backends.onnxruntime.predictor import OrtPredictor
from edgequant.backends.onnxruntime.ptq import Tuned, tune
from edgequant.backends.onnxruntime.quantize import (
    FLOAT16_NOTE,
    FloatModel,
    convert_to_float16,
    dynamic_cnn_note,
    prepare_float_model,
    quantize_dynamic_int8,
    quantize_qdq,
    save_ranges,
)
from edgequant.util import cpu as cpu_features
from edgequant.util.errors import InvalidInputError
from edgequant.util.memory import memory_budget, probe_batch_size


def artifact_name(stem: str, method: api.Method, keep_float: tuple[str, ...]) -> str:
    """One file per set of nodes kept in float, so candidates of a mixed-precision search never overwrite each other."""
    if not keep_float:
        return f"{stem}.{method.artifact_suffix}.onnx"
    digest = hashlib.sha256("\n".join(sorted(keep_float)).encode()).hexdigest()[:8]
    return f"{stem}.{method.artifact_suffix}-float{len(keep_float)}-{digest}.onnx"


def float_input_contract(model: FloatModel) -> TensorContract:
    shape = tuple(d if isinstance(d, int) else -1 for d in model.model.input_shape)
    return TensorContract(dtype="float32", shape=shape)


def calibration_batch(model_path: Path, log: Callable[[str], None]) -> int | None:
    """Samples per calibration run that fit the worker's memory budget (``util.memory``); None: no bound known."""
    per_sample = activation_bytes_per_sample(model_path)
    if per_sample is None:
        return None
    budget = memory_budget(os.environ)
    batch = probe_batch_size(budget_bytes=budget.bytes, bytes_per_sample=per_sample)
    log(
        f"calibration: at most {batch} samples per run ({per_sample / 2**20:.1f} MiB of activations per sample, "
        f"memory budget {budget.bytes / 2**20:.0f} MiB from {budget.source})"
    )
    return batch


class OnnxRuntimeBackend:
    name = "onnxruntime"
    methods = methods_served_by(__name__)

    def __init__(self, *, cpu: cpu_features.CpuFeatures | None = None) -> None:
        self.cpu = cpu or cpu_features.detect()
        self._float_models: dict[tuple[Path, bool, bool], FloatModel] = {}
        self._ranges: dict[tuple[object, ...], Path] = {}
        self.calibrations = 0
        """Calibration passes run (one per model, algorithm and data set; every later quantize reuses the ranges)."""
        self._tuned: dict[tuple[object, ...], Tuned] = {}
        self._cache_notes: dict[Path, str] = {}
        """Per calibration: where its result was reused from or stored for reuse (the report says so)."""

    @staticmethod
    def own(options: BackendOptions) -> OnnxRuntimeBackendOptions:
        """A request's options as this backend's own, or an error naming the method it does not run."""
        return own_options(options, OnnxRuntimeBackendOptions, backend="ONNX Runtime")

    def _store(self, request: QuantizeRequest) -> cc.CalibrationStore | None:
        """The calibration cache of the run's storage; None when the caller gave no storage (a bare backend call)."""
        if request.stores is None:
            return None
        options = self.own(request.options)
        return cc.CalibrationStore(
            stores=request.stores,
            prefix=cc.cache_prefix(options.calibration, output_uri=options.output_uri),
            workdir=request.workdir,
            log=request.log,
        )

    def _key(self, request: QuantizeRequest, data: object, recipe: dict[str, object]) -> cc.CalibrationKey:
        """Named by the source model, the calibration samples as they arrive here, and everything else that shapes the result."""
        onnx = self.own(request.options).onnx
        return cc.CalibrationKey(
            backend="onnxruntime",
            model_sha256=cc.model_sha256(request.model_path),
            data_sha256=cc.batches_sha256(data),  # type: ignore[arg-type]
            recipe={
                **recipe,
                "onnxruntime": onnxruntime.__version__,
                "preprocess": onnx.preprocess,
                "perChannel": onnx.per_channel,
            },
        )

    def float_model(self, request: QuantizeRequest) -> FloatModel:
        """The source model as this run quantizes it (pre-processed once per path and settings)."""
        options = self.own(request.options)
        fmt = options.model_format
        if fmt is not None and fmt is not api.ModelFormat.ONNX:
            raise InvalidInputError(f"spec.model.format: {request.method.value} quantizes ONNX models, not {fmt.value}")
        key = (request.model_path.resolve(), options.onnx.preprocess, options.onnx.per_channel)
        if key not in self._float_models:
            self._float_models[key] = prepare_float_model(
                request.model_path,
                workdir=request.workdir / "float",
                preprocess=options.onnx.preprocess,
                per_channel=options.onnx.per_channel,
                contract=options.input,
            )
        return self._float_models[key]

    def _ranges_path(self, request: QuantizeRequest, model: FloatModel, settings: opts.StaticSettings) -> Path:
        """Calibrate once per model, algorithm and data; later calls reuse the saved ranges."""
        data = request.calibration
        if data is None:
            raise InvalidInputError(
                "spec.calibration: onnx-static calibrates activation ranges; add calibration.dataset"
            )
        key = (
            model.path,
            settings.algorithm,
            settings.percentile,
            settings.symmetric_activations,
            data.count,
            data.batch_size,
        )
        if key not in self._ranges:
            store = self._store(request)
            cache_key = (
                None
                if store is None
                else self._key(
                    request,
                    data,
                    {
                        "kind": "ranges",
                        "algorithm": settings.algorithm.value,
                        "percentile": settings.percentile,
                        "symmetricActivations": settings.symmetric_activations,
                    },
                )
            )
            found = store.fetch(cache_key, ["ranges.json"]) if store is not None and cache_key is not None else None
            if found is not None and store is not None and cache_key is not None:
                self._ranges[key] = found["ranges.json"]
                self._cache_notes[found["ranges.json"]] = (
                    f"calibration ranges reused from {store.uri(cache_key)} (same model, data and recipe)"
                )
                return self._ranges[key]
            self.calibrations += 1
            ranges = calibrate(
                model_path=model.path,
                batches=data,
                input_name=model.model.input_name,
                fixed_batch=model.model.fixed_batch,
                settings=settings,
                workdir=request.workdir / "calibration",
                log=request.log,
                max_batch=calibration_batch(model.path, request.log),
            )
            name = f"{request.model_path.stem}.{settings.algorithm.value}-{len(self._ranges)}.ranges.json"
            self._ranges[key] = save_ranges(ranges, request.workdir / name)
            if store is not None and cache_key is not None:
                warning = store.publish(cache_key, {"ranges.json": self._ranges[key]})
                self._cache_notes[self._ranges[key]] = (
                    warning or f"calibration ranges stored for reuse at {store.uri(cache_key)}"
                )
        return self._ranges[key]

    def _tuned_model(self, request: QuantizeRequest, model: FloatModel, settings: opts.StaticSettings) -> Tuned:
        """spec.ptq's techniques, searched once per model, settings and data; later calls (mixed precision) reuse the result."""
        data = request.calibration
        options = self.own(request.options)
        if data is None or options.calibration is None:
            raise InvalidInputError(
                "spec.calibration: onnx-static calibrates activation ranges; add calibration.dataset"
            )
        key = (
            model.path,
            settings.model_copy(update={"keep_float": ()}),
            options.ptq.model_dump_json(),
            options.min_agreement,
            data.count,
            data.batch_size,
        )
        if key not in self._tuned:
            algorithm_given = "algorithm" in options.calibration.model_fields_set
            store = self._store(request)
            cache_key = (
                None
                if store is None
                else self._key(
                    request,
                    data,
                    {
                        "kind": "ptq",
                        "settings": settings.model_copy(update={"keep_float": ()}).model_dump(mode="json"),
                        "ptq": options.ptq.model_dump(mode="json"),
                        "algorithmGiven": algorithm_given,
                        "minAgreement": options.min_agreement,
                    },
                )
            )
            cached = (
                self._cached_tuning(store, cache_key, model) if store is not None and cache_key is not None else None
            )
            if cached is not None and store is not None and cache_key is not None:
                self._tuned[key] = cached
                self._cache_notes[cached.ranges_path] = (
                    f"calibration and spec.ptq choices reused from {store.uri(cache_key)} (same model, data and recipe)"
                )
                return cached
            self.calibrations += 1
            tuned = tune(
                float_model=model,
                calibration=data,
                settings=settings,
                options=options.ptq,
                workdir=request.workdir / f"ptq-{len(self._tuned)}",
                log=request.log,
                algorithm_given=algorithm_given,
                min_agreement=options.min_agreement,
                memory_budget_bytes=memory_budget(os.environ).bytes,
            )
            self._tuned[key] = tuned
            if store is None or cache_key is None:
                return tuned
            files = {"ranges.json": tuned.ranges_path}
            if tuned.float_model.path != model.path:
                files["model.onnx"] = tuned.float_model.path
            if tuned.uncorrected is not None and tuned.uncorrected != model.path:
                files["uncorrected.onnx"] = tuned.uncorrected
            meta = {
                "rule": tuned.rule,
                "notes": tuned.notes,
                "scores": [vars(sc) for sc in tuned.scores],
                "uncorrectedIsSource": tuned.uncorrected == model.path,
                "sixteenBitWeights": list(tuned.sixteen_bit_weights),
                "sixteenBitActivations": list(tuned.sixteen_bit_activations),
            }
            warning = store.publish(cache_key, files, meta=meta)
            self._cache_notes[tuned.ranges_path] = (
                warning or f"calibration and spec.ptq choices stored for reuse at {store.uri(cache_key)}"
            )
        return self._tuned[key]

    def _cached_tuning(self, store: cc.CalibrationStore, key: cc.CalibrationKey, model: FloatModel) -> Tuned | None:
        """A stored tuning result for this key, as the Tuned that ``tune`` would return; None when there is none."""
        found = store.fetch(key, ["ranges.json"], optional=("model.onnx", "uncorrected.onnx"))
        if found is None:
            return None
        meta = store.read_meta(key)
        chosen = FloatModel(
            path=found.get("model.onnx", model.path), model=model.model, preprocessed=model.preprocessed
        )
        return Tuned(
            float_model=chosen,
            ranges_path=found["ranges.json"],
            rule=str(meta.get("rule", "")),
            notes=list(meta.get("notes", [])),
            scores=[pt.Score(**sc) for sc in meta.get("scores", [])],
            uncorrected=model.path if meta.get("uncorrectedIsSource") else found.get("uncorrected.onnx"),
            sixteen_bit_weights=tuple(meta.get("sixteenBitWeights", [])),
            sixteen_bit_activations=tuple(meta.get("sixteenBitActivations", [])),
        )

    def reference_float_model(self, request: QuantizeRequest) -> Path:
        """The float function the Q/DQ artifacts quantize, for tensor-by-tensor comparisons: the pre-processed
        model, equalized when spec.ptq equalized it (same function, rescaled channels), never bias-corrected or rounded."""
        model = self.float_model(request)
        options = self.own(request.options)
        if request.method is not api.Method.ONNX_STATIC or options.ptq.all_off_under(options.min_agreement):
            return model.path
        settings, _choice = opts.static_settings(options, cpu=self.cpu)
        tuned = self._tuned_model(request, model, settings)
        return tuned.uncorrected or tuned.float_model.path

    def quantize(self, request: QuantizeRequest) -> QuantizedArtifact:
        method = request.method
        if method not in self.methods:
            raise InvalidInputError(f"spec.method: the ONNX Runtime backend does not run {method.value}")
        options = self.own(request.options)
        model = self.float_model(request)
        keep_float = tuple(request.keep_float)
        output = request.workdir / artifact_name(request.model_path.stem, method, keep_float)
        notes = [
            f"model pre-processed by ONNX Runtime's quant_pre_process (shape inference, basic optimization): "
            f"{len(model.model.nodes)} nodes"
            if model.preprocessed
            else "ONNX Runtime pre-processing skipped (spec.onnx.preprocess false)"
        ]
        if method is api.Method.ONNX_STATIC:
            settings, choice = opts.static_settings(options, cpu=self.cpu, keep_float=keep_float)
            ptq_notes: list[str] = []
            if options.ptq.all_off_under(options.min_agreement):
                ranges = self._ranges_path(request, model, settings)
            else:
                tuned = self._tuned_model(request, model, settings)
                settings = tuned.settings_for(settings)
                model, ranges, ptq_notes = (
                    tuned.for_keep_float(keep_float, request.workdir),
                    tuned.ranges_path,
                    tuned.notes,
                )
            request.log(
                f"quantizing to Q/DQ ({settings.activation_type.value} activations, {settings.weight_type.value} weights, "
                f"{'per-channel' if settings.per_channel else 'per-tensor'}, reduce_range {settings.reduce_range})"
            )
            quantize_qdq(float_model=model, output_path=output, ranges_path=ranges, settings=settings)
            algorithm = settings.algorithm.value + (
                f" {settings.percentile:g}" if settings.algorithm is api.CalibrationAlgorithm.PERCENTILE else ""
            )
            assert request.calibration is not None
            notes.append(
                f"static Q/DQ: {algorithm} calibration on {request.calibration.count} samples, "
                f"{settings.activation_type.value} activations, {settings.weight_type.value} "
                f"{'per-channel' if settings.per_channel else 'per-tensor'} weights"
                + (", outputs left in float (ptq.floatOutputs)" if settings.float_outputs else "")
                + ("" if options.ptq.all_off_under(options.min_agreement) else " (before spec.ptq's choices below)")
            )
            notes.extend(ptq_notes)
            if ranges in self._cache_notes:
                notes.append(self._cache_notes[ranges])
        else:
            settings_d, choice = opts.dynamic_settings(options, cpu=self.cpu, keep_float=keep_float)
            request.log(
                f"quantizing weights ({settings_d.weight_type.value}, {'per-channel' if settings_d.per_channel else 'per-tensor'}, "
                f"reduce_range {settings_d.reduce_range}); activations are quantized at run time"
            )
            quantize_dynamic_int8(float_model=model, output_path=output, settings=settings_d)
            cnn = dynamic_cnn_note(model.model)
            if cnn:
                notes.append(cnn)
        notes.append(("warning: " if choice.warning else "") + choice.note)
        if keep_float:
            notes.append(f"kept in float: {', '.join(keep_float)}")
        request.log(choice.note)
        return QuantizedArtifact(path=output, method=method, input=float_input_contract(model), notes=notes)

    def export_float16(self, request: QuantizeRequest) -> QuantizedArtifact:
        """The source model in float16 (the degrade ladder's last rung)."""
        model = self.float_model(request)
        output = convert_to_float16(model.path, request.workdir / f"{request.model_path.stem}.float16.onnx")
        return QuantizedArtifact(
            path=output, method=request.method, input=float_input_contract(model), notes=[FLOAT16_NOTE]
        )

    def quantizable_layers(self, request: QuantizeRequest) -> list[str]:
        """Nodes with weights (Conv, ConvTranspose, Gemm, MatMul) of the model as it is quantized, in graph order."""
        return self.float_model(request).model.weighted_nodes()

    def load(self, path: Path, *, options: BackendOptions) -> OrtPredictor:
        """The FP32 source model or an artifact, on ONNX Runtime's CPU provider, after the checks that name the fix."""
        check_input(read_model(path), self.own(options).input)
        return OrtPredictor(path)
