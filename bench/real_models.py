"""Real pretrained models: edgequant's worker against the bare framework call, memory, time and FP32 agreement.

    .venv/bin/python bench/real_models.py [--models lite0-onnx,lite0-keras,nsfw-onnx] [--cap-gib 12]
                                          [--variants bare,edgequant,edgequant-no-sensitivity]

Models and photographs come from tests/realmodels.py (weights and photos from packages; 500 calibration and
300 evaluation tiles of disjoint photographs). Per model, every measurement runs in a child process of its
own, so each peak RSS (the child's VmHWM, and ``wait4``'s ru_maxrss over it and its children) is that
call's alone:

- ``fp32``: the FP32 model's top-1 on the 300 evaluation photographs (the reference);
- ``bare``: the framework call on the same data with edgequant's default settings:
  ONNX: ``quant_pre_process`` + ``quantize_static`` with a ``CalibrationDataReader`` over the 500 calibration
  images (QDQ, per-channel, MinMax, uint8 activations, int8 weights, reduce range as edgequant's ``auto``
  picks for this CPU); TFLite: ``TFLiteConverter.from_keras_model`` full INT8 (DEFAULT optimizations,
  representative dataset, TFLITE_BUILTINS_INT8, uint8 I/O);
- ``edgequant``: the worker (``run_job``) on the default spec (fast layer sensitivity on) with file:// URIs;
- ``edgequant-no-sensitivity``: the same with ``mixedPrecision.sensitivity: off``;
- ``edgequant-no-adaptive-rounding``: the default spec with ``ptq.adaptiveRounding: off`` (the figure before it);
- ``edgequant-ptq-off``: the default spec with every ``spec.ptq`` technique off and no held-out choice: the bare
  converter's settings, so its quantize stage against ``bare`` is what edgequant's own machinery costs;
- ``edgequant-min-agreement-X`` (any X, e.g. 0.95): the default spec with ``acceptance: {minAgreement: X,
  onFailure: degrade}``: ``ptq.sixteenBitActivations`` (auto) and the ladder then work for that budget;
- ``bare@N`` (any N): the bare call on the first N calibration images, for a bare call that does not fit the cap
  with all 500 (ONNX Runtime's MinMax calibrator on Open-NSFW); the ratios then use the largest that fitted.

Both sides' inputs are the same uint8 pixels through edgequant's ``normalize`` (the model's contract), and
both artifacts are scored by the same predictor code, so the agreement figures differ only by the
quantization. A parent thread polls each child's RSS (with its descendants) and kills it past --cap-gib,
so the machine survives a worker that does not fit; a worker child logs each stage's end with its RSS and peak
so far (``<workdir>/<model>/<variant>/child.log``), which names the stage that takes the memory. Goals (issue 15): worker peak <= 1.5x bare and
< 3 GiB; quantize stage <= 1.05x the bare call. Prints a table; never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT / "operator"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from tests import realmodels  # noqa: E402

MODELS = {
    "lite0-onnx": realmodels.efficientnet_lite0_onnx,
    "lite0-keras": realmodels.efficientnet_lite0_keras,
    "nsfw-onnx": realmodels.open_nsfw_onnx,
}
VARIANTS = (
    "bare",
    "edgequant",
    "edgequant-no-sensitivity",
    "edgequant-no-adaptive-rounding",
    "edgequant-ptq-off",
    "edgequant-min-agreement-X",
)
MIN_AGREEMENT_VARIANT = "edgequant-min-agreement-"
#: spec.ptq of the variants that turn techniques off (the others take the default).
PTQ_OF_VARIANT: dict[str, dict[str, Any]] = {
    "edgequant-no-adaptive-rounding": {"adaptiveRounding": "off"},
    "edgequant-ptq-off": {
        "crossLayerEqualization": "off",
        "biasCorrection": "off",
        "rangeSearch": "off",
        "adaptiveRounding": "off",
        "selectAlgorithm": False,
        "floatOutputs": False,
    },
}
GIB = 1024**3


# --------------------------------------------------------------------------- child side


def _vm(field: str = "VmHWM") -> int:
    """This process's peak (VmHWM) or current (VmRSS) resident set in bytes, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _memory_progress() -> Any:
    """The worker's log lines on stdout, each stage's end with the process's RSS and peak so far (where memory goes)."""
    from edgequant.worker.progress import LogProgress

    class MemoryLogProgress(LogProgress):
        def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None:
            super().stage_finished(name=name, seconds=seconds, ok=ok)
            self.log(f"memory after {name}: RSS {_vm('VmRSS') / GIB:.2f} GiB, peak so far {_vm() / GIB:.2f} GiB")

    return MemoryLogProgress(sys.stdout)


