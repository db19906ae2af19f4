"""The schema of report.json: one pydantic model per section, the only definition of each.

``Report`` is the whole document (built by ``report/build.py``, rendered by ``report/html.py``, documented in
docs/report.md); ``AnalysisReport`` is its ``analysis`` section (documented field by field in docs/analysis.md,
whose tables ``markdown_tables`` generates). One ``GateReport`` serves both ``gate`` and ``analysis.gate``, one
``Finding`` every output and target check (diagnostics, the Edge TPU op check), one ``DataFinding`` every data
validation rule. Wire names are camelCase like the rest of the API; readers must ignore keys they do not know.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import Field

from edgequant.api import v1alpha1 as api
from edgequant.api.v1alpha1 import ApiModel, Method, MixedPrecisionMode, OnFailure, SensitivityMode

REPORT_NAME = "report.json"
REPORT_KIND = "QuantizationReport"


class LayerSensitivity(ApiModel):
    """One layer of the source model and what quantizing it costs."""

    layer: str = Field(..., description="Layer name in the source model (Keras layer name, ONNX node name).")
    rank: int = Field(..., ge=1, description="1 = most sensitive in this ranking.")
    accuracy: float | None = Field(None, description="Exhaustive: accuracy with only this layer quantized.")
    accuracy_delta: float | None = Field(
        None, description="Exhaustive: reference accuracy minus `accuracy` (positive = this layer costs accuracy)."
    )
    injected_sqnr_db: float | None = Field(
        None,
        description="Fast: SQNR of the noise this layer adds on top of the noise it receives (lower = more sensitive).",
    )
    sqnr_db: float | None = Field(
        None, description="Fast: SQNR of the layer output, float model vs quantized model on the same inputs."
    )
    mse: float | None = Field(None, description="Fast: mean squared error of the layer output, float vs quantized.")
    cosine: float | None = Field(None, description="Fast: cosine similarity of the layer output, float vs quantized.")
    flagged: bool = Field(
        False, description="Exhaustive: accuracyDelta above the threshold. Fast: injectedSqnrDb below fastFlagSqnrDb."
    )


class RankingAgreement(ApiModel):
    """How well the fast ranking predicts the exhaustive one (only when both ran)."""

    k: int = Field(..., description="Size of the compared top lists.")
    top_k_overlap: int = Field(..., description="Layers present in both top-k lists.")
    spearman: float | None = Field(
        None, description="Spearman rank correlation over all layers (None with fewer than 2 layers)."
    )
    fast_top: list[str] = Field(default_factory=list, description="Fast ranking's top k.")
    exhaustive_top: list[str] = Field(default_factory=list, description="Exhaustive ranking's top k.")


class SensitivityReport(ApiModel):
    mode: SensitivityMode = Field(
        ..., description="Which ranking `layers` holds: exhaustive (accuracy per layer) or fast (tensor error)."
    )
    threshold: float = Field(
        ...,
        description="mixedPrecision.sensitivityThreshold: accuracy delta above which a layer is flagged (exhaustive).",
    )
    fast_flag_sqnr_db: float | None = Field(
        None, description="Fast mode flags layers whose injected SQNR is below this."
    )
    reference_accuracy: float | None = Field(
        None,
        description="Accuracy with nothing quantized, the reference of accuracyDelta (1.0 on unlabeled data: layers are then scored by top-1 agreement with FP32).",
    )
    layers: list[LayerSensitivity] = Field(
        default_factory=list, description="Every quantizable layer, most sensitive first."
    )
    fast: list[LayerSensitivity] = Field(
        default_factory=list, description="The fast ranking too, when mode is exhaustive (for comparison)."
    )
    agreement: RankingAgreement | None = Field(None, description="Fast vs exhaustive, when both ran.")
    seconds: float = Field(0.0, description="Wall time of the analysis.")
    quantize_runs: int = Field(
        0, description="Quantize+evaluate runs it took (exhaustive: one per layer; fast: none beyond the probe)."
    )

    @property
    def flagged(self) -> list[str]:
        return [entry.layer for entry in self.layers if entry.flagged]


class Trial(ApiModel):
    """One quantized candidate that was built and scored."""

    rung: Literal["full", "more-samples", "calibration-algorithm", "pinned", "qat", "float16"] = Field(
        ...,
        description="Which step of the ladder built it: full (the spec's method, every layer quantized), more-samples and calibration-algorithm (onFailure remedy: calibrated again with more samples, or another range estimator), pinned (the spec's method with layers kept in float: manual pins or one step of the auto search), qat (onFailure remedy: the family's QAT method on the training data), float16 (the fallback method, or the spec's method converted to float16 where its family has no float16 method).",
    )
    method: Method = Field(..., description="Method that built it.")
    changes: dict[str, str] = Field(
        default_factory=dict, description="Spec values this rung changed (onFailure remedy), by spec path."
    )
    pinned: list[str] = Field(default_factory=list, description="Layers kept in float.")
    accuracy: float | None = Field(None, description="Accuracy on the evaluation set.")
    size_bytes: int = Field(..., description="Artifact size.")
    accuracy_drop: float | None = Field(None, description="Baseline accuracy minus accuracy.")
    compression_ratio: float | None = Field(None, description="Baseline size / size.")
    agreement: float | None = Field(None, description="Share of evaluation samples whose top-1 class matches FP32's.")
    sqnr_db: float | None = Field(None, description="SQNR of its outputs against FP32's over the evaluation set, dB.")
    passed: bool = Field(..., description="Met the whole acceptance budget.")
    reasons: list[str] = Field(default_factory=list, description="Why it missed the budget.")
    chosen: bool = Field(
        False, description="The candidate the gate judged: published, unless onFailure fail stopped the run."
    )


class MixedPrecisionReport(ApiModel):
    mode: MixedPrecisionMode = Field(
        ..., description="off, manual or auto as in the spec (auto also when the degrade ladder searched)."
    )
    pinned: list[str] = Field(default_factory=list, description="Layers kept in float in the published artifact.")
    max_pinned_layers: int = Field(..., description="The cap auto mode respected.")
    met_accuracy_budget: bool | None = Field(
        None,
        description="Auto: whether pinning met the fidelity budgets (maxAccuracyDrop with labels, minAgreement, minSqnrDb).",
    )
    accuracy: float | None = Field(None, description="Accuracy of the chosen mixed artifact.")
    size_bytes: int | None = Field(None, description="Size of the chosen mixed artifact.")
    note: str = Field("", description="Why pinning was skipped or stopped, in words.")


class GateReport(ApiModel):
    passed: bool = Field(..., description="The published artifact met the budget.")
    reasons: list[str] = Field(default_factory=list, description="Why not, naming the spec field and the numbers.")
    accuracy_drop: float | None = Field(None, description="Baseline minus published accuracy.")
    compression_ratio: float | None = Field(None, description="Baseline size / published size.")
    agreement: float | None = Field(None, description="Published model's top-1 agreement with FP32.")
    sqnr_db: float | None = Field(None, description="Published model's output SQNR against FP32, dB.")
    max_accuracy_drop: float = Field(..., description="acceptance.maxAccuracyDrop.")
    accuracy_budget_applied: bool = Field(
        True,
        description="False when accuracy was not measured (evaluation data without labels, or none): maxAccuracyDrop was not applied.",
    )
    min_agreement: float | None = Field(None, description="acceptance.minAgreement.")
    min_sqnr_db: float | None = Field(None, description="acceptance.minSqnrDb.")
    min_compression_ratio: float = Field(..., description="acceptance.minCompressionRatio.")
    on_failure: OnFailure = Field(..., description="acceptance.onFailure.")
    degraded: bool = Field(False, description="The published artifact is not the first choice or misses the budget.")
    trials: list[Trial] = Field(
        default_factory=list,
        description="Every candidate built, in order (the degrade or remedy ladder and auto mixed precision).",
    )
    rung: str | None = Field(
        None, description="The rung of the chosen candidate (the one that passed, or the best found)."
    )
    skipped: list[str] = Field(default_factory=list, description="onFailure remedy: rungs not tried, each with why.")


class OutputComparison(ApiModel):
    """FP32 vs quantized raw outputs on the same inputs."""

    samples: int = Field(..., description="Inputs compared.")
    mse: float = Field(..., description="Mean squared error of the raw outputs.")
    sqnr_db: float = Field(
        ..., description="SQNR of the quantized outputs against FP32's, in dB (healthy INT8: 30-45)."
    )
    cosine: float = Field(..., description="Mean per-sample cosine similarity of the raw outputs.")
    max_abs: float = Field(..., description="Largest absolute difference.")
    top1_agreement: float = Field(..., description="Share of inputs where both models predict the same class.")


class Histogram(ApiModel):
    edges: list[float] = Field(..., description="Bin edges (len = bins + 1), shared by both models.")
    fp32: list[int] = Field(..., description="FP32 output values per bin.")
    quantized: list[int] = Field(..., description="Quantized output values per bin.")


class Finding(ApiModel):
    check: Literal[
        "output-mismatch",
        "output-collapsed",
        "output-clipped",
        "fp32-undecided",
        "preprocessing-mismatch",
        "input-range",
        "slower-than-float",
        "edgetpu-unsupported-op",
        "edgetpu-float-tensor",
        "edgetpu-dynamic-shape",
    ] = Field(
        ...,
        description="Which diagnostic (edgetpu-*: the coral-edgetpu target's op check, in the report's target section).",
    )
    fired: bool = Field(..., description="True when the problem was detected.")
    message: str = Field(..., description="What was measured, in one or two sentences.")
    evidence: dict[str, float] = Field(default_factory=dict, description="The numbers behind the verdict.")
    fixes: list[str] = Field(default_factory=list, description="What to try, in the reference order.")


class DiagnosticsReport(ApiModel):
    outputs: OutputComparison | None = Field(None, description="Raw output comparison.")
    findings: list[Finding] = Field(default_factory=list, description="Every check run, fired or quiet.")
    distribution: Histogram | None = Field(None, description="Raw output values of both models, for the plot.")

    @property
    def fired(self) -> list[Finding]:
        return [f for f in self.findings if f.fired]


class AnalysisReport(ApiModel):
    """Everything edgequant.analysis adds to report.json, under the key ``analysis``."""

    sensitivity: SensitivityReport | None = Field(
        None, description="Per-layer sensitivity (absent when mixedPrecision.sensitivity is off)."
    )
    mixed_precision: MixedPrecisionReport | None = Field(None, description="Layers kept in float and what that bought.")
    gate: GateReport | None = Field(None, description="The acceptance verdict and the degrade ladder.")
    diagnostics: DiagnosticsReport | None = Field(None, description="FP32 vs quantized output checks with fixes.")


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


#: Files named per data finding; its count says how many there were.
MAX_FILES_NAMED = 20


class DataFinding(ApiModel):
    """One data validation rule's verdict on one dataset, naming the files involved (report.json ``findings``)."""

    severity: Severity = Field(..., description="error fails the run; warning is reported.")
    code: str = Field(..., description="Stable kebab-case rule id, e.g. too-few-samples, missing-classes, noise.")
    dataset: str = Field(..., description="calibration, evaluation or training.")
    message: str = Field(..., description="What is wrong and how to fix it.")
    files: list[str] = Field(
        default_factory=list, description=f"Files involved (at most {MAX_FILES_NAMED}), relative to the dataset root."
    )
    count: int = Field(0, description="How many files the finding covers (may exceed len(files)).")


