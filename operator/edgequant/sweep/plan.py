"""A QuantizationSweep as cells, and its cells' results as candidates, a Pareto front and recommendations. Pure.

The same functions serve the operator (children are QuantizationJobs) and ``edgequant run`` (cells run in this
process), so a sweep expands, names its cells and chooses its recommendation the same way in both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api
from edgequant.api.targets import TARGETS
from edgequant.controller import naming

#: Label on each child QuantizationJob naming its sweep (full name in the annotation when the label is shortened).
LABEL_SWEEP = "edgequant.io/sweep"
ANNOTATION_SWEEP = "edgequant.io/sweep-name"
ANNOTATION_CELL = "edgequant.io/sweep-cell"
#: Spec fields a sweep hands to every cell unchanged.
SHARED_FIELDS = (
    "model",
    "calibration",
    "training",
    "evaluation",
    "mixed_precision",
    "acceptance",
    "storage",
    "resources",
    "scheduling",
    "execution",
    "onnx",
    "tensorrt",
    "ptq",
)
TERMINAL = ("Succeeded", "Failed")
#: The cells' shared calibration cache, under the sweep's output URI.
CACHE_FOLDER = "calibration-cache/"
NO_TARGET = "any"


@dataclass(frozen=True)
class Cell:
    name: str
    """The child QuantizationJob's name (also the folder under the sweep's output URI)."""
    target: str | None
    method: api.Method
    algorithm: api.CalibrationAlgorithm | None
    """Set only when the matrix names calibration algorithms and the method has a choice of them."""

    @property
    def options(self) -> dict[str, str]:
        return {"calibrationAlgorithm": self.algorithm.value} if self.algorithm else {}


def cell_name(
    sweep_name: str, target: str | None, method: api.Method, algorithm: api.CalibrationAlgorithm | None
) -> str:
    """'<sweep>-<target>-<method>[-<algorithm>]', hashed when longer than an object name may be."""
    parts = [sweep_name, *([target] if target else []), method.value, *([algorithm.value] if algorithm else [])]
    name = "-".join(parts)
    if len(name) <= api.MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: api.MAX_NAME - 9].rstrip('-.')}-{digest}"


def expand(sweep_name: str, spec: sweep_api.QuantizationSweepSpec) -> tuple[list[Cell], list[sweep_api.SkippedCell]]:
    """The matrix as cells in a stable order (target, method, algorithm), and the combinations that cannot run.

    A target without matrix.methods brings its default methods; a method that does not take the model's format
    is skipped with the reason; calibration algorithms multiply only the methods that offer a choice of them.
    """
    fmt = spec.model.resolved_format
    cells: list[Cell] = []
    skipped: list[sweep_api.SkippedCell] = []
    targets: list[str | None] = list(spec.matrix.targets) or [None]
    for target in targets:
        methods = (
            list(spec.matrix.methods)
            if spec.matrix.methods or target is None
            else [api.Method.named(m) for m in TARGETS[target].methods]
        )
        for method in methods:
            if fmt is not None and fmt not in method.formats:
                reason = f"{method.value} does not take a {fmt.value} model ({', '.join(sorted(f.value for f in method.formats))})"
                skipped.append(sweep_api.SkippedCell(target=target, method=method.value, reason=reason))
                continue
            if method.needs_training and spec.training is None:
                skipped.append(
                    sweep_api.SkippedCell(
                        target=target,
                        method=method.value,
                        reason=f"{method.value} needs training data: add spec.training",
                    )
                )
                continue
            algorithms: list[api.CalibrationAlgorithm | None] = (
                list(spec.matrix.calibration_algorithms) if takes_algorithm(method) else []
            )
            for algorithm in algorithms or [None]:
                cells.append(Cell(cell_name(sweep_name, target, method, algorithm), target, method, algorithm))
    return cells, skipped


def check(sweep_name: str, spec: sweep_api.QuantizationSweepSpec) -> str:
    """What makes the sweep unrunnable as a whole ('' when nothing): no cell, too many, or data a cell lacks."""
    cells, skipped = expand(sweep_name, spec)
    if not cells:
        reasons = "; ".join(s.reason for s in skipped)
        return f"the matrix has no cell that can run ({reasons}): change spec.matrix or spec.model"
    if len(cells) > sweep_api.MAX_CELLS:
        return f"the matrix has {len(cells)} cells, more than {sweep_api.MAX_CELLS}: shorten spec.matrix"
    if any(c.method.needs_calibration for c in cells) and spec.calibration is None:
        return "the matrix has calibrated methods (tflite-int8, onnx-static, tensorrt-int8, tensorrt-mixed): add spec.calibration"
    return ""


def takes_algorithm(method: api.Method) -> bool:
    """Methods whose calibration algorithm is a choice (the catalogue lists the estimators each offers)."""
    return bool(method.row.calibration_algorithms)


def _unused_fields(method: api.Method) -> list[str]:
    unused = []
    if not method.needs_calibration and not method.needs_training:
        unused.append("calibration")
    if not method.needs_training:
        unused.append("training")
    if method.family is not api.MethodFamily.TENSORRT:
        unused.append("tensorrt")
    if method not in (api.Method.ONNX_DYNAMIC, api.Method.ONNX_STATIC, api.Method.TORCH_QAT):
        unused.append("onnx")
    if method is not api.Method.ONNX_STATIC:
        unused.append("ptq")
    return unused


def cell_wire(spec: sweep_api.QuantizationSweepSpec, cell: Cell) -> dict[str, Any]:
    """The cell's QuantizationJob spec as written: the sweep's shared fields as the author wrote them (defaults stay
    unwritten, so a cell behaves as the same job written by hand), the cell's method, target and algorithm."""
    wire = spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_unset=True, include=set(SHARED_FIELDS)
    )
    for field in _unused_fields(cell.method):
        wire.pop(field, None)  # the sweep's settings for other methods: a cell written by hand would not have them
    wire["method"] = cell.method.value
    if cell.target is not None:
        wire["target"] = cell.target
    if cell.algorithm is not None:
        wire.setdefault("calibration", {})["algorithm"] = cell.algorithm.value
    if "calibration" in wire and "cacheUri" not in wire["calibration"]:
        # One cache for every cell: cells sharing a model, data and calibration recipe calibrate once.
        wire["calibration"]["cacheUri"] = spec.output.uri + CACHE_FOLDER
    wire["output"] = {"uri": spec.output.uri + cell.name + "/"}
    return wire


