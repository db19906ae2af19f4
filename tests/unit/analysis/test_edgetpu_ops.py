"""The Edge TPU op check over op lists (pure); the real-model check is in tests/integration/tflite/test_coral_target.py."""

from __future__ import annotations

from edgequant.analysis.edgetpu import Graph, GraphOp, GraphTensor, check_ops
from edgequant.report.html import render_html


def _ops(*names: str, float_at: int | None = None) -> tuple[GraphOp, ...]:
    return tuple(
        GraphOp(index=i, name=n, types=("float32", "float32") if i == float_at else ("int8", "int8", "int32"))
        for i, n in enumerate(names)
    )


STATIC = (GraphTensor("input", (1, 28, 28, 1)), GraphTensor("output", (1, 10)))


def test_a_supported_static_8_bit_graph_fires_nothing() -> None:
    findings = check_ops(
        Graph(ops=_ops("QUANTIZE", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"), io=STATIC)
    )
    assert [f.check for f in findings] == ["edgetpu-unsupported-op", "edgetpu-float-tensor", "edgetpu-dynamic-shape"]
    assert not any(f.fired for f in findings)


def test_the_first_unsupported_op_sends_it_and_everything_after_it_to_the_cpu() -> None:
    graph = Graph(ops=_ops("QUANTIZE", "CONV_2D", "LEAKY_RELU", "CONV_2D", "FULLY_CONNECTED", "GELU"), io=STATIC)
    op = check_ops(graph)[0]
    assert op.fired and "LEAKY_RELU, GELU" in op.message and "first at op 2" in op.message
    assert op.evidence["cpu_ops"] == 4 and op.evidence["unsupported"] == 2
    assert op.fixes and "LEAKY_RELU" in op.fixes[0]


def test_float_tensors_and_dynamic_batch_are_findings_with_fixes() -> None:
    graph = Graph(
        ops=_ops("QUANTIZE", "CONV_2D", "FULLY_CONNECTED", float_at=1), io=(GraphTensor("input", (-1, 28, 28, 1)),)
    )
    _op, floats, dynamic = check_ops(graph)
    assert floats.fired and "CONV_2D#1" in floats.message and floats.fixes
    assert dynamic.fired and "[-1, 28, 28, 1]" in dynamic.message and "batch size of 1" in dynamic.fixes[0]


def test_the_html_page_lists_the_targets_choices_and_findings() -> None:
    finding = check_ops(Graph(ops=_ops("CONV_2D", "LEAKY_RELU"), io=STATIC))[0]
    report = {
        "method": "tflite-int8",
        "target": {
            "name": "coral-edgetpu",
            "title": "Coral Edge TPU",
            "runtime": "TFLite",
            "choices": [
                {"field": "spec.method", "value": "tflite-int8", "reason": "the Edge TPU runs <only> 8-bit models"}
            ],
            "findings": [finding.model_dump(by_alias=True)],
            "notes": ["latency is measured on the worker's CPU, not on the target"],
        },
    }
    html = render_html(report)
    assert "Target <code>coral-edgetpu</code>" in html and "spec.method" in html and "&lt;only&gt;" in html
    assert "edgetpu-unsupported-op" in html and "not on the target" in html