class JobRef(ApiModel):
    name: str | None = Field(None, description="QuantizationJob name, when the worker was given the whole object.")
    namespace: str | None = Field(None, description="Its namespace.")


class Outcome(ApiModel):
    succeeded: bool = Field(..., description="True when the artifact and this report were published (exit code 0).")
    exit_code: int = Field(..., description="Worker exit code (edgequant.api.exitcodes).")
    reason: str = Field(..., description="CamelCase reason of the exit code.")
    message: str = Field(..., description="Summary, or the error with its fix.")
    degraded: bool = Field(
        False, description="Published although the acceptance budget was missed (onFailure: degrade)."
    )


class SourceModelInfo(ApiModel):
    uri: str
    format: str | None
    size_bytes: int | None = Field(None, description="Size of the model as given (file, or folder total).")


class TensorInfo(ApiModel):
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None


class ModelReport(ApiModel):
    format: str = Field(..., description="tflite-fp32 for the baseline, the method name for the artifact.")
    size_bytes: int
    input: TensorInfo
    evaluated_samples: int = 0
    top1: float | None = None
    top5: float | None = None
    accuracy: float | None = Field(None, description="The spec's metric (evaluation.metric).")
    latency_ms_median: float | None = Field(None, description="Median single-image latency on the worker's CPU.")
    latency_ms_p90: float | None = None
    latency_runs: int = 0
    fed_range: list[float] | None = Field(None, description="[min, max] of the values actually fed to the model.")


