"""QuantizationJob v1alpha1: the single source of truth for the spec and status.

The CRD in ``crds/`` is generated from these models (``edgequant crd``), the
operator renders Jobs from them, the worker and the local CLI run them. Wire
names are camelCase; Python attribute names are snake_case.

Cross-field rules are declared once in ``CROSS_FIELD_RULES``: each carries the
CEL expression the API server evaluates and the Python predicate that
``edgequant validate`` and the worker evaluate, with one shared message.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from edgequant.api import methods as catalogue
from edgequant.api.conditions import ConditionStatus, Phase

# Re-exported: the spec's field types, which callers read as ``v1alpha1.Method`` and so on.
from edgequant.api.methods import Method as Method
from edgequant.api.methods import MethodFamily as MethodFamily
from edgequant.api.methods import ModelFormat as ModelFormat
from edgequant.api.uri_credentials import embedded_credentials

GROUP = "edgequant.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "QuantizationJob"
PLURAL = "quantizationjobs"
SINGULAR = "quantizationjob"
SHORT_NAMES = ["qj"]
CATEGORIES = ["edgequant"]


# Bounds on every string and list, so that the API server refuses oversized objects before anything stores or
# evaluates them (CEL cost, etcd size, label and path limits); far above what a real job needs.
MAX_URI = 2048
MAX_NAME = 253  # a Kubernetes object name (DNS subdomain)
MAX_KEY = 253  # a Secret or ConfigMap data key
MAX_LABEL_KEY = 317  # prefix (253) + '/' + name (63)
MAX_LABEL_VALUE = 63
MAX_LAYER_NAME = 1024
MAX_LAYERS = 1000
MAX_SHORT = 128  # regions, quantities, reasons, timestamps, dtypes
MAX_IMAGE = 1024  # registry/repository:tag@digest
MAX_TEXT = 32768  # status messages (as metav1.Condition)
MAX_STATUS_URI = 4096  # artifact and report URIs: output.uri plus a file name
MAX_DIMENSION = 16384  # pixels (or channels) per input dimension
MAX_SAMPLES = 10_000_000

LayerName = Annotated[str, Field(max_length=MAX_LAYER_NAME)]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as it appears in a manifest (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- enums


#: File suffix -> format, used when ``model.format`` is omitted.
FORMAT_BY_SUFFIX: dict[str, ModelFormat] = {
    ".keras": ModelFormat.KERAS,
    ".h5": ModelFormat.H5,
    ".hdf5": ModelFormat.H5,
    ".onnx": ModelFormat.ONNX,
    ".pt": ModelFormat.TORCHSCRIPT,
    ".pth": ModelFormat.TORCHSCRIPT,
    ".torchscript": ModelFormat.TORCHSCRIPT,
    ".pt2": ModelFormat.TORCH_EXPORT,
}


def infer_model_format(uri: str) -> ModelFormat | None:
    """Guess the format from the URI; a path ending in '/' (a folder) is a SavedModel."""
    path = uri.split("?", 1)[0]
    if path.endswith("/"):
        return ModelFormat.SAVED_MODEL
    lowered = path.lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if lowered.endswith(suffix):
            return fmt
    return None


class Layout(enum.StrEnum):
    NHWC = "NHWC"
    NCHW = "NCHW"


class ColorOrder(enum.StrEnum):
    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"


class ResizeMode(enum.StrEnum):
    STRETCH = "stretch"
    CENTER_CROP = "center-crop"
    PAD = "pad"
    NONE = "none"


class Interpolation(enum.StrEnum):
    BILINEAR = "bilinear"
    NEAREST = "nearest"
    BICUBIC = "bicubic"


class DatasetLayout(enum.StrEnum):
    IMAGEFOLDER = "imagefolder"
    NPZ = "npz"


class DatasetLabels(enum.StrEnum):
    AUTO = "auto"
    NONE = "none"


class CalibrationAlgorithm(enum.StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class ClassBalancePolicy(enum.StrEnum):
    WARN = "warn"
    STRICT = "strict"
    IGNORE = "ignore"


class Metric(enum.StrEnum):
    TOP1 = "top1"
    TOP5 = "top5"


class MixedPrecisionMode(enum.StrEnum):
    OFF = "off"
    MANUAL = "manual"
    AUTO = "auto"


class SensitivityMode(enum.StrEnum):
    OFF = "off"
    FAST = "fast"
    EXHAUSTIVE = "exhaustive"


class FallbackPrecision(enum.StrEnum):
    FP16 = "fp16"
    FP32 = "fp32"


class OnFailure(enum.StrEnum):
    FAIL = "fail"
    DEGRADE = "degrade"
    REMEDY = "remedy"


class Target(enum.StrEnum):
    """Device the model is for: it fills in what the spec leaves out (docs/targets.md, api/targets.py)."""

    RPI_XNNPACK = "rpi-xnnpack"
    CORAL_EDGETPU = "coral-edgetpu"
    JETSON = "jetson"
    X86_AVX2 = "x86-avx2"
    X86_VNNI = "x86-vnni"
    ARM64_CPU = "arm64-cpu"
    GENERIC = "generic"


class TensorRTInt8Mode(enum.StrEnum):
    AUTO = "auto"
    IMPLICIT = "implicit"
    EXPLICIT = "explicit"


class CalibrationDevice(enum.StrEnum):
    GPU = "gpu"
    CPU = "cpu"


class PrecisionConstraints(enum.StrEnum):
    OBEY = "obey"
    PREFER = "prefer"


class OnnxQuantType(enum.StrEnum):
    """8-bit integer type of quantized ONNX tensors."""

    INT8 = "int8"
    UINT8 = "uint8"


class ReduceRange(enum.StrEnum):
    """Whether 8-bit quantization keeps one bit of headroom (7-bit values) against int8 overflow on x86."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class Technique(enum.StrEnum):
    """Whether a post-training technique runs: auto (kept only if it raises agreement on the held-out split), on, off."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Accelerator(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


_URI_SCHEMES = ("s3://", "file://")


def _check_uri(value: str) -> str:
    if not value.startswith(_URI_SCHEMES):
        raise ValueError(f"unsupported URI {value!r}: use s3://bucket/key or file:///absolute/path")
    if embedded_credentials(value) is not None:
        raise ValueError(
            f"the URI carries a credential ({embedded_credentials(value)}), which is not allowed: put it in a Secret and name it in spec.storage.credentialsSecret"
        )
    return value


# --------------------------------------------------------------------------- spec


class Scaling(ApiModel):
    """How pixels (0-255) become model input: ``x * scale + offset``, then ``(x - mean) / std`` per channel."""

    scale: float = Field(
        1.0 / 255.0, gt=0, description="Multiplier applied to 0-255 pixel values (1/255 maps to [0, 1])."
    )
    offset: float = Field(0.0, description="Added after scaling (-1 with scale 1/127.5 maps to [-1, 1]).")
    mean: list[float] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="Per-channel mean subtracted after scale/offset, in the scaled units.",
    )
    std: list[float] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="Per-channel standard deviation divided after subtracting mean; no zeros.",
    )

    @model_validator(mode="after")
    def _mean_std_pair(self) -> Scaling:
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("mean and std must have one value per channel each")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        problem = self.units_error()
        if problem:
            raise ValueError(problem)
        return self

    @property
    def pixel_range(self) -> tuple[float, float]:
        """[min, max] that scale and offset map the 0-255 pixels to (before mean/std)."""
        return self.offset, 255.0 * self.scale + self.offset

    def units_error(self) -> str:
        """mean/std that cannot be statistics of the scaled pixels: given in 0-255 units while scale maps to ~[0, 1].

        A dataset's mean lies inside the range of its values and its std is at most half that range's width, so a
        mean more than one width outside the scaled range, or a std above 4 widths (the normalised input would span
        under a quarter of a unit), is a units mistake, not a choice: the model would see a near-constant input.
        """
        if self.mean is None or self.std is None:
            return ""
        low, high = self.pixel_range
        width = high - low
        if all(low - width <= m <= high + width for m in self.mean) and all(abs(s) <= 4 * width for s in self.std):
            return ""
        mean = [round(m * self.scale + self.offset, 4) for m in self.mean]
        std = [round(s * self.scale, 4) for s in self.std]
        return (
            f"scaling.mean {self.mean} and std {self.std} are not in the units of the scaled pixels, which scale "
            f"{self.scale:.6g} and offset {self.offset:g} map to [{low:g}, {high:g}] (the model would see a near-constant "
            f"input): give mean and std in those units (mean {mean}, std {std}), or set scale to 1.0 to keep them in 0-255 units"
        )

    def units_warning(self) -> str:
        """mean/std that look like 0-1 units while scale keeps pixels in 0-255: possible statistics, so only a warning."""
        if self.mean is None or self.std is None:
            return ""
        low, high = self.pixel_range
        if high - low < 64 or any(abs(m) > 1 for m in self.mean) or any(abs(s) > 1 for s in self.std):
            return ""
        if all(m == 0 for m in self.mean) and all(abs(s) == 1 for s in self.std):
            return ""
        return (
            f"scaling.mean {self.mean} and std {self.std} look like 0-1 units, but scale {self.scale:.6g} keeps pixels in "
            f"[{low:g}, {high:g}], so normalised inputs reach {(high - min(self.mean)) / min(abs(s) for s in self.std):.0f}"
        )


class Resize(ApiModel):
    """How a decoded image is brought to the model's input size."""

    mode: ResizeMode = Field(
        ResizeMode.STRETCH,
        description="stretch to the input size, center-crop after scaling the short side, pad (letterbox), or none (images must already match).",
    )
    interpolation: Interpolation = Field(Interpolation.BILINEAR, description="Resampling filter.")


