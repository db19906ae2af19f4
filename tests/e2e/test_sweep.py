"""A QuantizationSweep through the operator on the real control plane: one child QuantizationJob per cell (run by
the process node against the moto S3 server), the concurrency limit, the status table, Pareto front and
recommendations checked against the children's own figures, and the combined report.html in S3."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.test_operator import (  # noqa: F401  (fixtures used by name)
    ROOT,
    Operator,
    crd_installed,
    create,
    get_json,
    operator,
    s3_secret,
    s3_world,
    start_operator,
    tiny_keras_model,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sweep_crd(k8s_cluster: Any, crd_installed: None) -> None:
    k8s_cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "edgequant.io_quantizationsweeps.yaml")
    )
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/quantizationsweeps.edgequant.io", "--timeout=60s")


@pytest.fixture
def calibration_data(s3_world: dict[str, Any], fashion_mnist: Any, tmp_path: Path) -> None:
    """200 real training images (20 a class) as the calibration set, beside the evaluation set."""
    picks = np.concatenate([np.flatnonzero(fashion_mnist.train_y == c)[:20] for c in range(10)])
    np.savez(tmp_path / "calibration.npz", x=fashion_mnist.train_x[picks], y=fashion_mnist.train_y[picks])
    s3_world["client"].upload_file(str(tmp_path / "calibration.npz"), s3_world["bucket"], "data/calibration.npz")


def sweep_manifest(name: str, world: dict[str, Any], secret: str) -> dict[str, Any]:
    bucket = world["bucket"]
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"s3://{bucket}/models/tiny.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "matrix": {"targets": ["rpi-xnnpack", "arm64-cpu"], "methods": ["tflite-int8", "tflite-dynamic-range"]},
            "calibration": {"dataset": {"uri": f"s3://{bucket}/data/calibration.npz", "layout": "npz"}, "samples": 200},
            "evaluation": {"dataset": {"uri": f"s3://{bucket}/data/eval.npz", "layout": "npz"}, "samples": 100},
            "mixedPrecision": {"sensitivity": "off"},
            "acceptance": {"maxAccuracyDrop": 1.0},
            "output": {"uri": f"s3://{bucket}/sweeps/{name}/"},
            "storage": {
                "endpoint": world["endpoint"],
                "pathStyle": True,
                "region": "us-east-1",
                "credentialsSecret": {"name": secret},
            },
            "concurrency": 2,
        },
    }


def dominated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """b is at least as good as a in size, drop and latency, and better in one."""
    keys = ("sizeBytes", "accuracyDrop", "latencyMs")
    return all(b[k] <= a[k] for k in keys) and any(b[k] < a[k] for k in keys)


def test_a_sweep_runs_its_cells_and_recommends_per_target(
    k8s_cluster: Any,
    namespace: str,
    sweep_crd: None,
    operator: Operator,
    s3_world: dict[str, Any],
    s3_secret: str,
    calibration_data: None,
) -> None:
    create(k8s_cluster, namespace, [sweep_manifest("fm", s3_world, s3_secret)])
    k8s_cluster.kubectl("wait", "--for=condition=Completed", "qs/fm", "-n", namespace, "--timeout=600s", timeout=630)
    sweep = get_json(k8s_cluster, "qs", "fm", "-n", namespace)
    status = sweep["status"]
    assert status["phase"] == "Completed" and status["reason"] == "Completed"
    assert (status["cells"], status["finished"], status["passed"]) == (4, 4, 4)

    # One child per cell, owned by the sweep, each with its target and method.
    children = {
        c["metadata"]["name"]: c
        for c in get_json(k8s_cluster, "qj", "-n", namespace, "-l", "edgequant.io/sweep=fm")["items"]
    }
    expected = {
        f"fm-{t}-{m}"
        for t, m in itertools.product(("rpi-xnnpack", "arm64-cpu"), ("tflite-int8", "tflite-dynamic-range"))
    }
    assert set(children) == expected
    for child in children.values():
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("QuantizationSweep", sweep["metadata"]["uid"], True)
        assert child["spec"]["output"]["uri"] == f"s3://{s3_world['bucket']}/sweeps/fm/{child['metadata']['name']}/"
        assert child["status"]["phase"] == "Succeeded"

    # Concurrency 2: each child after the second was created only once an earlier one had finished.
    ordered = sorted(children.values(), key=lambda c: c["metadata"]["creationTimestamp"])
    for i, child in enumerate(ordered[2:], start=2):
        done_before = [
            c for c in ordered[:i] if c["status"]["completionTime"] <= child["metadata"]["creationTimestamp"]
        ]
        assert len(done_before) >= i - 1, (
            child["metadata"]["name"],
            [c["status"]["completionTime"] for c in ordered[:i]],
        )

    # The table is the children's figures.
    rows = {r["name"]: r for r in status["candidates"]}
    assert set(rows) == expected
    for name, child in children.items():
        results, row = child["status"]["results"], rows[name]
        assert row["method"] == child["spec"]["method"] and row["target"] == child["spec"]["target"]
        assert (
            row["sizeBytes"] == results["quantized"]["sizeBytes"]
            and row["compressionRatio"] == results["compressionRatio"]
        )
        assert row["accuracyDrop"] == results["accuracyDrop"] and row["latencyMs"] == results["quantized"]["latencyMs"]
        assert row["passedGate"] is True

    # The Pareto front and the recommendations, recomputed from the children's figures.
    figures = {
        n: {
            "sizeBytes": c["status"]["results"]["quantized"]["sizeBytes"],
            "accuracyDrop": c["status"]["results"]["accuracyDrop"],
            "latencyMs": c["status"]["results"]["quantized"]["latencyMs"],
        }
        for n, c in children.items()
    }
    front = {n for n in figures if not any(dominated(figures[n], figures[o]) for o in figures if o != n)}
    assert set(status["paretoFront"]) == front and front
    recommendations = {r["target"]: r for r in status["recommendations"]}
    assert set(recommendations) == {"rpi-xnnpack", "arm64-cpu"}
    for target, rec in recommendations.items():
        mine = {n: f for n, f in figures.items() if children[n]["spec"]["target"] == target}
        smallest = min(f["sizeBytes"] for f in mine.values())
        assert (
            figures[rec["candidate"]]["sizeBytes"] == smallest
            and rec["method"] == children[rec["candidate"]]["spec"]["method"]
        )

    # One calibration cache for every cell, in S3 under the sweep's output: the int8 cells of both targets share a
    # key; one that started after the other finished quantized from its calibration, and both made the same bytes.
    client = s3_world["client"]
    first, second = sorted(
        (children[f"fm-{t}-tflite-int8"] for t in ("rpi-xnnpack", "arm64-cpu")),
        key=lambda c: c["metadata"]["creationTimestamp"],
    )
    assert {c["spec"]["calibration"]["cacheUri"] for c in (first, second)} == {
        f"s3://{s3_world['bucket']}/sweeps/fm/calibration-cache/"
    }
    assert first["status"]["results"]["artifact"]["sha256"] == second["status"]["results"]["artifact"]["sha256"]
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3_world["bucket"], Prefix="sweeps/fm/calibration-cache/")["Contents"]
    ]
    assert len([k for k in keys if k.endswith("/key.json")]) == 1
    if second["metadata"]["creationTimestamp"] > first["status"]["completionTime"]:
        report = json.loads(
            client.get_object(Bucket=s3_world["bucket"], Key=second["status"]["results"]["reportUri"].split("/", 3)[3])[
                "Body"
            ].read()
        )
        assert any("calibration reused from" in n for n in report["notes"]), report["notes"]

    # The combined report under the sweep's output URI.
    assert status["reportUri"] == f"s3://{s3_world['bucket']}/sweeps/fm/report.html"
    html = client.get_object(Bucket=s3_world["bucket"], Key="sweeps/fm/report.html")["Body"].read().decode()
    assert "<svg" in html and all(name in html for name in expected)
    saved = json.loads(client.get_object(Bucket=s3_world["bucket"], Key="sweeps/fm/sweep.json")["Body"].read())
    assert saved["status"]["paretoFront"] == status["paretoFront"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(sweep)

    # Printer columns.
    table = k8s_cluster.kubectl("get", "qs", "fm", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "PHASE", "CELLS", "FINISHED", "PASSED"]
    assert row.split()[:5] == ["fm", "Completed", "4", "4", "4"]


def test_an_invalid_matrix_fails_the_sweep_with_the_field_named(
    k8s_cluster: Any, namespace: str, sweep_crd: None, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    manifest = sweep_manifest("no-cells", s3_world, s3_secret)
    manifest["spec"]["matrix"] = {"methods": ["onnx-static"]}  # a Keras model: no cell can run
    create(k8s_cluster, namespace, [manifest])
    k8s_cluster.kubectl("wait", "--for=condition=Failed", "qs/no-cells", "-n", namespace, "--timeout=120s", timeout=150)
    status = get_json(k8s_cluster, "qs", "no-cells", "-n", namespace)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "spec.matrix" in status["message"] and "onnx-static does not take a keras model" in status["message"]
    assert get_json(k8s_cluster, "qj", "-n", namespace)["items"] == []