class Comparison(ApiModel):
    metric: api.Metric
    compression_ratio: float | None = Field(None, description="Baseline size / quantized size.")
    accuracy_drop: float | None = Field(None, description="Baseline accuracy minus quantized accuracy.")
    agreement: float | None = Field(
        None, description="Share of evaluation samples where both models predict the same class."
    )
    sqnr_db: float | None = Field(
        None, description="SQNR of the quantized outputs against FP32's over the evaluation set, dB."
    )
    latency_speedup: float | None = Field(None, description="Baseline median latency / quantized median latency.")


class DatasetReport(ApiModel):
    role: str = Field(..., description="calibration, evaluation or training.")
    uri: str
    layout: api.DatasetLayout
    available: int = Field(..., description="Samples in the dataset.")
    requested: int = Field(..., description="Samples the spec asked for.")
    used: int = Field(..., description="Samples decoded and used.")
    labeled: bool = Field(
        True, description="False: the data has no labels (accuracy n/a; agreement and SQNR with FP32 still measured)."
    )
    class_counts: dict[str, int] = Field(default_factory=dict, description="Used samples per class name.")


class UploadInfo(ApiModel):
    uri: str
    sha256: str
    size_bytes: int


class StageReport(ApiModel):
    name: str
    seconds: float
    ok: bool