class InputContract(ApiModel):
    """The model input, shared by calibration, evaluation, QAT and the report's input contract."""

    shape: list[Annotated[int, Field(le=MAX_DIMENSION)]] = Field(
        ...,
        min_length=3,
        max_length=3,
        description="Input shape without the batch dimension, in layout order: [H, W, C] for NHWC, [C, H, W] for NCHW.",
    )
    layout: Layout = Field(Layout.NHWC, description="Tensor layout of the model input.")
    color_order: ColorOrder = Field(
        ColorOrder.RGB, description="Channel order the model was trained with; GRAY means one channel."
    )
    resize: Resize = Field(default_factory=Resize, description="Resizing of decoded images to the input size.")
    scaling: Scaling = Field(
        default_factory=Scaling, description="Pixel scaling and normalisation applied before the model."
    )

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if any(d <= 0 for d in shape):
            raise ValueError("every dimension must be a positive integer (omit the batch dimension)")
        return shape

    @property
    def channels(self) -> int:
        return self.shape[2] if self.layout is Layout.NHWC else self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[0] if self.layout is Layout.NHWC else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[1] if self.layout is Layout.NHWC else self.shape[2]

    @model_validator(mode="after")
    def _channels_match(self) -> InputContract:
        c = self.channels
        if c not in (1, 3):
            raise ValueError(
                f"the channel dimension is {c}; edgequant handles 1 (GRAY) or 3 (RGB/BGR) channel images — check shape and layout"
            )
        if (c == 1) != (self.color_order is ColorOrder.GRAY):
            raise ValueError(
                f"colorOrder {self.color_order.value} does not match {c} channel(s): use GRAY for 1 channel, RGB or BGR for 3"
            )
        for name in ("mean", "std"):
            values = getattr(self.scaling, name)
            if values is not None and len(values) not in (1, c):
                raise ValueError(f"scaling.{name} has {len(values)} values; give 1 or {c}")
        return self