def cell_spec(spec: sweep_api.QuantizationSweepSpec, cell: Cell) -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate(cell_wire(spec, cell))


def child_manifest(
    *, sweep_name: str, namespace: str, uid: str, spec: sweep_api.QuantizationSweepSpec, cell: Cell
) -> dict[str, Any]:
    """The child QuantizationJob, owned by the sweep (deleted with it) and labelled with it."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": cell.name,
            "namespace": namespace,
            "labels": {LABEL_SWEEP: naming.label_value(sweep_name)},
            "annotations": {ANNOTATION_SWEEP: sweep_name, ANNOTATION_CELL: cell.name},
            "ownerReferences": [
                {
                    "apiVersion": api.API_VERSION,
                    "kind": sweep_api.KIND,
                    "name": sweep_name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": cell_wire(spec, cell),
    }


# --------------------------------------------------------------------------- results


def candidate(cell: Cell, status: Mapping[str, Any] | None) -> sweep_api.Candidate:
    """A cell's row from its QuantizationJob status (wire form; None before the child exists)."""
    status = status or {}
    results = status.get("results") or {}
    quantized = results.get("quantized") or {}
    artifact = results.get("artifact") or {}
    phase = status.get("phase") or "Pending"
    passed = phase == "Succeeded" and not results.get("degraded", False)
    return sweep_api.Candidate(
        name=cell.name,
        target=cell.target,
        method=results.get("method") or cell.method.value,
        options=cell.options,
        phase=phase,
        size_bytes=quantized.get("sizeBytes", artifact.get("sizeBytes")),
        compression_ratio=results.get("compressionRatio"),
        accuracy=quantized.get("accuracy"),
        accuracy_drop=results.get("accuracyDrop"),
        latency_ms=quantized.get("latencyMs"),
        passed_gate=passed,
        artifact_uri=artifact.get("uri"),
        report_uri=results.get("reportUri"),
        message=None if passed or phase not in TERMINAL else (status.get("message") or "")[:1024] or None,
    )