class Environment(ApiModel):
    edgequant: str
    python: str
    platform: str
    cpu_count: int | None
    frameworks: dict[str, str] = Field(default_factory=dict)


class TargetChoiceReport(ApiModel):
    field: str = Field(..., description="Spec path the target filled in.")
    value: str = Field(..., description="The value it chose.")
    reason: str = Field(..., description="The rule it follows, with its source (docs/targets.md).")


class TargetReport(ApiModel):
    name: api.Target = Field(..., description="spec.target.")
    title: str = Field(..., description="The device in words.")
    runtime: str = Field(..., description="What runs the model on the device.")
    choices: list[TargetChoiceReport] = Field(
        default_factory=list, description="Every value the target filled in (what the spec left out), and why."
    )
    findings: list[Finding] = Field(
        default_factory=list,
        description="The target's compatibility checks (coral-edgetpu: ops against the Edge TPU's supported operations), fired or quiet, with fixes.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the figures mean for the target: latency is measured on the worker's CPU, not the target; the Edge TPU compiler is not run.",
    )


class Report(ApiModel):
    api_version: str = Field(api.API_VERSION)
    kind: str = Field(REPORT_KIND)
    created_at: str
    job: JobRef
    outcome: Outcome
    method: api.Method = Field(..., description="The method the spec asked for.")
    published_method: api.Method | None = Field(None, description="The method that produced the artifact.")
    backend: str | None = None
    model: SourceModelInfo
    input_contract: api.ArtifactInputContract | None = Field(None, description="What the artifact expects as input.")
    baseline: ModelReport | None = None
    quantized: ModelReport | None = None
    comparison: Comparison | None = None
    gate: GateReport | None = Field(
        None,
        description="The acceptance verdict: the same object as analysis.gate when the select stage judged (it always does in a full run).",
    )
    artifact: UploadInfo | None = None
    side_files: list[UploadInfo] = Field(default_factory=list)
    datasets: list[DatasetReport] = Field(default_factory=list)
    findings: list[DataFinding] = Field(
        default_factory=list, description="The data validation rules' findings (validate-data, baseline)."
    )
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    stages: list[StageReport] = Field(default_factory=list)
    analysis: AnalysisReport | None = Field(
        None, description="Sensitivity, mixed precision, the gate's ladder and diagnostics (docs/analysis.md)."
    )
    target: TargetReport | None = Field(
        None, description="spec.target: what it chose and why, its checks (docs/targets.md)."
    )
    environment: Environment
    spec: dict[str, Any] = Field(..., description="The spec as run (it holds Secret names, never keys).")


#: The models docs/analysis.md documents, in its order.
DOCUMENTED = (
    AnalysisReport,
    SensitivityReport,
    LayerSensitivity,
    RankingAgreement,
    MixedPrecisionReport,
    GateReport,
    Trial,
    DiagnosticsReport,
    OutputComparison,
    Finding,
    Histogram,
)


def markdown_tables() -> str:
    """The schema tables of docs/analysis.md (``python -m edgequant.report.schema`` prints them)."""
    import enum
    import types
    import typing

    from pydantic.alias_generators import to_camel

    def name(t: object) -> str:
        origin = typing.get_origin(t)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(t)
            return " or ".join(name(a) for a in args if a is not type(None)) + (
                " (optional)" if type(None) in args else ""
            )
        if origin is list:
            return f"list of {name(typing.get_args(t)[0])}"
        if origin is dict:
            return "object"
        if origin is typing.Literal:
            return " / ".join(f"`{a}`" for a in typing.get_args(t))
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return " / ".join(f"`{m.value}`" for m in t)
        return getattr(t, "__name__", str(t))

    out = []
    for model in DOCUMENTED:
        out += [f"#### {model.__name__}", "", "| field | type | meaning |", "|---|---|---|"]
        out += [
            f"| `{to_camel(n)}` | {name(f.annotation)} | {f.description or ''} |" for n, f in model.model_fields.items()
        ]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_tables())