class ModelSource(ApiModel):
    uri: str = Field(
        ...,
        max_length=MAX_URI,
        description="Where the FP32 model is: s3://bucket/key or file:///path. A SavedModel is a folder: end the URI with '/'.",
    )
    format: ModelFormat | None = Field(
        None,
        description="Model format; inferred from the file suffix when omitted (.keras, .h5, .onnx, .pt/.pth TorchScript, .pt2 torch.export, trailing '/' SavedModel).",
    )
    input: InputContract = Field(
        ..., description="The input contract shared by calibration, evaluation and the report."
    )
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        max_length=64,
        description="SHA-256 of the model file (64 hex digits), verified after download before the model is loaded; a mismatch fails the job (InvalidInput). Single files only, not a SavedModel folder.",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return _check_uri(v)

    @property
    def resolved_format(self) -> ModelFormat | None:
        return self.format or infer_model_format(self.uri)


class Dataset(ApiModel):
    uri: str = Field(
        ...,
        max_length=MAX_URI,
        description="Dataset location: a folder (imagefolder: <class>/<image>, or images directly in it when unlabeled) or an .npz file with arrays x and (optionally) y.",
    )
    layout: DatasetLayout = Field(
        DatasetLayout.IMAGEFOLDER,
        description="imagefolder (<class>/<image> files) or npz (arrays x: images, y: integer labels).",
    )
    labels: DatasetLabels = Field(
        DatasetLabels.AUTO,
        description="auto: labeled when the data has them (class folders, npz y), unlabeled otherwise (images directly in the folder, npz without y); none: ignore any labels (evaluation then measures agreement with FP32, not accuracy).",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return _check_uri(v)


class Calibration(ApiModel):
    dataset: Dataset = Field(..., description="Representative, unaugmented data covering every class.")
    samples: int = Field(
        500,
        ge=1,
        le=100000,
        description="Samples drawn (balanced across classes, deterministic); 500-1000 recommended.",
    )
    min_samples: int = Field(100, ge=1, le=100000, description="Fewer usable samples than this fails the job.")
    algorithm: CalibrationAlgorithm = Field(
        CalibrationAlgorithm.MINMAX, description="Range estimation: minmax, entropy (KL) or percentile."
    )
    percentile: float = Field(99.999, gt=50, le=100, description="Percentile kept when algorithm is percentile.")
    class_balance: ClassBalancePolicy = Field(
        ClassBalancePolicy.WARN, description="Strong class imbalance: warn, strict (fail), or ignore."
    )
    cache_uri: str | None = Field(
        None,
        max_length=MAX_URI,
        description="Prefix where calibration results (TensorRT calibration caches, ONNX Runtime ranges and spec.ptq choices) are read and written, named by content (model, calibration data, recipe, library version); defaults to <output.uri>calibration-cache/. Jobs that share it calibrate once per model, data and recipe.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for deterministic sampling.")

    @field_validator("cache_uri")
    @classmethod
    def _cache_uri(cls, v: str | None) -> str | None:
        return None if v is None else _check_uri(v)


class Training(ApiModel):
    dataset: Dataset = Field(..., description="Labeled training data for quantization-aware fine-tuning.")
    epochs: int = Field(1, ge=1, le=1000, description="Fine-tuning epochs.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Fine-tuning learning rate; keep it low (1e-5 to 1e-4).")
    batch_size: int = Field(32, ge=1, le=4096, description="Mini-batch size.")
    max_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="Cap on training samples per epoch (all when omitted)."
    )


class Evaluation(ApiModel):
    dataset: Dataset = Field(
        ...,
        description="Held-out data scored for FP32 and the quantized model with the same preprocessing; labeled for accuracy, or unlabeled for agreement and SQNR with FP32 only.",
    )
    metric: Metric = Field(Metric.TOP1, description="Accuracy metric: top1 or top5.")
    samples: int = Field(1000, ge=1, le=1000000, description="Samples scored (balanced, deterministic).")


class MixedPrecision(ApiModel):
    mode: MixedPrecisionMode = Field(
        MixedPrecisionMode.OFF,
        description="off, manual (keep pinnedLayers in higher precision) or auto (pin the most sensitive layers until acceptance.maxAccuracyDrop is met).",
    )
    pinned_layers: list[LayerName] = Field(
        default_factory=list,
        max_length=MAX_LAYERS,
        description="Layer/node names kept in fallbackPrecision (manual mode).",
    )
    sensitivity: SensitivityMode = Field(
        SensitivityMode.FAST,
        description="Per-layer sensitivity analysis: fast (one run, intermediate-tensor error), exhaustive (one run per layer) or off.",
    )
    sensitivity_threshold: float = Field(
        0.005, ge=0, le=1, description="Accuracy delta above which a layer is reported as sensitive."
    )
    fallback_precision: FallbackPrecision = Field(
        FallbackPrecision.FP16,
        description="Precision of pinned layers (fp16 where the backend supports it, else fp32).",
    )
    max_pinned_layers: int = Field(8, ge=1, le=1000, description="Auto mode stops after pinning this many layers.")


#: acceptance.maxAccuracyDrop when the spec leaves it out (not applied when the evaluation data has no labels).
DEFAULT_MAX_ACCURACY_DROP = 0.01


class Acceptance(ApiModel):
    max_accuracy_drop: float = Field(
        DEFAULT_MAX_ACCURACY_DROP,
        ge=0,
        le=1,
        description="Largest allowed FP32 minus quantized accuracy (0.01 = one point); needs labeled evaluation data.",
    )
    min_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Smallest allowed share of evaluation samples whose top-1 class matches FP32's (0.99 = 1 in 100 may flip); needs no labels.",
    )
    min_sqnr_db: float | None = Field(
        None,
        ge=-100,
        le=200,
        description="Smallest allowed SQNR of the quantized model's outputs against FP32's over the evaluation set, in dB (10*log10(sum fp32^2 / sum (quantized - fp32)^2)); needs no labels.",
    )
    min_compression_ratio: float = Field(1.0, ge=0, description="Smallest allowed FP32 size / quantized size.")
    on_failure: OnFailure = Field(
        OnFailure.FAIL,
        description="fail: the job fails; degrade: try INT8, INT8 with pinned layers, then float16, and publish the best, flagged degraded; remedy: while the budget is missed try, in order, more calibration samples, another calibration algorithm, pinned sensitive layers, QAT (with training data), then float16, and publish the first that passes (the best, flagged degraded, when none does).",
    )