def _objectives(c: sweep_api.Candidate) -> tuple[float, float, float]:
    """Size, accuracy drop, latency: all minimised; an unmeasured one counts as the worst."""

    def value(v: float | None) -> float:
        return math.inf if v is None else float(v)

    return value(c.size_bytes), value(c.accuracy_drop), value(c.latency_ms)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is no worse than b in every objective and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in input order (equal points all stay)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def measured(candidates: Sequence[sweep_api.Candidate]) -> list[sweep_api.Candidate]:
    """Candidates with an artifact to compare: their cell produced one and measured its size."""
    return [c for c in candidates if c.size_bytes is not None and c.phase in TERMINAL]


def front_of(candidates: Sequence[sweep_api.Candidate]) -> list[str]:
    """Names of the Pareto-optimal candidates over size, accuracy drop and latency."""
    pool = measured(candidates)
    return [pool[i].name for i in pareto_front([_objectives(c) for c in pool])]


def _preference(c: sweep_api.Candidate) -> int:
    methods = TARGETS[c.target].methods if c.target is not None and c.target in TARGETS else ()
    return methods.index(c.method) if c.method in methods else len(methods)


def recommend(candidates: Sequence[sweep_api.Candidate], targets: Sequence[str]) -> list[sweep_api.Recommendation]:
    """Per target, the smallest artifact that met the budget; ties go to the smaller drop, the lower latency,
    then the target's preferred method. Latency is the worker's CPU's, so it only breaks ties."""
    out = []
    for target in targets or [NO_TARGET]:
        mine = [c for c in candidates if (c.target or NO_TARGET) == target]
        passed = [c for c in mine if c.passed_gate and c.size_bytes is not None]
        if not passed:
            unfinished = [c for c in mine if c.phase not in TERMINAL]
            reason = "cells still running" if unfinished else "no cell met the acceptance budget"
            out.append(sweep_api.Recommendation(target=target, reason=reason))
            continue
        best = min(passed, key=lambda c: (*_objectives(c), _preference(c), c.name))
        drop = f", accuracy drop {best.accuracy_drop:.4f}" if best.accuracy_drop is not None else ""
        out.append(
            sweep_api.Recommendation(
                target=target,
                candidate=best.name,
                method=best.method,
                reason=f"smallest artifact within the budget ({best.size_bytes} bytes{drop}) of {len(passed)} that passed",
            )
        )
    return out


def aggregate(
    cells: Sequence[Cell], statuses: Mapping[str, Mapping[str, Any] | None], spec: sweep_api.QuantizationSweepSpec
) -> dict[str, Any]:
    """The status fields that depend on the children only: counts, candidates, front, recommendations (wire form)."""
    rows = [candidate(c, statuses.get(c.name)) for c in cells]
    finished = sum(r.phase in TERMINAL for r in rows)
    return {
        "cells": len(cells),
        "finished": finished,
        "passed": sum(r.passed_gate for r in rows),
        "candidates": [r.to_wire() for r in rows],
        "paretoFront": front_of(rows),
        "recommendations": [r.to_wire() for r in recommend(rows, spec.matrix.targets)],
    }


def next_cells(cells: Sequence[Cell], existing: Mapping[str, Mapping[str, Any] | None], concurrency: int) -> list[Cell]:
    """The cells to create now: in order, as many as keep unfinished children at most ``concurrency``."""
    running = sum(1 for c in cells if c.name in existing and ((existing[c.name] or {}).get("phase") not in TERMINAL))
    room = max(0, concurrency - running)
    return [c for c in cells if c.name not in existing][:room]


class SweepSpecError(ValueError):
    """A QuantizationSweep that cannot run; the message names each field and its fix."""


def parse(document: Mapping[str, Any]) -> sweep_api.QuantizationSweep:
    """A whole QuantizationSweep manifest, checked as the operator and ``edgequant run`` both need it."""
    try:
        sweep = sweep_api.QuantizationSweep.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
            problems.append(f"{path}: {str(error['msg']).removeprefix('Value error, ')}")
        raise SweepSpecError("; ".join(problems)) from None
    problem = check(sweep.metadata.name or "sweep", sweep.spec)
    if problem:
        raise SweepSpecError(f"spec.matrix: {problem}")
    for cell in expand(sweep.metadata.name or "sweep", sweep.spec)[0]:
        try:
            cell_spec(sweep.spec, cell)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise SweepSpecError(f"cell {cell.name}: {str(first['msg']).removeprefix('Value error, ')}") from None
    return sweep
