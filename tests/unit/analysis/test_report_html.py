"""report.html: self-contained (no scripts, no external assets), every section drawn from report.json, text escaped."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis import diagnostics as dg
from edgequant.api import v1alpha1 as api
from edgequant.report.html import render_html
from edgequant.report.schema import (
    AnalysisReport,
    GateReport,
    LayerSensitivity,
    MixedPrecisionReport,
    SensitivityReport,
    Trial,
)

ROOT = Path(__file__).resolve().parents[3]


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _report() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    fp32 = rng.normal(0, 3, (200, 10))
    quant = np.clip(fp32, -2, 2)
    spec = api.QuantizationJobSpec.model_validate(
        {
            "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "method": "tflite-int8",
            "calibration": {"dataset": {"uri": "file:///c/"}},
            "output": {"uri": "file:///o/"},
        }
    )
    fixes = dg.reference_fixes(spec)
    diag = dg.DiagnosticsReport(
        outputs=dg.compare_outputs(fp32, quant),
        findings=[dg.check_clipped(fp32, quant, fixes=fixes), dg.check_collapsed(fp32, quant, fixes=fixes)],
        distribution=dg.histogram(fp32, quant),
    )
    layers = [
        LayerSensitivity(layer="conv2", rank=1, accuracy=0.70, accuracy_delta=0.2, flagged=True),
        LayerSensitivity(layer="<script>alert(1)</script>", rank=2, accuracy=0.89, accuracy_delta=0.01, flagged=True),
        LayerSensitivity(layer="fc1", rank=3, accuracy=0.899, accuracy_delta=0.001),
    ]
    analysis = AnalysisReport(
        sensitivity=SensitivityReport(
            mode=api.SensitivityMode.EXHAUSTIVE,
            threshold=0.005,
            reference_accuracy=0.9,
            layers=layers,
            seconds=3.2,
            quantize_runs=3,
        ),
        mixed_precision=MixedPrecisionReport(
            mode=api.MixedPrecisionMode.AUTO, pinned=["conv2"], max_pinned_layers=8, met_accuracy_budget=True
        ),
        gate=GateReport(
            passed=False,
            reasons=["accuracy dropped 0.0300 (0.9000 -> 0.8700), more than acceptance.maxAccuracyDrop 0.0100"],
            accuracy_drop=0.03,
            compression_ratio=3.1,
            max_accuracy_drop=0.01,
            min_compression_ratio=1.0,
            on_failure=api.OnFailure.DEGRADE,
            degraded=True,
            trials=[
                Trial(
                    rung="full",
                    method=api.Method.TFLITE_INT8,
                    accuracy=0.7,
                    size_bytes=100,
                    passed=False,
                    reasons=["x"],
                ),
                Trial(
                    rung="float16",
                    method=api.Method.TFLITE_FLOAT16,
                    accuracy=0.87,
                    size_bytes=200,
                    passed=False,
                    reasons=["y"],
                    chosen=True,
                ),
            ],
        ),
        diagnostics=diag,
    )
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationReport",
        "createdAt": "2026-11-26T22:00:00+00:00",
        "job": {"name": "fashion-cnn", "namespace": "ml"},
        "outcome": {
            "succeeded": True,
            "exitCode": 0,
            "reason": "Completed",
            "message": "tflite-float16: 200,000 bytes",
            "degraded": True,
        },
        "method": "tflite-int8",
        "publishedMethod": "tflite-float16",
        "model": {"uri": "s3://models/fashion.keras", "format": "keras", "sizeBytes": 500_000},
        "baseline": {
            "format": "tflite-fp32",
            "sizeBytes": 400_000,
            "input": {"dtype": "float32", "shape": [1, 28, 28, 1]},
            "accuracy": 0.9,
            "latencyMsMedian": 0.8,
        },
        "quantized": {
            "format": "tflite-float16",
            "sizeBytes": 200_000,
            "input": {"dtype": "float32", "shape": [1, 28, 28, 1]},
            "accuracy": 0.87,
            "latencyMsMedian": 0.5,
        },
        "comparison": {
            "metric": "top1",
            "compressionRatio": 2.0,
            "accuracyDrop": 0.03,
            "agreement": 0.95,
            "latencySpeedup": 1.6,
        },
        "inputContract": {
            "dtype": "float32",
            "shape": [1, 28, 28, 1],
            "layout": "NHWC",
            "valueRange": [0, 1],
            "preprocessing": "GRAY, /255",
        },
        "warnings": ["calibration has 200 samples; 500-1000 recommended"],
        "notes": ["kept in float: conv2"],
        "analysis": analysis.to_wire(),
    }


def test_page_is_self_contained_and_has_every_section() -> None:
    page = render_html(_report())
    parser = Collector()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>")
    assert (
        "script" not in parser.tags
        and "link" not in parser.tags
        and "img" not in parser.tags
        and "iframe" not in parser.tags
    )
    urls = [v for k, v in parser.attrs if k in ("src", "href") and v]
    assert urls == []
    assert "url(" not in page and "@import" not in page
    # charts: 3 FP32-vs-quantized pairs, the sensitivity bars, the output histogram
    assert parser.tags.count("svg") == 5
    text = " ".join(parser.text)
    for expected in (
        "ml/fashion-cnn",
        "conv2",
        "Degraded",
        "output-clipped",
        "float16",
        "calibration has 200 samples",
        "NHWC",
        "speed-up 1.60x",
    ):
        assert expected in text, expected
    assert "pinned" in text and "threshold 0.005" in text


def test_layer_names_and_messages_are_escaped() -> None:
    page = render_html(_report())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_missing_parts_are_left_out() -> None:
    page = render_html({"job": {"name": "bare"}})
    parser = Collector()
    parser.feed(page)
    assert "svg" not in parser.tags and "bare" in page
    assert "Per-layer sensitivity" not in page and "Diagnostics" not in page


def test_fast_mode_bars_show_decibels() -> None:
    report = _report()
    report["analysis"]["sensitivity"] = SensitivityReport(
        mode=api.SensitivityMode.FAST,
        threshold=0.005,
        fast_flag_sqnr_db=20.0,
        layers=[
            LayerSensitivity(layer="conv2", rank=1, injected_sqnr_db=12.5, sqnr_db=12.4, cosine=0.97, flagged=True)
        ],
    ).to_wire()
    page = render_html(report)
    assert "12.5 dB" in page and "20.0 dB" in page


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgequant.cli.main", "report", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_renders_beside_report_json_from_a_folder_or_file(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(_report()))
    proc = _cli(str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    html_path = tmp_path / "report.html"
    assert proc.stdout.strip() == str(html_path) and "fashion-cnn" in html_path.read_text()
    out = tmp_path / "elsewhere.html"
    proc = _cli(f"file://{tmp_path}/report.json", "-o", str(out))
    assert proc.returncode == 0 and out.read_text() == html_path.read_text()


def test_cli_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path / "absent.json"))
    assert proc.returncode == 2 and "absent.json: no such file" in proc.stderr
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    proc = _cli(str(bad))
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _cli(str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no report.json in this folder" in proc.stderr
    proc = _cli("s3://bucket/run/report.json")
    assert proc.returncode == 2 and "download it first" in proc.stderr


def test_a_failed_run_marks_its_best_candidate_not_published() -> None:
    report = _report()
    report["outcome"] = {
        "succeeded": False,
        "exitCode": 12,
        "reason": "AcceptanceFailed",
        "message": "acceptance gate failed",
    }
    page = render_html(report)
    assert "best found, not published" in page and "<b>published</b>" not in page
    assert 'class="banner fail"' in page and "AcceptanceFailed" in page