class Output(ApiModel):
    uri: str = Field(
        ...,
        max_length=MAX_URI,
        description="Prefix the artifact, report.json and report.html are written under (s3://bucket/prefix/ or file:///dir/).",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return _check_uri(v)


class SecretRef(ApiModel):
    """A Secret holding S3 keys; the operator mounts it as env vars and never reads it."""

    name: str = Field(..., min_length=1, max_length=253, description="Secret name in the job's namespace.")
    access_key_id_key: str = Field(
        "AWS_ACCESS_KEY_ID", min_length=1, max_length=MAX_KEY, description="Key of the access key id in the Secret."
    )
    secret_access_key_key: str = Field(
        "AWS_SECRET_ACCESS_KEY",
        min_length=1,
        max_length=MAX_KEY,
        description="Key of the secret access key in the Secret.",
    )
    session_token_key: str | None = Field(
        None, min_length=1, max_length=MAX_KEY, description="Key of an optional session token in the Secret."
    )


class CABundleRef(ApiModel):
    config_map: str = Field(
        ..., min_length=1, max_length=253, description="ConfigMap holding a PEM CA bundle for a private S3 endpoint."
    )
    key: str = Field("ca.crt", min_length=1, max_length=MAX_KEY, description="Key of the bundle in the ConfigMap.")


class Storage(ApiModel):
    endpoint: str | None = Field(
        None,
        max_length=MAX_URI,
        description="S3 endpoint URL for MinIO and other S3-compatible stores (AWS when omitted).",
    )
    region: str | None = Field(None, max_length=MAX_SHORT, description="S3 region.")
    path_style: bool = Field(False, description="Use path-style addressing (needed by most MinIO setups).")
    credentials_secret: SecretRef | None = Field(
        None,
        description="Secret with S3 keys. Omit to use the pod's service account (IRSA / workload identity) or the default chain.",
    )
    ca_bundle: CABundleRef | None = Field(None, description="Custom CA bundle for the endpoint.")
    service_account_name: str | None = Field(
        None, max_length=MAX_NAME, description="Service account the quantizer pod runs as (workload identity)."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://", v):
            raise ValueError("endpoint must be an http:// or https:// URL")
        if embedded_credentials(v) is not None:
            raise ValueError(
                f"the URL carries a credential ({embedded_credentials(v)}), which is not allowed: use credentialsSecret"
            )
        return v


class Quantity(ApiModel):
    cpu: str | None = Field(
        None, max_length=MAX_SHORT, pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU quantity, e.g. '2' or '500m'."
    )
    memory: str | None = Field(
        None,
        max_length=MAX_SHORT,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]+|k)?$",
        description="Memory quantity, e.g. '4Gi'.",
    )


class Resources(ApiModel):
    accelerator: Accelerator = Field(
        Accelerator.AUTO, description="auto (GPU for TensorRT methods, else CPU), cpu or gpu."
    )
    gpus: int = Field(1, ge=1, le=16, description="nvidia.com/gpu count when running on a GPU.")
    requests: Quantity | None = Field(None, description="Container resource requests (operator defaults when omitted).")
    limits: Quantity | None = Field(None, description="Container resource limits (operator defaults when omitted).")
    scratch_size: str | None = Field(
        None,
        max_length=MAX_SHORT,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]+|k)?$",
        description="Scratch disk of the quantizer pod (the emptyDir's sizeLimit and an ephemeral-storage request), e.g. '50Gi'; the operator's default (20Gi) when omitted. Downloads that would not fit stop before they start.",
    )


class Toleration(ApiModel):
    key: str | None = Field(
        None, max_length=MAX_LABEL_KEY, description="Taint key; empty with operator Exists matches all."
    )
    operator: TolerationOperator = Field(TolerationOperator.EQUAL, description="Exists or Equal.")
    value: str | None = Field(None, max_length=MAX_LABEL_VALUE, description="Taint value for operator Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect matched; all when omitted.")
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")


class Scheduling(ApiModel):
    node_selector: dict[str, Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=128, description="Node labels the quantizer pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=256, description="Tolerations added to the quantizer pod."
    )
    affinity: dict[str, Any] | None = Field(None, description="A core/v1 Affinity passed through to the pod unchanged.")
    priority_class_name: str | None = Field(
        None, max_length=MAX_NAME, description="PriorityClass of the quantizer pod."
    )


class TensorRTOptions(ApiModel):
    """How the tensorrt-* methods build their engine; ignored by the other methods."""

    int8_mode: TensorRTInt8Mode = Field(
        TensorRTInt8Mode.AUTO,
        description="auto: explicit quantization on TensorRT 10 (Q/DQ ONNX from ONNX Runtime, strongly typed), an implicit calibrator on TensorRT 8; implicit: TensorRT's entropy/minmax calibrator (deprecated since TensorRT 10.1); explicit: Q/DQ ONNX (TensorRT >= 10).",
    )
    calibration_device: CalibrationDevice = Field(
        CalibrationDevice.GPU,
        description="Implicit INT8 only. gpu: TensorRT's calibrator runs the network on the GPU; cpu: ONNX Runtime computes the ranges on the CPU and writes TensorRT's calibration cache (the only way to use calibration.algorithm percentile).",
    )
    precision_constraints: PrecisionConstraints = Field(
        PrecisionConstraints.OBEY,
        description="How TensorRT treats layers pinned by mixedPrecision: obey (the build fails if a pin cannot be honoured) or prefer (TensorRT may fall back, with a warning).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Largest batch the engine accepts and the calibration batch size; a model with a fixed batch dimension keeps its own.",
    )
    workspace_mib: int = Field(2048, ge=16, le=1048576, description="Builder workspace memory pool limit in MiB.")


