"""The state one run carries from stage to stage. Stages read what earlier stages left and add their part."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.report.schema import AnalysisReport, DataFinding, Finding

if TYPE_CHECKING:  # types of what later stages fill in: a run that fails early never loads numpy, PIL or the analysis
    from edgequant.analysis.gate import GateVerdict
    from edgequant.analysis.layer_tools import LayerTool
    from edgequant.api.targets import TargetChoice
    from edgequant.backends.base import Backend, QuantizedArtifact, TensorContract
    from edgequant.data.datasets import DatasetIndex
    from edgequant.data.loader import PreparedSet
    from edgequant.storage import Stores, UploadedObject
    from edgequant.worker.evaluate import EvaluationResult
    from edgequant.worker.progress import Progress


@dataclass
class ModelRecord:
    """One model the run measured: the FP32 baseline or the quantized artifact."""

    path: Path
    format: str
    """e.g. tflite-fp32, tflite-int8, keras."""
    size_bytes: int
    input: TensorContract
    evaluation: EvaluationResult | None = None


@dataclass
class StageRecord:
    name: str
    seconds: float
    ok: bool


@dataclass
class AnalysisState:
    """What the analysis stages (worker/stages/analysis.py) keep between them."""

    report: AnalysisReport = field(default_factory=AnalysisReport)
    tool: LayerTool | None = None
    tool_problem: str = ""
    tool_tried: bool = False
    failure: str = ""
    """Set when the gate must fail the run (onFailure: fail): the message, with the reasons."""

    def sensitive_layers(self, limit: int = 10) -> list[str]:
        """Flagged layers, most sensitive first, for status.results."""
        return self.report.sensitivity.flagged[:limit] if self.report.sensitivity is not None else []

    def sections(self) -> AnalysisReport | None:
        r = self.report
        return r if any(x is not None for x in (r.sensitivity, r.mixed_precision, r.gate, r.diagnostics)) else None


@dataclass
class RunContext:
    """The state of one run: the spec and its services, then what each stage leaves for the later ones."""

    spec: api.QuantizationJobSpec
    workdir: Path
    stores: Stores
    progress: Progress
    job_name: str | None = None
    job_namespace: str | None = None

    # fetch
    model_path: Path | None = None
    source_size_bytes: int | None = None
    indexes: dict[str, DatasetIndex] = field(default_factory=dict)
    """calibration / evaluation / training -> the dataset as listed."""
    # validate-data
    sets: dict[str, PreparedSet] = field(default_factory=dict)
    findings: list[DataFinding] = field(default_factory=list)
    # baseline
    backend: Backend | None = None
    baseline: ModelRecord | None = None
    # quantize
    method: api.Method | None = None
    """The method that produced ``artifact`` (a degrade ladder may change it)."""
    artifact: QuantizedArtifact | None = None
    # evaluate
    quantized: ModelRecord | None = None
    agreement: float | None = None
    # gate
    verdict: GateVerdict | None = None
    degraded: bool = False
    # sensitivity / select / diagnose (worker/stages/analysis.py)
    analysis: AnalysisState = field(default_factory=AnalysisState)
    # spec.target (api/targets.py): what it filled in, and the target check's findings
    target_choices: list[TargetChoice] = field(default_factory=list)
    target_findings: list[Finding] = field(default_factory=list)
    # upload
    uploads: dict[str, UploadedObject] = field(default_factory=dict)
    """artifact / report / side files -> where they went, with sha256."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.SUCCESS
    message: str = ""
    """The one-line outcome (or the error with its fix)."""

    @property
    def metric(self) -> api.Metric:
        return self.spec.evaluation.metric if self.spec.evaluation else api.Metric.TOP1

    def log(self, message: str) -> None:
        self.progress.log(message)

    def output_uri(self, name: str) -> str:
        prefix = self.spec.output.uri
        return (prefix if prefix.endswith("/") else prefix + "/") + name
