"""onnx-static through the worker pipeline on a real pretrained model (EfficientNet-Lite0) and real photographs.

The photographs are unlabeled (y = 0), so the report's accuracy is meaningless here; what counts is that
the job succeeds end to end, the artifact is an int8 Q/DQ model that ONNX Runtime runs, and the report's
top-1 agreement between FP32 and INT8 says the quantized model is still the same classifier. Layer
sensitivity is off: on this model it needs far more memory (measured: 16 GiB peak against 5 GiB) than a
test on a shared 24 GiB machine may take; bench/real_models.py measures the default spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api.exitcodes import ExitCode
from tests.realmodels import RealModel

pytestmark = pytest.mark.integration

#: From the measured spread over both reduce-range settings (the two CPU paths), default spec.ptq (no agreement
#: budget, so 8-bit weights and activations everywhere), 100 calibration / 100 evaluation photographs: 0.70 (7-bit
#: weights) and 0.85 (8-bit), 2026-11-30. The lower one less three binomial standard errors of an agreement measured on
#: 100 photographs (3 * sqrt(0.70 * 0.30 / 100) = 0.137), rounded down: 0.55. A model that is no longer the same
#: classifier agrees about as often as FP32 picks its commonest class (under 10 % of these photographs).
MIN_AGREEMENT = 0.55


#: Both reduce-range decisions (7-bit and 8-bit weights), whatever this machine's CPU would choose.
@pytest.fixture(scope="module", params=["always", "never"])
def static_run(
    request: pytest.FixtureRequest,
    lite0_onnx: RealModel,
    real_spec: Callable[..., dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Any, dict[str, Any], Path]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    root = tmp_path_factory.mktemp("real-onnx-static")
    spec = real_spec(
        lite0_onnx,
        "onnx-static",
        root / "out",
        samples=100,
        mixedPrecision={"sensitivity": "off"},
        onnx={"reduceRange": request.param},
    )
    parsed, _name, _ns = spec_from_document(spec)
    result, _ctx = run_job(parsed, workdir=root / "work", progress=SilentProgress())
    report = json.loads((root / "out" / "report.json").read_text())
    return result, report, root


def test_onnx_static_on_a_real_model_succeeds_with_a_report(static_run: tuple[Any, dict[str, Any], Path]) -> None:
    result, report, root = static_run
    assert result.exit_code == ExitCode.SUCCESS, result.message
    assert [s["name"] for s in report["stages"] if not s["ok"]] == []
    assert {"fetch", "baseline", "quantize", "evaluate", "upload"} <= {s["name"] for s in report["stages"]}
    assert (root / "out" / "report.html").is_file()
    comparison = report["comparison"]
    assert comparison["compressionRatio"] >= 3.3  # int8 weights (int16 on the 4 % in depthwise/stem convs)
    assert comparison["agreement"] >= MIN_AGREEMENT, comparison


def test_the_report_tells_fp32_near_ties_from_inputs_fp32_decides(
    static_run: tuple[Any, dict[str, Any], Path],
) -> None:
    """Wallpaper tiles are mostly outside ImageNet's classes: FP32 splits 57 of these 100 between two classes within
    0.05 probability (measured; 64 % of all 300), well past the 25 % at which the finding fires."""
    from edgequant.analysis import diagnostics as dg

    _result, report, _root = static_run
    findings = {f["check"]: f for f in report["analysis"]["diagnostics"]["findings"]}
    undecided = findings["fp32-undecided"]
    assert undecided["fired"], undecided
    evidence = undecided["evidence"]
    assert evidence["undecidedShare"] > dg.UNDECIDED_SHARE
    # flips concentrate where FP32 hesitates (500 photographs: 1.000 against 0.797 after edgequant's PTQ, 0.889
    # against 0.490 for the bare quantize_static): on ~40 decided and ~60 near-tie inputs the gap is many standard errors
    assert evidence["decidedAgreement"] > evidence["undecidedAgreement"], evidence
    assert any(w.startswith("fp32-undecided:") for w in report["warnings"]), report["warnings"]


def test_sixteen_bit_weights_are_reported_and_match_the_artifact(static_run: tuple[Any, dict[str, Any], Path]) -> None:
    import onnx

    result, report, _root = static_run
    notes = [n for n in report["notes"] if n.startswith("ptq: 16-bit weights")]
    assert len(notes) == 1, report["notes"]  # chosen or not, the report says which
    applied = notes[0].startswith("ptq: 16-bit weights for ")
    artifact = onnx.load(str(Path(result.results.artifact.uri.removeprefix("file://"))), load_external_data=False)
    types = {t.name: t.data_type for t in artifact.graph.initializer}
    int16 = [
        n.input[0]
        for n in artifact.graph.node
        if n.op_type == "DequantizeLinear" and types.get(n.input[0]) == onnx.TensorProto.INT16
    ]
    assert bool(int16) == applied
    if applied:  # EfficientNet-Lite0: the stem and the 16 depthwise convolutions (3x3 and 5x5)
        assert "20 convolutions" in notes[0] and len(int16) == 20


def _held_out_scores(notes: list[str]) -> tuple[list[Any], str]:
    """The held-out candidates (as the search's Scores) in the order scored, and the chosen label, from the ptq note."""
    from edgequant.analysis import post_training as pt

    note = next(n for n in notes if n.startswith("ptq: held-out top-1 agreement"))
    samples = int(re.search(r"on (\d+) calibration samples", note).group(1))  # type: ignore[union-attr]
    shown, chosen = note.split(": ", 2)[2].split("; chosen: ")
    scores = [
        pt.Score(m.group(1), float(m.group(2)), float(m.group(3)), samples=samples)
        for m in re.finditer(r"([\w+]+) ([0-9.]+) \((-?[0-9.]+|inf) dB\)", shown)
    ]
    return scores, chosen


#: The candidate-name tag of each technique in the chosen label.
_TAGS = {"cross-layer equalization": "cle", "16-bit weights": "w16", "adaptive rounding": "ar", "bias correction": "bc"}


def test_adaptive_rounding_is_reported_and_never_lowers_held_out_agreement(
    static_run: tuple[Any, dict[str, Any], Path],
) -> None:
    from edgequant.analysis import post_training as pt

    _result, report, _root = static_run
    notes = [n for n in report["notes"] if n.startswith("ptq: adaptive rounding")]
    assert len(notes) == 1, report["notes"]  # kept or not, the report says which
    # error feedback through the inputs' second moment: the 1x1 layers' output error well under round-to-nearest's
    # (0.32x on 500 photographs, 8-bit weights); 0.9 leaves room for 100 samples and 7-bit weights
    ratio = re.search(r"output error on the calibration inputs ([0-9.]+)x", notes[0])
    assert ratio is not None and float(ratio.group(1)) < 0.9, notes[0]
    scores, chosen = _held_out_scores(report["notes"])
    position = next(i for i, s in enumerate(scores) if s.name.endswith("+ar"))
    # the greedy search keeps a technique only when it beats the best candidate scored before it
    best_before = pt.best_candidate(scores[:position])
    gained = pt.best_candidate([best_before, scores[position]]) is scores[position]
    assert ("adaptive rounding" in chosen) == gained, (scores, chosen)
    # and what ships is that best or a candidate that beat it
    parts = chosen.split(" (ranges from")[0].split(" + ")
    shipped = next(s for s in scores if s.name == "+".join([parts[0], *(_TAGS[p] for p in parts[1:])]))
    assert shipped is best_before or pt.best_candidate([best_before, shipped]) is shipped, (scores, chosen)


def test_the_real_int8_artifact_runs_on_onnx_runtime(
    static_run: tuple[Any, dict[str, Any], Path], lite0_onnx: RealModel, model_inputs: Callable[..., np.ndarray]
) -> None:
    import onnx

    from edgequant.backends.onnxruntime.predictor import OrtPredictor

    result, _report, _root = static_run
    artifact = Path(result.results.artifact.uri.removeprefix("file://"))
    ops = {node.op_type for node in onnx.load(str(artifact), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    logits = OrtPredictor(artifact).predict(model_inputs(lite0_onnx, "evaluation", 20))
    assert logits.shape == (20, 1000) and np.isfinite(logits).all()


def test_the_logits_leave_the_artifact_in_float_and_the_report_says_what_that_gained(
    static_run: tuple[Any, dict[str, Any], Path],
) -> None:
    """quantize_static would round Lite0's logits onto 256 levels (steps of about 0.05); ptq.floatOutputs (default)
    lets the classifier write its float result, and the report gives the held-out agreement both ways."""
    import onnx

    result, report, _root = static_run
    graph = onnx.load(result.results.artifact.uri.removeprefix("file://"), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    last = producer[graph.output[0].name]
    assert last.op_type == "Identity" and producer[last.input[0]].op_type == "Gemm", last
    note = next(n for n in report["notes"] if n.startswith("ptq: model outputs left in float"))
    figures = re.findall(r"agreement ([0-9.]+) \(([-0-9.]+) dB\).* ([0-9.]+) \(([-0-9.]+) dB\)", note)
    assert figures, note
    _float_agreement, float_db, _rounded_agreement, rounded_db = (float(v) for v in figures[0])
    assert float_db >= rounded_db, note  # the same model less one rounding of its output: never noisier