class OnnxOptions(ApiModel):
    """How onnx-dynamic and onnx-static quantize with ONNX Runtime (reduceRange also applies to torch-qat); ignored by the other methods."""

    per_channel: bool = Field(
        True,
        description="One weight scale per output channel instead of one per tensor: more accurate for CNNs, slightly slower on CPU. Needs opset >= 13.",
    )
    reduce_range: ReduceRange = Field(
        ReduceRange.AUTO,
        description="7-bit quantization against overflow in the u8s8 int8 kernels of x86 CPUs without VNNI/AMX (ONNX Runtime: weights; torch-qat: activations). auto: on when the worker's CPU lacks VNNI and AMX, off otherwise; always / never: as stated. The report says what was chosen and why.",
    )
    weight_type: OnnxQuantType = Field(
        OnnxQuantType.INT8, description="Type of quantized weights: int8 (recommended for CPUs) or uint8."
    )
    activation_type: OnnxQuantType = Field(
        OnnxQuantType.UINT8,
        description="Type of quantized activations (onnx-static; onnx-dynamic quantizes activations to uint8 at run time): uint8 (recommended for x86 CPUs) or int8. int8 activations need int8 weights.",
    )
    preprocess: bool = Field(
        True,
        description="Run ONNX Runtime's recommended pre-processing first (symbolic and ONNX shape inference, basic graph optimization such as folding BatchNorm into Conv). mixedPrecision.pinnedLayers then name nodes of the pre-processed model.",
    )

    @model_validator(mode="after")
    def _supported_pair(self) -> OnnxOptions:
        if self.activation_type is OnnxQuantType.INT8 and self.weight_type is OnnxQuantType.UINT8:
            raise ValueError(
                "activationType int8 with weightType uint8 is not a format ONNX Runtime runs: use weightType int8, or activationType uint8"
            )
        return self


class PostTraining(ApiModel):
    """Post-training techniques beyond the bare converter (onnx-static; tflite-int8: bias correction, adaptive rounding); ignored by the other methods.

    auto techniques are tried and kept only when they raise top-1 agreement with FP32 on a held-out split of the
    calibration data (never the evaluation data), so the result is never worse there than the converter's default.
    """

    cross_layer_equalization: Technique = Field(
        Technique.AUTO,
        description="Rescale Conv -> [ReLU] -> Conv pairs so both layers have equal per-channel weight ranges (the float function is unchanged; pairs joined by ReLU6/Clip are skipped).",
    )
    bias_correction: Technique = Field(
        Technique.AUTO,
        description="Subtract from each Conv/Gemm bias the mean output shift its quantized weights cause, with input means measured on the calibration data (tflite-int8: Conv2D, DepthwiseConv2D and Dense of Keras sources, through the following BatchNormalization's beta where there is one).",
    )
    range_search: Technique = Field(
        Technique.AUTO,
        description="Activation ranges that minimise the expected quantization error on the calibration histograms (a clipping-threshold sweep) instead of the raw extremes.",
    )
    sixteen_bit_weights: Technique = Field(
        Technique.AUTO,
        description="16-bit weights (activations stay 8-bit) for the convolutions with at most 27 weights per output channel (depthwise and RGB stem convolutions): few weights, so the model grows by under 5 %, and int8 rounding of so few taps is the largest loss on depthwise-separable networks; adaptive rounding and bias correction then skip those layers. ONNX Runtime runs them unfused, so the model gets slower (EfficientNet-Lite0 on x86: 4 ms per image all-int8, 25 ms with them, 7 ms in float). auto: only when acceptance.minAgreement is set and the 8-bit weights' held-out agreement (after adaptive rounding and bias correction) is below it, kept if it scores higher; on: always.",
    )
    adaptive_rounding: Technique = Field(
        Technique.AUTO,
        description="Round the int8 weights by error feedback (GPTQ-style): each input column rounded in turn onto the converter's own per-channel grid, its error compensated on the columns not yet rounded through the inverse of the layer's input second moment measured on the calibration data (over input patches for a kernel, per channel for depthwise layers), so the layer's output error, not each weight's, is minimised. onnx-static: 1x1 convolutions, Gemm layers, depthwise convolutions and RGB-stem convolutions; tflite-int8 (Keras sources): every Conv2D, DepthwiseConv2D and Dense kernel. Layers given 16-bit weights are skipped; bias correction then corrects what the rounded weights still shift.",
    )
    sixteen_bit_activations: Technique = Field(
        Technique.AUTO,
        description="16-bit activations (uint16, or int16 with activationType int8; weights keep their types, so the model's size is unchanged) where 8-bit steps cost the most: first the activations around the convolutions sixteenBitWeights selects (each one's input, output and the ReLU6 after it), then, if that is not enough, every activation. ONNX Runtime runs the nodes next to a 16-bit tensor on dequantized values, so they are slower, and 8-bit-only accelerators cannot run the model. auto: only when acceptance.minAgreement is set and the 8-bit choice's held-out agreement is below it; the smallest of the two that reaches it is kept (else the better, if it raises agreement). on: the activations around those convolutions, always.",
    )
    select_algorithm: bool = Field(
        True,
        description="Choose among minmax, entropy, percentile (and the range search) by agreement on the held-out split when calibration.algorithm is not written in the spec; false, or an algorithm written there: that algorithm.",
    )
    float_outputs: bool = Field(
        True,
        description="onnx-static: leave the model's outputs in float. quantize_static ends the graph with a Q/DQ pair on each output, which rounds the logits onto 256 levels (EfficientNet-Lite0: steps of 0.054) and turns classes closer than a step into exact ties; without it the last layer writes its float result (ONNX Runtime still runs it on int8 inputs and weights; no measurable cost). The held-out agreement with and without goes to the report. false: the converter's own output quantization. tflite-int8 artifacts take and give uint8, so it does not apply there.",
    )
    held_out_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of the calibration samples held out to score the auto choices (the rest calibrates).",
    )

    #: The fields that are techniques (off / auto / on); select_algorithm is a plain switch.
    TECHNIQUES: ClassVar[tuple[str, ...]] = (
        "cross_layer_equalization",
        "bias_correction",
        "range_search",
        "sixteen_bit_weights",
        "adaptive_rounding",
        "sixteen_bit_activations",
    )
    #: Techniques whose auto is decided by acceptance.minAgreement (they cost speed): without a budget they do not apply.
    BUDGET_DRIVEN: ClassVar[tuple[str, ...]] = ("sixteen_bit_weights", "sixteen_bit_activations")

    def all_off_under(self, min_agreement: float | None) -> bool:
        """No technique can apply under this agreement budget: each is off, or budget-driven and auto with no budget
        (then the converter's own calibration runs on every sample, with no held-out search; ``float_outputs`` is a
        setting of the quantization itself, not searched)."""
        return not self.select_algorithm and all(
            t is Technique.OFF or (name in self.BUDGET_DRIVEN and t is Technique.AUTO and min_agreement is None)
            for name, t in ((name, getattr(self, name)) for name in self.TECHNIQUES)
        )

    @classmethod
    def bare(cls) -> PostTraining:
        """Every technique off: exactly the converter's own calibration and quantization."""
        return cls(**dict.fromkeys(cls.TECHNIQUES, Technique.OFF), select_algorithm=False, float_outputs=False)


