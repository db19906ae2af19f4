"""QuantizationSweep: matrix expansion, cell specs, candidates, the Pareto front and the recommendation. No I/O."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api
from edgequant.api.targets import TARGETS
from edgequant.sweep import plan


def document(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": "s3://b/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "matrix": {"targets": ["rpi-xnnpack", "arm64-cpu"]},
        "calibration": {"dataset": {"uri": "s3://b/cal/"}, "samples": 300},
        "evaluation": {"dataset": {"uri": "s3://b/test/"}},
        "output": {"uri": "s3://b/sweeps/fm/"},
    }
    base.update(spec)
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "metadata": {"name": "fm"},
        "spec": base,
    }


def parsed(**spec: Any) -> sweep_api.QuantizationSweep:
    return plan.parse(document(**spec))


def test_targets_alone_expand_to_their_default_methods() -> None:
    sweep = parsed()
    cells, skipped = plan.expand("fm", sweep.spec)
    assert [(c.target, c.method.value) for c in cells] == [
        ("rpi-xnnpack", "tflite-int8"),
        ("rpi-xnnpack", "tflite-float16"),
        ("arm64-cpu", "tflite-int8"),
        ("arm64-cpu", "tflite-float16"),
    ]
    # Both targets also list onnx-static, which does not take this Keras model.
    assert [(s.target, s.method) for s in skipped] == [("rpi-xnnpack", "onnx-static"), ("arm64-cpu", "onnx-static")]
    assert [c.name for c in cells] == [
        "fm-rpi-xnnpack-tflite-int8",
        "fm-rpi-xnnpack-tflite-float16",
        "fm-arm64-cpu-tflite-int8",
        "fm-arm64-cpu-tflite-float16",
    ]


def test_targets_times_methods_times_algorithms_where_the_method_has_a_choice() -> None:
    sweep = parsed(
        model={"uri": "s3://b/m.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}},
        matrix={
            "targets": ["x86-avx2", "x86-vnni"],
            "methods": ["onnx-static", "onnx-dynamic"],
            "calibrationAlgorithms": ["minmax", "entropy", "percentile"],
        },
    )
    cells, _ = plan.expand("fm", sweep.spec)
    # onnx-static: 3 algorithms; onnx-dynamic calibrates nothing: one cell.
    assert len(cells) == 2 * (3 + 1)
    static = [c for c in cells if c.method is api.Method.ONNX_STATIC]
    assert {(c.target, c.algorithm.value) for c in static if c.algorithm} == set(
        itertools.product(("x86-avx2", "x86-vnni"), ("minmax", "entropy", "percentile"))
    )
    assert all(c.algorithm is None for c in cells if c.method is api.Method.ONNX_DYNAMIC)
    assert len({c.name for c in cells}) == len(cells)
    spec = plan.cell_spec(sweep.spec, static[1])
    assert spec.calibration is not None and spec.calibration.algorithm is api.CalibrationAlgorithm.ENTROPY
    assert "algorithm" in spec.calibration.model_fields_set  # written, so the cell keeps it instead of choosing one


def test_tflite_int8_is_not_multiplied_by_algorithms_it_ignores() -> None:
    sweep = parsed(matrix={"methods": ["tflite-int8"], "calibrationAlgorithms": ["minmax", "entropy"]})
    cells, _ = plan.expand("fm", sweep.spec)
    assert [(c.target, c.method.value, c.algorithm) for c in cells] == [(None, "tflite-int8", None)]
    assert cells[0].name == "fm-tflite-int8"


def test_methods_that_do_not_take_the_model_are_skipped_with_the_reason() -> None:
    sweep = parsed(matrix={"targets": ["rpi-xnnpack", "x86-avx2"]})
    cells, skipped = plan.expand("fm", sweep.spec)
    assert [(c.target, c.method.value) for c in cells] == [
        ("rpi-xnnpack", "tflite-int8"),
        ("rpi-xnnpack", "tflite-float16"),
        ("x86-avx2", "tflite-int8"),
    ]
    assert [(s.target, s.method) for s in skipped] == [
        ("rpi-xnnpack", "onnx-static"),
        ("x86-avx2", "onnx-static"),
        ("x86-avx2", "onnx-dynamic"),
    ]
    assert "does not take a keras model" in skipped[0].reason


def test_a_cell_is_the_job_written_by_hand() -> None:
    sweep = parsed(
        matrix={"targets": ["rpi-xnnpack"], "methods": ["tflite-float16", "tflite-int8"]},
        onnx={"perChannel": False},
        acceptance={"maxAccuracyDrop": 0.02},
    )
    fp16, int8 = plan.expand("fm", sweep.spec)[0]
    wire = plan.cell_wire(sweep.spec, fp16)
    assert wire["method"] == "tflite-float16" and wire["target"] == "rpi-xnnpack"
    assert wire["output"] == {"uri": "s3://b/sweeps/fm/fm-rpi-xnnpack-tflite-float16/"}
    assert "calibration" not in wire and "onnx" not in wire  # other methods' settings stay out of this cell
    assert wire["acceptance"] == {"maxAccuracyDrop": 0.02} and "mixedPrecision" not in wire  # defaults stay unwritten
    # Every cell calibrates through one cache under the sweep's output: cells sharing model, data and recipe calibrate once.
    assert plan.cell_wire(sweep.spec, int8)["calibration"] == {
        "dataset": {"uri": "s3://b/cal/"},
        "samples": 300,
        "cacheUri": "s3://b/sweeps/fm/calibration-cache/",
    }
    child = plan.child_manifest(sweep_name="fm", namespace="team", uid="u-1", spec=sweep.spec, cell=int8)
    assert child["metadata"]["labels"] == {plan.LABEL_SWEEP: "fm"}
    assert child["metadata"]["ownerReferences"][0] == {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "name": "fm",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    api.QuantizationJob.model_validate(child)


@pytest.mark.parametrize(
    ("spec", "field", "fix"),
    [
        ({"matrix": {}}, "spec.matrix", "give matrix.targets"),
        ({"matrix": {"targets": ["raspberry"]}}, "spec.matrix.targets", "unknown target"),
        ({"matrix": {"methods": ["onnx-static"]}}, "spec.matrix", "onnx-static does not take a keras model"),
        ({"calibration": None, "matrix": {"methods": ["tflite-int8"]}}, "spec.matrix", "add spec.calibration"),
        ({"output": {"uri": "s3://b/one-file"}}, "spec.output", "ends in '/'"),
    ],
)
def test_an_unrunnable_sweep_names_the_field_and_the_fix(spec: dict[str, Any], field: str, fix: str) -> None:
    doc = document(**spec)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    with pytest.raises(plan.SweepSpecError) as err:
        plan.parse(doc)
    assert field in str(err.value) and fix in str(err.value)


def test_next_cells_keep_at_most_concurrency_unfinished() -> None:
    cells = plan.expand(
        "fm",
        parsed(
            matrix={"targets": list(TARGETS)[:1], "methods": ["tflite-int8", "tflite-float16", "tflite-dynamic-range"]}
        ).spec,
    )[0]
    assert [c.name for c in plan.next_cells(cells, {}, 2)] == [c.name for c in cells[:2]]
    running = {cells[0].name: {"phase": "Running"}, cells[1].name: {}}
    assert plan.next_cells(cells, running, 2) == []
    one_done = {cells[0].name: {"phase": "Succeeded"}, cells[1].name: {"phase": "Running"}}
    assert plan.next_cells(cells, one_done, 2) == [cells[2]]


# --------------------------------------------------------------------------- Pareto front


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    points = [(100, 0.01, 1.0), (50, 0.02, 1.0), (50, 0.02, 2.0), (200, 0.0, 0.5), (100, 0.01, 1.0), (300, 0.03, 3.0)]
    # 2 is beaten by 1 (latency), 5 by everyone; the two equal points both stay.
    assert plan.pareto_front(points) == [0, 1, 3, 4]
    assert plan.pareto_front([]) == []
    assert plan.pareto_front([(1.0, 2.0, 3.0)]) == [0]


def test_pareto_front_matches_brute_force_on_random_points() -> None:
    rng = random.Random(7)
    for _ in range(200):
        points = [tuple(float(rng.randint(0, 4)) for _ in range(3)) for _ in range(rng.randint(1, 9))]
        expected = [
            i for i, p in enumerate(points) if not any(all(q[k] <= p[k] for k in range(3)) and q != p for q in points)
        ]
        assert plan.pareto_front(points) == expected


def status_of(
    size: int, drop: float, latency: float, *, phase: str = "Succeeded", degraded: bool = False
) -> dict[str, Any]:
    return {
        "phase": phase,
        "results": {
            "quantized": {"sizeBytes": size, "accuracy": 0.9 - drop, "latencyMs": latency},
            "compressionRatio": 400_000 / size,
            "accuracyDrop": drop,
            "degraded": degraded,
            "artifact": {"uri": "s3://b/x", "sha256": "0" * 64, "sizeBytes": size},
        },
    }


def test_recommendation_is_the_smallest_passing_artifact_per_target() -> None:
    sweep = parsed(
        matrix={
            "targets": ["rpi-xnnpack", "arm64-cpu"],
            "methods": ["tflite-int8", "tflite-float16", "tflite-dynamic-range"],
        }
    )
    cells, _ = plan.expand("fm", sweep.spec)
    figures = {
        "fm-rpi-xnnpack-tflite-int8": status_of(100_000, 0.004, 0.06),
        "fm-rpi-xnnpack-tflite-float16": status_of(200_000, 0.0, 0.10),
        "fm-rpi-xnnpack-tflite-dynamic-range": status_of(100_000, 0.003, 0.03),
        # On arm64 the int8 cell missed the budget: the next smallest that passed is recommended.
        "fm-arm64-cpu-tflite-int8": status_of(100_000, 0.05, 0.06, phase="Failed"),
        "fm-arm64-cpu-tflite-float16": status_of(200_000, 0.0, 0.10),
        "fm-arm64-cpu-tflite-dynamic-range": status_of(110_000, 0.002, 0.03, degraded=True),
    }
    result = plan.aggregate(cells, figures, sweep.spec)
    assert (result["cells"], result["finished"], result["passed"]) == (6, 6, 4)
    recs = {r["target"]: r for r in result["recommendations"]}
    assert recs["rpi-xnnpack"]["candidate"] == "fm-rpi-xnnpack-tflite-dynamic-range"  # same size as int8, smaller drop
    assert recs["arm64-cpu"]["candidate"] == "fm-arm64-cpu-tflite-float16"
    # Front: int8 and dynamic range tie on size; dynamic range wins drop and latency; float16 has the lowest drop.
    assert set(result["paretoFront"]) == {
        "fm-rpi-xnnpack-tflite-dynamic-range",
        "fm-rpi-xnnpack-tflite-float16",
        "fm-arm64-cpu-tflite-float16",
        "fm-arm64-cpu-tflite-dynamic-range",
    }
    rows = {r["name"]: r for r in result["candidates"]}
    assert (
        rows["fm-arm64-cpu-tflite-int8"]["passedGate"] is False
        and rows["fm-arm64-cpu-tflite-dynamic-range"]["passedGate"] is False
    )


def test_no_recommendation_while_cells_run_or_when_none_passed() -> None:
    sweep = parsed(matrix={"methods": ["tflite-int8", "tflite-float16"]})
    cells, _ = plan.expand("fm", sweep.spec)
    running = plan.aggregate(cells, {cells[0].name: {"phase": "Running"}}, sweep.spec)
    assert (
        running["recommendations"] == [{"target": "any", "reason": "cells still running"}]
        and running["paretoFront"] == []
    )
    failed = plan.aggregate(cells, {c.name: status_of(1000, 0.5, 1.0, phase="Failed") for c in cells}, sweep.spec)
    assert failed["recommendations"] == [{"target": "any", "reason": "no cell met the acceptance budget"}]
    assert failed["paretoFront"] == [c.name for c in cells]  # measured though failed; equal figures both stay
