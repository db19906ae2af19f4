"""The TFLite backend: the four reference workflows behind the Backend protocol."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import BackendOptions, TFLiteBackendOptions
from edgequant.api.methods import methods_served_by
from edgequant.backends import calibration_cache as cc
from edgequant.backends.base import BaselineArtifact, QuantizedArtifact, QuantizeRequest, own_options
from edgequant.backends.tflite import convert as conv
from edgequant.backends.tflite.predictor import TFLitePredictor
from edgequant.backends.tflite.source import SourceModel, check_input_shape, load_source
from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError

if TYPE_CHECKING:
    from edgequant.backends.tflite import ptq as ptq_module


class TFLiteBackend:
    name = "tflite"
    methods = methods_served_by(__name__)

    def __init__(self) -> None:
        self._sources: dict[Path, SourceModel] = {}
        self._calibrated: dict[tuple[object, ...], bytes] = {}
        self._float: dict[Path, bytes] = {}
        self.calibrations = 0
        """Calibration passes run (one per model and data set; tflite-int8 artifacts and layer analysis reuse it)."""
        self.cache_notes: list[str] = []
        """Where calibrations were reused from or stored for reuse (the report says so)."""
        self.ptq_notes: list[str] = []
        """What spec.ptq tried and chose on the tflite-int8 path (the report says so)."""

    @staticmethod
    def own(options: BackendOptions) -> TFLiteBackendOptions:
        """A request's options as this backend's own, or an error naming the method it does not run."""
        return own_options(options, TFLiteBackendOptions, backend="TFLite")

    def source(self, request: QuantizeRequest) -> SourceModel:
        """The source model as loaded for this run (once per path)."""
        key = request.model_path.resolve()
        if key not in self._sources:
            options = self.own(request.options)
            fmt = options.model_format
            if fmt is None:
                raise InvalidInputError(
                    f"spec.model.format: cannot tell the format of {request.model_path.name}; set it (keras, h5 or savedmodel)"
                )
            source = load_source(request.model_path, fmt=fmt, workdir=request.workdir)
            check_input_shape(source, options.input)
            self._sources[key] = source
        return self._sources[key]

    def _write(self, data: bytes, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def float_conversion(self, request: QuantizeRequest) -> bytes:
        """The source model as float TFLite, converted once per run (the baseline, and pinned layers' float weights)."""
        key = request.model_path.resolve()
        if key not in self._float:
            self._float[key] = conv.convert_source(self.source(request), method=None)
        return self._float[key]

    def export_baseline(self, request: QuantizeRequest) -> BaselineArtifact:
        path = self._write(self.float_conversion(request), request.workdir / f"{request.model_path.stem}.fp32.tflite")
        return BaselineArtifact(path=path, input=TFLitePredictor(path).input, format="tflite-fp32")

    def quantize(self, request: QuantizeRequest) -> QuantizedArtifact:
        method = request.method
        if method not in self.methods:
            raise InvalidInputError(f"spec.method: the TFLite backend does not run {method.value}")
        options = self.own(request.options)
        if request.keep_float and method is not api.Method.TFLITE_INT8:
            raise InvalidInputError(
                f"mixedPrecision.pinnedLayers: {method.value} has no per-layer precision to choose; "
                "pin layers with tflite-int8 (or onnx-static / tensorrt-mixed), or remove the pinned layers"
            )
        source = self.source(request)
        notes: list[str] = []
        representative = None
        if request.calibration is not None:
            representative = conv.representative_from(request.calibration)
            algorithm = options.calibration.algorithm if options.calibration else api.CalibrationAlgorithm.MINMAX
            if algorithm is not api.CalibrationAlgorithm.MINMAX and method is api.Method.TFLITE_INT8:
                notes.append(
                    f"calibration.algorithm {algorithm.value} ignored: TFLiteConverter calibrates with min/max ranges"
                )
        if method is api.Method.TFLITE_QAT:
            from edgequant.backends.tflite import qat

            if request.training is None:
                raise InvalidInputError("spec.training: tflite-qat fine-tunes on training data; add training.dataset")
            assert options.training is not None
            request.log(
                f"QAT: fine-tuning {options.training.epochs} epoch(s) at learning rate {options.training.learning_rate:g}"
            )
            model, qat_notes = qat.fine_tune(
                source=source, training=request.training, spec=options.training, log=request.log
            )
            notes.extend(qat_notes)
            if representative is None:
                representative = conv.representative_from(request.training, limit=500)
                notes.append("uint8 I/O ranges calibrated on 500 training samples (no calibration.dataset)")
            request.log("QAT: converting to full-INT8 TFLite (uint8 input/output)")
            data = qat.convert(model, representative=representative, workdir=request.workdir)
        else:
            if method is api.Method.TFLITE_INT8 and representative is None:
                raise InvalidInputError(
                    "spec.calibration: tflite-int8 calibrates activation ranges; add calibration.dataset"
                )
            request.log(f"converting to TFLite ({method.value})")
            if method is api.Method.TFLITE_INT8:
                data = self._int8_keeping_float(request)
            else:
                data = conv.convert_source(source, method=method, representative=representative)
        path = self._write(data, request.workdir / f"{request.model_path.stem}.{method.artifact_suffix}.tflite")
        if method is api.Method.TFLITE_INT8:
            notes.extend(self.ptq_notes)
            notes.extend(self.cache_notes)
        return QuantizedArtifact(path=path, method=method, input=TFLitePredictor(path).input, notes=notes)

    def calibrated(self, request: QuantizeRequest) -> bytes:
        """The tflite-int8 converter's calibrated model (float graph with recorded ranges), once per model and data.

        ``layers.quantize_calibrated`` turns it into the INT8 artifact (the same
        ops, ranges and outputs as ``converter.convert()``, which calibrates and
        quantizes in one call) and into every model the layer analysis needs.
        """
        if request.calibration is None:
            raise InvalidInputError(
                "spec.calibration: tflite-int8 calibrates activation ranges; add calibration.dataset"
            )
        key = (request.model_path.resolve(), request.calibration.count, request.calibration.batch_size)
        if key not in self._calibrated:
            from edgequant.backends.tflite import layers

            store, cache_key = self._cache(request)
            found = (
                store.fetch(cache_key, ["calibrated.tflite"]) if store is not None and cache_key is not None else None
            )
            if found is not None and store is not None and cache_key is not None:
                self._calibrated[key] = found["calibrated.tflite"].read_bytes()
                self.ptq_notes.extend(str(n) for n in store.read_meta(cache_key).get("ptqNotes", []))
                self.cache_notes.append(f"calibration reused from {store.uri(cache_key)} (same model, data and recipe)")
                return self._calibrated[key]
            self.calibrations += 1
            tuned = self._tuned(request)
            if tuned is not None:
                self._calibrated[key] = tuned.calibrated
                self.ptq_notes.extend(tuned.notes)
            else:
                converter = self.source(request).converter()
                conv.configure(
                    converter,
                    method=api.Method.TFLITE_INT8,
                    representative=conv.representative_from(request.calibration),
                )
                request.log(f"calibrating on {request.calibration.count} samples (once per run)")
                try:
                    self._calibrated[key] = layers.calibrate(converter)
                except Exception as exc:
                    raise conv.conversion_error(exc, api.Method.TFLITE_INT8) from exc
            if store is not None and cache_key is not None:
                path = self._write(self._calibrated[key], request.workdir / "calibration-cache" / "calibrated.tflite")
                warning = store.publish(cache_key, {"calibrated.tflite": path}, meta={"ptqNotes": self.ptq_notes})
                self.cache_notes.append(warning or f"calibration stored for reuse at {store.uri(cache_key)}")
        return self._calibrated[key]

    def _ptq_applies(self, request: QuantizeRequest) -> bool:
        """spec.ptq acts on tflite-int8 runs of Keras sources (it rewrites float weights before the converter)."""
        from edgequant.backends.tflite import ptq

        return (
            request.method is api.Method.TFLITE_INT8
            and ptq.techniques_apply(self.own(request.options).ptq)
            and self.source(request).keras_model is not None
        )

    def _tuned(self, request: QuantizeRequest) -> ptq_module.Tuned | None:
        """spec.ptq's calibrated model for this run, or None when it does not apply (the converter's own calibration)."""
        from edgequant.backends.tflite import ptq

        assert request.calibration is not None
        if request.method is not api.Method.TFLITE_INT8 or not ptq.techniques_apply(self.own(request.options).ptq):
            return None
        keras_model = self.source(request).keras_model
        if keras_model is None:
            self.ptq_notes.append(
                "ptq: bias correction and adaptive rounding need a Keras source (.keras / .h5); the SavedModel is calibrated as it is"
            )
            return None
        try:
            return ptq.tune(
                model=keras_model,
                calibration=request.calibration,
                options=self.own(request.options).ptq,
                workdir=request.workdir / "ptq",
                log=request.log,
            )
        except Exception as exc:
            raise conv.conversion_error(exc, api.Method.TFLITE_INT8) from exc

    def _cache(self, request: QuantizeRequest) -> tuple[cc.CalibrationStore | None, cc.CalibrationKey | None]:
        """The run's calibration cache and this calibration's key: the converter's calibrated model (float graph with
        recorded ranges) is what every tflite-int8 artifact of the same model and data is quantized from."""
        if request.stores is None or request.calibration is None:
            return None, None
        options = self.own(request.options)
        store = cc.CalibrationStore(
            stores=request.stores,
            prefix=cc.cache_prefix(options.calibration, output_uri=options.output_uri),
            workdir=request.workdir,
            log=request.log,
        )
        key = cc.CalibrationKey(
            backend="tflite",
            model_sha256=cc.model_sha256(request.model_path),
            data_sha256=cc.batches_sha256(request.calibration),
            recipe={
                "kind": "calibrated",
                "tensorflow": import_tf().__version__,
                "input": options.input.model_dump(mode="json"),
                **({"ptq": options.ptq.model_dump(mode="json")} if self._ptq_applies(request) else {}),
            },
        )
        return store, key

    def _int8_keeping_float(self, request: QuantizeRequest) -> bytes:
        """Full INT8 (uint8 I/O) from the run's calibrated model, with the pinned source layers left in float."""
        from edgequant.backends.tflite import layers

        calibrated = self.calibrated(request)
        source = self.source(request)
        nodes: list[str] = []
        if request.keep_float:
            request.log(f"keeping {len(request.keep_float)} layer(s) in float: {', '.join(request.keep_float)}")
            try:
                nodes = layers.map_layers(calibrated, keras_model=source.keras_model).nodes_of(request.keep_float)
            except KeyError as exc:
                raise InvalidInputError(str(exc.args[0])) from exc
            restored = layers.with_source_weights(calibrated, self.pinned_weights_source(request), nodes)
            if restored is None:
                note = "ptq: the pinned layers keep their tuned weights (the tuned model converts to another graph than the source)"
                if note not in self.ptq_notes:
                    self.ptq_notes.append(note)
            calibrated = restored or calibrated
        try:
            return layers.quantize_calibrated(calibrated, keep_float_nodes=nodes, io_dtype="uint8")
        except Exception as exc:
            raise conv.conversion_error(exc, api.Method.TFLITE_INT8) from exc

    def pinned_weights_source(self, request: QuantizeRequest) -> bytes | None:
        """What layers kept in float take their weights from: the source's float conversion when spec.ptq rounded and
        bias-corrected the calibrated model's weights for int8 (a float layer needs its own), else None (they are)."""
        return self.float_conversion(request) if self._ptq_applies(request) else None

    def load(self, path: Path, *, options: BackendOptions) -> TFLitePredictor:
        """A .tflite artifact, or the FP32 source model converted to float TFLite."""
        if path.suffix == ".tflite":
            return TFLitePredictor(path)
        workdir = path.parent / f".{path.name}.edgequant"
        request = QuantizeRequest(options=options, model_path=path, workdir=workdir)
        return TFLitePredictor(self.export_baseline(request).path)