class Execution(ApiModel):
    image: str | None = Field(
        None, max_length=MAX_IMAGE, description="Override of the quantizer image chosen by the operator for the method."
    )
    backoff_limit: int = Field(2, ge=0, le=20, description="Retries of the quantizer pod for retriable failures.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Wall-clock limit of the whole run.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished batch Job (not this resource) after this many seconds."
    )


class QuantizationJobSpec(ApiModel):
    model: ModelSource = Field(..., description="The FP32 model and its input contract.")
    target: Target | None = Field(
        None,
        description="Device the model is for: rpi-xnnpack, coral-edgetpu, jetson, x86-avx2, x86-vnni, arm64-cpu or generic. It fills in what the spec leaves out (method, acceptance.onFailure, ONNX Runtime options that depend on the target's CPU); what the spec sets wins. The report lists every value it chose and why (docs/targets.md).",
    )
    method: Method = Field(
        None, description="Quantization workflow; chosen by target when omitted (one of method or target is required)."
    )  # type: ignore[assignment]
    calibration: Calibration | None = Field(
        None, description="Representative data; required by tflite-int8, onnx-static, tensorrt-int8 and tensorrt-mixed."
    )
    training: Training | None = Field(None, description="Training data for QAT; required by tflite-qat and torch-qat.")
    evaluation: Evaluation | None = Field(
        None,
        description="Held-out labeled data for FP32 vs quantized accuracy; without it accuracy is not measured and maxAccuracyDrop cannot be enforced.",
    )
    mixed_precision: MixedPrecision = Field(
        default_factory=MixedPrecision, description="Per-layer sensitivity and layers kept in higher precision."
    )
    acceptance: Acceptance = Field(default_factory=Acceptance, description="The budget the quantized model must meet.")
    output: Output = Field(..., description="Where results are written.")
    storage: Storage = Field(default_factory=Storage, description="Object-storage connection; never holds keys.")
    resources: Resources = Field(default_factory=Resources, description="Compute for the quantizer pod.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Placement of the quantizer pod.")
    queue_name: str | None = Field(
        None,
        max_length=MAX_LABEL_VALUE,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue LocalQueue (in this namespace) the quantizer Job waits in: the Job gets the label kueue.x-k8s.io/queue-name, is created suspended and runs when Kueue admits it; status.phase is Queued meanwhile, with Kueue's reason. Kueue alone suspends and resumes the Job.",
    )
    execution: Execution = Field(default_factory=Execution, description="Image and batch Job knobs.")
    tensorrt: TensorRTOptions = Field(
        default_factory=TensorRTOptions, description="TensorRT engine build options (tensorrt-* methods only)."
    )
    onnx: OnnxOptions = Field(
        default_factory=OnnxOptions,
        description="ONNX Runtime quantization options (onnx-dynamic, onnx-static; reduceRange also torch-qat).",
    )
    ptq: PostTraining = Field(
        default_factory=PostTraining,
        description="Post-training techniques beyond the bare converter: cross-layer equalization, bias correction, range search, algorithm choice (onnx-static; bias correction also tflite-int8).",
    )
    suspend: bool = Field(
        False,
        description="Create the batch Job suspended (or suspend a running one). With queueName: hold the job back from the queue.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _method_from_target(cls, data: Any, handler: Callable[[Any], QuantizationJobSpec]) -> QuantizationJobSpec:
        """A spec without a method takes its target's; ``method`` then stays out of model_fields_set, so that every
        later reader (the rendered Job, the worker, the report) still sees it as chosen by the target."""
        if not isinstance(data, dict) or data.get("method") is not None:
            return handler(data)
        target = data.get("target")
        if target is None:
            rule = next(r for r in CROSS_FIELD_RULES if r.field == "spec.method")
            raise ValueError(f"{rule.field}: {rule.text}")  # worded as the API server's CEL rule words it
        from edgequant.api.targets import method_for  # the table imports this module

        method = method_for(data)
        spec = handler(data if method is None else {**data, "method": method})
        spec.__pydantic_fields_set__.discard("method")
        return spec

    @model_validator(mode="after")
    def _cross_field(self) -> QuantizationJobSpec:
        problems = [rule for rule in CROSS_FIELD_RULES if not rule.check(self)]
        if problems:
            raise ValueError("; ".join(f"{r.field}: {r.text}" for r in problems))
        return self


# --------------------------------------------------------------------------- cross-field rules


@dataclass(frozen=True)
class CrossFieldRule:
    """One rule, two evaluators: CEL on the API server and Python offline.

    ``message`` says what is wrong, ``fix`` what to change (naming the field); the API server shows ``text``, both.
    Neither may contain "; " (rule failures are joined with it).
    """

    field: str
    cel: str
    message: str
    fix: str
    check: Callable[[QuantizationJobSpec], bool]
    scope: Literal["spec"] = "spec"

    @property
    def text(self) -> str:
        return f"{self.message}: {self.fix}"


def _fmt_ok(spec: QuantizationJobSpec) -> bool:
    fmt = spec.model.resolved_format
    return fmt is None or fmt in spec.method.formats


_GPU = [m for m in Method if m.needs_gpu]
_TRAINED = [m for m in Method if m.needs_training]
_CALIBRATED = [m for m in Method if m.needs_calibration]
#: The API server checks a method's rules when the method is written; a method chosen by spec.target is checked
#: by the operator and the worker (the same Python predicates), which fail the job naming the field.
_WRITTEN = "!has(self.method) || "
CROSS_FIELD_RULES: tuple[CrossFieldRule, ...] = (
    CrossFieldRule(
        field="spec.method",
        cel="has(self.method) || has(self.target)",
        message="spec.method is missing",
        fix="set method (e.g. tflite-int8), or target (e.g. rpi-xnnpack) to let the target choose it",
        check=lambda s: s.method is not None,
    ),
    CrossFieldRule(
        field="spec.model.sha256",
        cel="!has(self.model.sha256) || !self.model.uri.endsWith('/')",
        message="model.sha256 checks one model file, and model.uri names a SavedModel folder (it ends in '/')",
        fix="remove model.sha256 for a SavedModel folder",
        check=lambda s: s.model.sha256 is None or not s.model.uri.endswith("/"),
    ),
    CrossFieldRule(
        field="spec.resources.accelerator",
        cel=_WRITTEN
        + f"!({catalogue.cel_method_in(_GPU)}) || !has(self.resources) || !has(self.resources.accelerator) || self.resources.accelerator != 'cpu'",
        message=f"{catalogue.names(_GPU)} need a GPU",
        fix="set resources.accelerator to gpu or auto",
        check=lambda s: not (s.method.needs_gpu and s.resources.accelerator is Accelerator.CPU),
    ),
    CrossFieldRule(
        field="spec.training",
        cel=_WRITTEN + f"!({catalogue.cel_method_in(_TRAINED)}) || has(self.training)",
        message=f"QAT methods ({catalogue.names(_TRAINED)}) need training data",
        fix="add training.dataset",
        check=lambda s: not s.method.needs_training or s.training is not None,
    ),
    CrossFieldRule(
        field="spec.calibration",
        cel=_WRITTEN + f"!({catalogue.cel_method_in(_CALIBRATED)}) || has(self.calibration)",
        message="this method calibrates activation ranges",
        fix="add calibration.dataset with representative data",
        check=lambda s: not s.method.needs_calibration or s.calibration is not None,
    ),
    CrossFieldRule(
        field="spec.calibration.minSamples",
        cel="!has(self.calibration) || !has(self.calibration.minSamples) || !has(self.calibration.samples) || self.calibration.minSamples <= self.calibration.samples",
        message="calibration.minSamples must not exceed calibration.samples",
        fix="lower calibration.minSamples or raise calibration.samples",
        check=lambda s: s.calibration is None or s.calibration.min_samples <= s.calibration.samples,
    ),
    CrossFieldRule(
        field="spec.mixedPrecision.pinnedLayers",
        cel="!has(self.mixedPrecision) || !has(self.mixedPrecision.mode) || self.mixedPrecision.mode != 'manual' || (has(self.mixedPrecision.pinnedLayers) && size(self.mixedPrecision.pinnedLayers) > 0)",
        message="mixedPrecision.mode manual has no layers to keep in float",
        fix="list layer names in mixedPrecision.pinnedLayers, or set mixedPrecision.mode to auto or off",
        check=lambda s: (
            s.mixed_precision.mode is not MixedPrecisionMode.MANUAL or bool(s.mixed_precision.pinned_layers)
        ),
    ),
    CrossFieldRule(
        field="spec.mixedPrecision.mode",
        cel="!has(self.mixedPrecision) || !has(self.mixedPrecision.mode) || self.mixedPrecision.mode != 'auto' || has(self.evaluation)",
        message="mixedPrecision.mode auto pins layers until the acceptance budget is met, which is measured on the evaluation set",
        fix="add evaluation.dataset (held-out data, labeled for an accuracy budget), or set mixedPrecision.mode to manual or off",
        check=lambda s: s.mixed_precision.mode is not MixedPrecisionMode.AUTO or s.evaluation is not None,
    ),
    CrossFieldRule(
        field="spec.model.format",
        cel=_WRITTEN + catalogue.cel_format_fits(),
        message="model format does not fit the method",
        fix=catalogue.format_fix(),
        check=_fmt_ok,
    ),
    CrossFieldRule(
        field="spec.acceptance.minAgreement",
        cel="!has(self.acceptance) || !has(self.acceptance.minAgreement) || has(self.evaluation)",
        message="acceptance.minAgreement is measured on the evaluation set",
        fix="add evaluation.dataset (labels not needed)",
        check=lambda s: s.acceptance.min_agreement is None or s.evaluation is not None,
    ),
    CrossFieldRule(
        field="spec.acceptance.minSqnrDb",
        cel="!has(self.acceptance) || !has(self.acceptance.minSqnrDb) || has(self.evaluation)",
        message="acceptance.minSqnrDb is measured on the evaluation set",
        fix="add evaluation.dataset (labels not needed)",
        check=lambda s: s.acceptance.min_sqnr_db is None or s.evaluation is not None,
    ),
    CrossFieldRule(
        field="spec.acceptance.maxAccuracyDrop",
        cel=(
            "!has(self.evaluation) || !has(self.evaluation.dataset.labels) || self.evaluation.dataset.labels != 'none' || "
            f"!has(self.acceptance) || !has(self.acceptance.maxAccuracyDrop) || self.acceptance.maxAccuracyDrop == {DEFAULT_MAX_ACCURACY_DROP}"
        ),
        message="acceptance.maxAccuracyDrop needs labeled evaluation data and evaluation.dataset.labels is none",
        fix="remove maxAccuracyDrop and budget fidelity with acceptance.minAgreement (e.g. 0.99) or acceptance.minSqnrDb",
        check=lambda s: (
            s.evaluation is None
            or s.evaluation.dataset.labels is not DatasetLabels.NONE
            or s.acceptance.max_accuracy_drop == DEFAULT_MAX_ACCURACY_DROP
        ),
    ),
)


# --------------------------------------------------------------------------- status


class Condition(ApiModel):
    """Shaped like metav1.Condition so kubectl wait and GitOps tools understand it."""

    type: str = Field(
        ...,
        max_length=MAX_SHORT,
        description="Condition type: Succeeded, Failed, Running, Degraded, Suspended, Queued.",
    )
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., max_length=1024, description="CamelCase reason.")
    message: str = Field("", max_length=MAX_TEXT, description="Human-readable detail.")
    last_transition_time: str = Field(..., max_length=MAX_SHORT, description="RFC 3339 time the status last changed.")
    observed_generation: int | None = Field(None, description="Spec generation this condition describes.")


