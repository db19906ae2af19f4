"""QuantizationSweep v1alpha1: one model, one set of data, a matrix of targets x methods x calibration algorithms.

A sweep is expanded into cells (``edgequant.sweep.plan``); each cell runs as one QuantizationJob (a child in the
cluster, an in-process run with ``edgequant run``), and the sweep's status gathers the children's figures into a
table of candidates, their Pareto front and one recommendation per target. The CRD is generated from these models.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgequant.api import v1alpha1 as api
from edgequant.api.targets import TARGETS

KIND = "QuantizationSweep"
PLURAL = "quantizationsweeps"
SINGULAR = "quantizationsweep"
SHORT_NAMES = ["qs"]
MAX_CELLS = 64


class SweepPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class SweepCondition(enum.StrEnum):
    COMPLETED = "Completed"
    """True once every cell reached a terminal phase and the combined report was written (or could not be)."""
    FAILED = "Failed"
    """True when the sweep itself cannot run (an invalid matrix), not when a cell fails."""


TargetName = Annotated[str, Field(max_length=api.MAX_SHORT)]


class Matrix(api.ApiModel):
    """The axes of the sweep; a cell is one combination. Any axis may be omitted (but not targets and methods both)."""

    targets: list[TargetName] = Field(
        default_factory=list,
        max_length=16,
        description="Deployment targets; a target without methods in the matrix expands to its default methods.",
    )
    methods: list[api.Method] = Field(
        default_factory=list,
        max_length=10,
        description="Methods tried for every target (or on their own when no target is given). Methods that do not take the model's format are skipped and listed in status.skipped.",
    )
    calibration_algorithms: list[api.CalibrationAlgorithm] = Field(
        default_factory=list,
        max_length=3,
        description="Calibration algorithms tried for each calibrated method (tflite-int8, onnx-static, tensorrt-int8, tensorrt-mixed); omitted: calibration.algorithm.",
    )

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets: list[str]) -> list[str]:
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown target(s) {', '.join(unknown)}: use {', '.join(TARGETS)}")
        if len(set(targets)) != len(targets):
            raise ValueError("a target is listed twice")
        return targets

    @model_validator(mode="after")
    def _some_axis(self) -> Matrix:
        if not self.targets and not self.methods:
            raise ValueError("give matrix.targets (each expands to its default methods) or matrix.methods, or both")
        if len(set(self.methods)) != len(self.methods) or len(set(self.calibration_algorithms)) != len(
            self.calibration_algorithms
        ):
            raise ValueError("a method or calibration algorithm is listed twice")
        return self


class QuantizationSweepSpec(api.ApiModel):
    model: api.ModelSource = Field(..., description="The FP32 model and its input contract, shared by every cell.")
    matrix: Matrix = Field(..., description="Targets x methods x calibration algorithms; one QuantizationJob per cell.")
    calibration: api.Calibration | None = Field(
        None, description="Representative data for the calibrated methods (required when the matrix has one)."
    )
    training: api.Training | None = Field(None, description="Training data for QAT methods.")
    evaluation: api.Evaluation | None = Field(
        None, description="Held-out data every cell is scored on; labeled, so that candidates compare by accuracy drop."
    )
    mixed_precision: api.MixedPrecision = Field(
        default_factory=api.MixedPrecision, description="Per-layer analysis and pinned layers, the same in every cell."
    )
    acceptance: api.Acceptance = Field(
        default_factory=api.Acceptance,
        description="The budget a candidate must meet to be recommended (each cell's gate).",
    )
    output: api.Output = Field(
        ...,
        description="Prefix of the sweep: each cell writes under <uri><cell>/, the combined report.html and sweep.json land at <uri>.",
    )
    storage: api.Storage = Field(
        default_factory=api.Storage, description="Object-storage connection; never holds keys."
    )
    resources: api.Resources = Field(
        default_factory=api.Resources, description="Compute for each cell's quantizer pod."
    )
    scheduling: api.Scheduling = Field(
        default_factory=api.Scheduling, description="Placement of each cell's quantizer pod."
    )
    execution: api.Execution = Field(
        default_factory=api.Execution, description="Image and batch Job knobs of each cell."
    )
    onnx: api.OnnxOptions = Field(
        default_factory=api.OnnxOptions, description="ONNX Runtime options of the onnx-* cells."
    )
    tensorrt: api.TensorRTOptions = Field(
        default_factory=api.TensorRTOptions, description="TensorRT options of the tensorrt-* cells."
    )
    ptq: api.PostTraining = Field(
        default_factory=api.PostTraining, description="Post-training techniques of the onnx-static cells."
    )
    concurrency: int = Field(
        2, ge=1, le=MAX_CELLS, description="Cells running at the same time (the operator's own cap still applies)."
    )

    @field_validator("output")
    @classmethod
    def _folder(cls, output: api.Output) -> api.Output:
        if not output.uri.endswith("/"):
            raise ValueError("output.uri of a sweep is a prefix (it ends in '/'): each cell writes under it")
        return output


class Candidate(api.ApiModel):
    """One cell's outcome: what it tried and what it measured."""

    name: str = Field(..., max_length=api.MAX_NAME, description="The cell's QuantizationJob.")
    target: str | None = Field(None, max_length=api.MAX_SHORT, description="Deployment target of the cell.")
    method: str = Field(..., max_length=api.MAX_SHORT, description="Method the artifact was made with.")
    options: dict[str, Annotated[str, Field(max_length=api.MAX_SHORT)]] = Field(
        default_factory=dict,
        max_length=16,
        description="What distinguishes the cell beyond its method (calibration algorithm).",
    )
    phase: str = Field("Pending", max_length=api.MAX_SHORT, description="The cell's phase.")
    size_bytes: int | None = Field(None, description="Artifact size in bytes.")
    compression_ratio: float | None = Field(None, description="FP32 size / artifact size.")
    accuracy: float | None = Field(None, description="Quantized accuracy on the evaluation set.")
    accuracy_drop: float | None = Field(None, description="FP32 minus quantized accuracy.")
    latency_ms: float | None = Field(
        None, description="Median single-image latency on the worker's CPU (not on the target), ms."
    )
    passed_gate: bool = Field(False, description="The cell succeeded within the acceptance budget (not degraded).")
    artifact_uri: str | None = Field(None, max_length=api.MAX_STATUS_URI, description="The cell's artifact.")
    report_uri: str | None = Field(None, max_length=api.MAX_STATUS_URI, description="The cell's report.json.")
    message: str | None = Field(None, max_length=1024, description="Why the cell failed, when it did.")