def _model(name: str) -> realmodels.RealModel:
    return MODELS[name]()


def _inputs(model: realmodels.RealModel, split: str) -> np.ndarray:
    """float32 model inputs: the npz's uint8 pixels through edgequant's contract (no resize: tiles are 224x224)."""
    from edgequant.api import v1alpha1 as api
    from edgequant.data.preprocess import normalize, to_model_pixels

    contract = api.InputContract.model_validate(model.contract)
    pixels = realmodels.load_x(getattr(realmodels.photo_sets(), split))
    return normalize(np.stack([to_model_pixels(p, contract) for p in pixels]), contract)


def _outputs(path: Path, x: np.ndarray, *, contract: dict[str, Any], workdir: Path) -> np.ndarray:
    from edgequant.backends.base import to_input_contract

    if path.suffix == ".onnx":
        from edgequant.backends.onnxruntime.predictor import OrtPredictor

        predictor: Any = OrtPredictor(path)
    elif path.suffix == ".tflite":
        from edgequant.backends.tflite.predictor import TFLitePredictor

        predictor = TFLitePredictor(path)
    else:  # a Keras source: float TFLite through the backend, as the worker scores FP32
        from edgequant.api.backend_options import backend_options
        from edgequant.backends.tflite.backend import TFLiteBackend
        from edgequant.worker.runner import spec_from_document

        local = workdir / path.name  # the backend writes its float export beside the model: keep it out of the cache
        local.symlink_to(path)
        spec = spec_from_document(
            {
                "method": "tflite-dynamic-range",
                "model": {"uri": local.as_uri(), "input": contract},
                "output": {"uri": "file:///unused/"},
            }
        )[0]
        predictor = TFLiteBackend().load(local, options=backend_options(spec))
    return np.concatenate(
        [predictor.predict(to_input_contract(x[i : i + 50], predictor.input)) for i in range(0, len(x), 50)]
    )


def _top1(path: Path, x: np.ndarray, *, contract: dict[str, Any], workdir: Path) -> np.ndarray:
    top1: np.ndarray = _outputs(path, x, contract=contract, workdir=workdir).argmax(axis=1)
    return top1