class ArtifactInfo(ApiModel):
    uri: str = Field(..., max_length=MAX_STATUS_URI, description="Quantized artifact location.")
    sha256: str = Field(..., max_length=64, description="SHA-256 of the artifact bytes.")
    size_bytes: int = Field(..., description="Artifact size in bytes.")


class ModelMeasurement(ApiModel):
    accuracy: float | None = Field(None, description="Accuracy on the evaluation set (metric from the spec).")
    size_bytes: int | None = Field(None, description="Model file size in bytes.")
    latency_ms: float | None = Field(None, description="Median single-image latency on the worker, milliseconds.")


class ArtifactInputContract(ApiModel):
    """What a caller must feed the artifact: the classic full-int8 bug is feeding float/255 to uint8."""

    dtype: str = Field(
        ..., max_length=MAX_SHORT, description="Input dtype the artifact expects (float32, uint8, int8, float16)."
    )
    shape: list[int] = Field(..., max_length=8, description="Input shape including the batch dimension.")
    layout: Layout = Field(..., description="NHWC or NCHW.")
    value_range: list[float] = Field(
        ..., min_length=2, max_length=2, description="Expected [min, max] of input values."
    )
    quant_scale: float | None = Field(None, description="Input quantization scale for integer inputs.")
    quant_zero_point: int | None = Field(None, description="Input quantization zero point for integer inputs.")
    preprocessing: str = Field(
        "",
        max_length=MAX_STATUS_URI,
        description="Preprocessing in words, e.g. 'RGB, resize 96x96 bilinear, uint8 0-255 as is'.",
    )