class Recommendation(api.ApiModel):
    target: str = Field(
        ..., max_length=api.MAX_SHORT, description="Deployment target ('any' when the matrix has no targets)."
    )
    candidate: str | None = Field(
        None, max_length=api.MAX_NAME, description="The recommended cell; empty when no cell met the budget."
    )
    method: str | None = Field(None, max_length=api.MAX_SHORT, description="Its method.")
    reason: str = Field("", max_length=1024, description="Why this candidate (or why none).")


class SkippedCell(api.ApiModel):
    target: str | None = Field(None, max_length=api.MAX_SHORT, description="Target of the skipped cell.")
    method: str = Field(..., max_length=api.MAX_SHORT, description="Method of the skipped cell.")
    reason: str = Field(..., max_length=1024, description="Why it was not run.")


class QuantizationSweepStatus(api.ApiModel):
    phase: SweepPhase | None = Field(None, description="Pending, Running, Completed or Failed (an invalid sweep).")
    observed_generation: int | None = Field(None, description="Spec generation the status describes.")
    conditions: list[api.Condition] = Field(
        default_factory=list, max_length=8, description="Completed and Failed, keyed by type."
    )
    cells: int | None = Field(None, description="Cells in the matrix.")
    finished: int | None = Field(None, description="Cells in a terminal phase.")
    passed: int | None = Field(None, description="Cells that met the budget.")
    candidates: list[Candidate] = Field(default_factory=list, max_length=MAX_CELLS, description="One row per cell.")
    pareto_front: list[Annotated[str, Field(max_length=api.MAX_NAME)]] = Field(
        default_factory=list,
        max_length=MAX_CELLS,
        description="Cells no other cell beats on size, accuracy drop and latency at once.",
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list, max_length=16, description="The recommended candidate per target."
    )
    skipped: list[SkippedCell] = Field(
        default_factory=list, max_length=MAX_CELLS, description="Matrix combinations not run, and why."
    )
    report_uri: str | None = Field(None, max_length=api.MAX_STATUS_URI, description="The combined report.html.")
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason of the phase.")
    message: str | None = Field(None, max_length=api.MAX_TEXT, description="Summary or failure message.")


class QuantizationSweep(api.ApiModel):
    """A QuantizationSweep manifest as users write it."""

    api_version: Literal["edgequant.io/v1alpha1"] = Field(..., alias="apiVersion", description="edgequant.io/v1alpha1")
    kind: Literal["QuantizationSweep"] = Field(..., description="QuantizationSweep")
    metadata: api.ObjectMeta = Field(default_factory=api.ObjectMeta, description="Standard object metadata.")
    spec: QuantizationSweepSpec = Field(..., description="The model, the data and the matrix of cells.")
    status: QuantizationSweepStatus | None = Field(None, description="Written by the operator (or by edgequant run).")