def _bare_onnx(model: realmodels.RealModel, calibration: np.ndarray, workdir: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from edgequant.api import v1alpha1 as api
    from edgequant.backends.onnxruntime.options import choose_reduce_range
    from edgequant.util.cpu import detect

    reduce_range = choose_reduce_range(api.ReduceRange.AUTO, cpu=detect(), weight_type=api.OnnxQuantType.INT8).enabled
    import onnx

    input_name = onnx.load(str(model.path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter([{input_name: calibration[i : i + 50]} for i in range(0, len(calibration), 50)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    pre, out = workdir / "pre.onnx", workdir / "bare.qdq.onnx"
    quant_pre_process(str(model.path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


def _bare_tflite(model: realmodels.RealModel, calibration: np.ndarray, workdir: Path) -> Path:
    from bench.tflite_int8 import bare_convert  # the bare TFLiteConverter full-INT8 call the TFLite bench measures

    out = workdir / "bare.int8.tflite"
    out.write_bytes(bare_convert(model.path, calibration, workdir, from_keras=True))
    return out


def _edgequant(
    model: realmodels.RealModel,
    workdir: Path,
    *,
    sensitivity: bool,
    ptq: dict[str, Any] | None = None,
    min_agreement: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    from edgequant.worker.runner import run_job, spec_from_document

    photos = realmodels.photo_sets()
    method = "onnx-static" if model.path.suffix == ".onnx" else "tflite-int8"
    document: dict[str, Any] = {
        "method": method,
        "model": {"uri": model.uri, "input": model.contract},
        "calibration": {
            "dataset": {"uri": photos.calibration.as_uri(), "layout": "npz", "labels": "none"},
            "samples": realmodels.CALIBRATION_SAMPLES,
        },
        "evaluation": {
            "dataset": {"uri": photos.evaluation.as_uri(), "layout": "npz", "labels": "none"},
            "samples": realmodels.EVALUATION_SAMPLES,
        },
        "output": {"uri": (workdir / "out").as_uri() + "/"},
    }
    if not sensitivity:
        document["mixedPrecision"] = {"sensitivity": "off"}
    if ptq:
        document["ptq"] = ptq
    if min_agreement is not None:
        document["acceptance"] = {"minAgreement": min_agreement, "onFailure": "degrade"}
    spec = spec_from_document(document)[0]
    result, _ctx = run_job(spec, workdir=workdir / "work", progress=_memory_progress())
    report = json.loads((workdir / "out" / "report.json").read_text())
    if result.results is None or result.results.artifact is None:
        raise RuntimeError(f"the worker made no artifact: exit {int(result.exit_code)} {result.message}")
    return Path(result.results.artifact.uri.removeprefix("file://")), report


def _bare_samples(variant: str) -> int:
    """``bare`` calibrates on all 500 images, ``bare@N`` on the first N (for a bare call that cannot hold 500)."""
    return int(variant.split("@", 1)[1]) if "@" in variant else realmodels.CALIBRATION_SAMPLES


def child(model_name: str, variant: str, workdir: Path) -> None:
    """One measurement; writes result.json (times, VmHWM at each phase, top-1) into workdir."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    model = _model(model_name)
    result: dict[str, Any] = {}
    if variant == "fp32":
        from edgequant.analysis.diagnostics import decided

        outputs = _outputs(model.path, _inputs(model, "evaluation"), contract=model.contract, workdir=workdir)
        result["top1"] = outputs.argmax(axis=1).tolist()
        result["decided"] = decided(outputs).tolist()
    elif variant.startswith("bare"):
        calibration = _inputs(model, "calibration")[: _bare_samples(variant)]
        result["calibration_samples"] = len(calibration)
        start = time.perf_counter()
        artifact = (_bare_onnx if model.path.suffix == ".onnx" else _bare_tflite)(model, calibration, workdir)
        result["quantize_seconds"] = time.perf_counter() - start
        result["quantize_peak_bytes"] = _vm()
        result["top1"] = _top1(
            artifact, _inputs(model, "evaluation"), contract=model.contract, workdir=workdir
        ).tolist()
    else:
        start = time.perf_counter()
        artifact, report = _edgequant(
            model,
            workdir,
            sensitivity=variant != "edgequant-no-sensitivity",
            ptq=PTQ_OF_VARIANT.get(variant),
            min_agreement=float(variant.removeprefix(MIN_AGREEMENT_VARIANT))
            if variant.startswith(MIN_AGREEMENT_VARIANT)
            else None,
        )
        gate = report.get("gate") or {}
        result["gate"] = {k: gate.get(k) for k in ("passed", "rung", "degraded", "agreement", "sqnrDb")}
        result["gate"]["trials"] = [
            {k: t.get(k) for k in ("rung", "method", "pinned", "agreement", "passed")} for t in gate.get("trials", [])
        ]
        result["ptq_notes"] = [n for n in report.get("notes", []) if n.startswith("ptq")]
        result["run_seconds"] = time.perf_counter() - start
        result["quantize_peak_bytes"] = _vm()
        result["stages"] = {s["name"]: s["seconds"] for s in report["stages"]}
        result["quantize_seconds"] = result["stages"].get("quantize")
        result["report_agreement"] = (report.get("comparison") or {}).get("agreement")
        result["top1"] = _top1(
            artifact, _inputs(model, "evaluation"), contract=model.contract, workdir=workdir
        ).tolist()
    result["artifact_bytes"] = artifact.stat().st_size if variant != "fp32" else None
    (workdir / "result.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------- parent side


@dataclass
class Measurement:
    variant: str
    ok: bool
    note: str
    peak_bytes: int
    """ru_maxrss of the child and its descendants (wait4)."""
    watched_peak_bytes: int
    """Largest RSS of the child's process tree seen by the watcher (sampled every 0.2 s)."""
    result: dict[str, Any]


def _tree_rss(pid: int) -> int:
    """RSS (bytes) of pid and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def measure(model_name: str, variant: str, workdir: Path, cap_bytes: int) -> Measurement:
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", variant, "--models", model_name, "--workdir", str(workdir)]
    log = workdir / "child.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    watched, killed = [0], [False]

    def watch() -> None:
        while proc.returncode is None:
            rss = _tree_rss(proc.pid)
            watched[0] = max(watched[0], rss)
            if rss > cap_bytes:
                killed[0] = True
                os.killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join(timeout=1)
    result_file = workdir / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    stages = [line.split("] ", 1)[1] for line in log.read_text(errors="replace").splitlines() if "] stage " in line]
    if killed[0]:
        note = f"killed past the {cap_bytes / GIB:.0f} GiB cap" + (f" (last: {stages[-1]})" if stages else "")
    elif proc.returncode != 0:
        note = f"exit {proc.returncode} (see {log})"
    else:
        note = ""
    return Measurement(
        variant, proc.returncode == 0 and not killed[0], note, usage.ru_maxrss * 1024, watched[0], result
    )


def _agreement(top1: list[int] | None, reference: list[int], among: list[bool] | None = None) -> float | None:
    """Top-1 agreement with FP32 over every photograph, or over those ``among`` marks."""
    if not top1 or len(top1) != len(reference):
        return None
    same = np.asarray(top1) == np.asarray(reference)
    if among is not None:
        mask = np.asarray(among, dtype=bool)
        return float(same[mask].mean()) if mask.any() else None
    return float(same.mean())


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cap-gib", type=float, default=12.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", default=None, help="internal: one of fp32, the variants, bare@N")
    args = parser.parse_args()
    if args.child:
        child(args.models, args.child, args.workdir)
        return 0

    import tempfile

    print(realmodels.write_readme().read_text().splitlines()[0], flush=True)  # materialise the cache first, untimed
    root = args.workdir or Path(tempfile.mkdtemp(prefix="real-models-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    cap = int(args.cap_gib * GIB)
    print(
        f"workdir {root}; each child's output in <model>/<variant>/child.log; cap {args.cap_gib:g} GiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    rows = []
    for model_name in args.models.split(","):
        fp32 = measure(model_name, "fp32", root / model_name / "fp32", cap)
        reference = fp32.result.get("top1") or []
        sure = fp32.result.get("decided") or [True] * len(reference)
        print(
            f"{model_name}: fp32 {'ok' if fp32.ok else fp32.note}, {len(reference)} evaluation photographs, "
            f"{sum(sure)} of them decided by FP32 (top-1 ahead by >= 0.05 probability; the rest are near-ties)",
            flush=True,
        )
        measured: dict[str, Measurement] = {}
        for variant in args.variants.split(","):
            m = measure(model_name, variant, root / model_name / variant, cap)
            measured[variant] = m
            rows.append((model_name, m, _agreement(m.result.get("top1"), reference)))
            r = m.result
            print(
                f"  {variant:26s} {'ok' if m.ok else 'FAILED: ' + m.note}; peak {m.peak_bytes / GIB:.2f} GiB (watched {m.watched_peak_bytes / GIB:.2f}); "
                f"quantize {_fmt(r.get('quantize_seconds'), '{:.1f}')} s; agreement {_fmt(rows[-1][2], '{:.3f}')} "
                f"(decided {_fmt(_agreement(r.get('top1'), reference, sure), '{:.3f}')}, "
                f"near-ties {_fmt(_agreement(r.get('top1'), reference, [not d for d in sure]), '{:.3f}')}); "
                f"stages {r.get('stages', '-')}",
                flush=True,
            )
            for note in r.get("ptq_notes", []):
                print(f"    {note}", flush=True)
            if r.get("gate"):
                print(f"    gate: {r['gate']}", flush=True)
        # a bare call killed at the cap is compared through the largest bare@N that fitted (said so in the line)
        fitted = [m for v, m in measured.items() if v.startswith("bare") and m.ok]
        bare = max(fitted, key=lambda m: m.result.get("calibration_samples", 0), default=measured.get("bare"))
        for variant in [v for v in measured if v.startswith("edgequant")]:
            ours = measured.get(variant)
            if bare and ours and bare.ok:
                mem = ours.peak_bytes / bare.peak_bytes
                qs, bs = ours.result.get("quantize_seconds"), bare.result.get("quantize_seconds")
                timing = f"{qs / bs:.2f}x" if qs and bs else "-"
                bound = "" if ours.ok else ">= "  # a killed child had not reached its peak
                print(
                    f"  {variant} / {bare.variant}: peak RSS {bound}{mem:.2f}x (goal <= 1.5x and < 3 GiB: "
                    f"{'met' if ours.ok and mem <= 1.5 and ours.peak_bytes < 3 * GIB else 'NOT met'}); quantize stage {timing} (goal <= 1.05x)",
                    flush=True,
                )
    print()
    print(
        f"{'model':12s} {'variant':26s} {'ok':>4s} {'peak GiB':>9s} {'quantize s':>11s} {'run s':>8s} {'top-1 agree':>12s} {'artifact MB':>12s}  note"
    )
    for model_name, m, agree in rows:
        r = m.result
        print(
            f"{model_name:12s} {m.variant:26s} {'yes' if m.ok else 'no':>4s} {m.peak_bytes / GIB:9.2f} {_fmt(r.get('quantize_seconds'), '{:.1f}'):>11s} "
            f"{_fmt(r.get('run_seconds'), '{:.1f}'):>8s} {_fmt(agree, '{:.3f}'):>12s} {_fmt((r.get('artifact_bytes') or 0) / 1e6 or None, '{:.2f}'):>12s}  {m.note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
