"""TensorRT's calibration cache (the text the implicit calibrators read and write). Pure.

Format, as NVIDIA documents it (TensorRT samples/sampleINT8/README.md,
"Calibration file"):

    TRT-<NV_TENSORRT_VERSION>-<calibrator>      e.g. TRT-8601-EntropyCalibration2
    <tensor name>: <scale>                      one line per network tensor

where the scale is the float32 activation scale ``abs(max_dynamic_range) / 127``
written as the 8 hex digits of its IEEE-754 bit pattern (big-endian, so
``3c010204`` is 1/127). TensorRT re-calibrates when the header's version or
calibrator differs from the current build, so both are checked here too.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from edgequant.util.errors import InvalidInputError

#: calibrator -> the name TensorRT writes in the header (CalibrationAlgoType ENTROPY_CALIBRATION_2 / MINMAX_CALIBRATION).
HEADER_ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}

#: int8 activations cover [-127, 127] * scale in TensorRT's symmetric implicit quantization.
INT8_MAX = 127.0

#: A tensor that was constant zero during calibration still needs a positive scale.
MIN_DYNAMIC_RANGE = 1e-8

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


class CalibrationCacheFormatError(InvalidInputError):
    """Bytes that are not a TensorRT calibration cache."""


@dataclass(frozen=True)
class CalibrationTable:
    version: int
    """NV_TENSORRT_VERSION of the TensorRT that reads or wrote it."""
    algorithm: str
    """Header name of the calibrator, e.g. EntropyCalibration2."""
    scales: Mapping[str, float]
    """Tensor name -> activation scale (dynamic range / 127)."""

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def dynamic_range(self, tensor: str) -> float:
        return self.scales[tensor] * INT8_MAX


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def render(table: CalibrationTable) -> bytes:
    """The cache bytes: header, then tensors in name order (deterministic, so equal tables hash equal)."""
    lines = [table.header]
    for name in sorted(table.scales):
        scale = table.scales[name]
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"tensor {name!r}: scale {scale} is not a positive finite number")
        if "\n" in name:
            raise ValueError(f"tensor name {name!r} contains a newline")
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return ("\n".join(lines) + "\n").encode()


def parse(data: bytes, *, source: str = "calibration cache") -> CalibrationTable:
    """Read cache bytes strictly; errors name ``source`` and the offending line."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise CalibrationCacheFormatError(f"{source}: not text ({exc})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CalibrationCacheFormatError(f"{source}: empty")
    header = _HEADER.match(lines[0].strip())
    if header is None:
        raise CalibrationCacheFormatError(
            f"{source}: line 1 is {lines[0][:60]!r}, expected a header like 'TRT-8601-EntropyCalibration2'"
        )
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rstrip().rpartition(": ")
        if not sep or not name or not _HEX.match(value):
            raise CalibrationCacheFormatError(
                f"{source}: line {number} is {line[:60]!r}, expected '<tensor>: <8 hex digits>'"
            )
        if name in scales:
            raise CalibrationCacheFormatError(f"{source}: line {number} repeats tensor {name!r}")
        scale = hex_to_scale(value)
        if not (math.isfinite(scale) and scale >= 0):
            raise CalibrationCacheFormatError(f"{source}: line {number}: scale of {name!r} is {scale}")
        scales[name] = scale
    return CalibrationTable(version=int(header.group(1)), algorithm=header.group(2), scales=scales)


def from_ranges(ranges: Mapping[str, tuple[float, float]], *, version: int, algorithm: str) -> CalibrationTable:
    """A table from per-tensor [min, max] ranges (e.g. ONNX Runtime's calibrator): scale = max(|min|, |max|) / 127."""
    if algorithm not in HEADER_ALGORITHMS.values():
        raise ValueError(f"unknown calibrator {algorithm!r}; expected one of {sorted(HEADER_ALGORITHMS.values())}")
    scales = {}
    for name, (low, high) in ranges.items():
        amax = max(abs(float(low)), abs(float(high)))
        if not math.isfinite(amax):
            raise ValueError(f"tensor {name!r}: range [{low}, {high}] is not finite")
        scales[name] = max(amax, MIN_DYNAMIC_RANGE) / INT8_MAX
    return CalibrationTable(version=version, algorithm=algorithm, scales=scales)


def check_matches(table: CalibrationTable, *, version: int, algorithm: str, source: str) -> None:
    """TensorRT ignores a cache whose header names another version or calibrator; say so before it does."""
    expected = f"TRT-{version}-{algorithm}"
    if table.header != expected:
        raise CalibrationCacheFormatError(f"{source}: header {table.header!r} does not match this build ({expected!r})")
