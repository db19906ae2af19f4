"""The state one run carries from stage to stage. Stages read what earlier stages left and add their part."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgequant.analysis.gate import GateVerdict
from edgequant.analysis.schema import Finding as AnalysisFinding
from edgequant.analysis.stages import AnalysisState
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.api.targets import TargetChoice
from edgequant.backends.base import Backend, QuantizedArtifact, TensorContract
from edgequant.data.datasets import DatasetIndex
from edgequant.data.loader import PreparedSet
from edgequant.data.validation import Finding
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
class RunContext:
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
    findings: list[Finding] = field(default_factory=list)
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
    # sensitivity / select / diagnose (edgequant.analysis.stages)
    analysis: AnalysisState = field(default_factory=AnalysisState)
    # spec.target (api/targets.py): what it filled in, and the target check's findings
    target_choices: list[TargetChoice] = field(default_factory=list)
    target_findings: list[AnalysisFinding] = field(default_factory=list)
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