class Results(ApiModel):
    artifact: ArtifactInfo | None = Field(None, description="The published quantized model.")
    method: Method | None = Field(
        None, description="Method that produced the published artifact (differs from spec.method when degraded)."
    )
    baseline: ModelMeasurement | None = Field(None, description="FP32 model measurements.")
    quantized: ModelMeasurement | None = Field(None, description="Quantized model measurements.")
    compression_ratio: float | None = Field(None, description="FP32 size / quantized size.")
    accuracy_drop: float | None = Field(
        None, description="FP32 accuracy minus quantized accuracy (null when the evaluation data has no labels)."
    )
    agreement: float | None = Field(None, description="Share of evaluation samples whose top-1 class matches FP32's.")
    sqnr_db: float | None = Field(
        None, description="SQNR of the quantized model's outputs against FP32's over the evaluation set, dB."
    )
    sensitive_layers: list[LayerName] = Field(
        default_factory=list,
        max_length=MAX_LAYERS,
        description="Most sensitive layers, most sensitive first (at most 10).",
    )
    pinned_layers: list[LayerName] = Field(
        default_factory=list, max_length=MAX_LAYERS, description="Layers kept in higher precision in the artifact."
    )
    degraded: bool = Field(
        False, description="True when the artifact did not meet the budget or fell back down the degrade ladder."
    )
    rung: str | None = Field(
        None,
        max_length=MAX_SHORT,
        description="Ladder rung that produced the published artifact (full, more-samples, calibration-algorithm, pinned, qat, float16): with onFailure remedy, the rung that passed.",
    )
    report_uri: str | None = Field(
        None, max_length=MAX_STATUS_URI, description="report.json location (report.html beside it)."
    )
    input_contract: ArtifactInputContract | None = Field(None, description="What the artifact expects as input.")
    warnings: list[Annotated[str, Field(max_length=MAX_STATUS_URI)]] = Field(
        default_factory=list, max_length=100, description="Short warnings (at most 5; the report has all)."
    )


class Progress(ApiModel):
    stage: str = Field("", max_length=MAX_SHORT, description="Current worker stage.")
    message: str = Field("", max_length=MAX_STATUS_URI, description="Last progress message.")


class QuantizationJobStatus(ApiModel):
    phase: Phase | None = Field(None, description="Pending, Queued, Running, Succeeded, Failed or Suspended.")
    observed_generation: int | None = Field(None, description="Spec generation the status describes.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32, description="Standard conditions keyed by type."
    )
    job_name: str | None = Field(
        None, max_length=MAX_NAME, description="The batch/v1 Job running the current generation."
    )
    attempts: int | None = Field(None, description="Quantizer pods started for the current generation.")
    start_time: str | None = Field(None, max_length=MAX_SHORT, description="When the current run started (RFC 3339).")
    completion_time: str | None = Field(
        None, max_length=MAX_SHORT, description="When the current run finished (RFC 3339)."
    )
    progress: Progress | None = Field(None, description="Worker progress.")
    results: Results | None = Field(None, description="Results of a finished run.")
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason of the current phase.")
    message: str | None = Field(None, max_length=MAX_TEXT, description="Human-readable summary or failure message.")


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta edgequant reads; everything else passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class QuantizationJob(ApiModel):
    """A QuantizationJob manifest as users write it."""

    api_version: Literal["edgequant.io/v1alpha1"] = Field(..., alias="apiVersion", description="edgequant.io/v1alpha1")
    kind: Literal["QuantizationJob"] = Field(..., description="QuantizationJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: QuantizationJobSpec = Field(..., description="What to quantize, how, and the budget it must meet.")
    status: QuantizationJobStatus | None = Field(None, description="Written by the operator.")
