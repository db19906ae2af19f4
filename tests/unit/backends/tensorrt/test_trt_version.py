"""TensorRT version parsing and the API path chosen for each generation."""

from __future__ import annotations

import pytest

from edgequant.api.exitcodes import ExitCode
from edgequant.backends.tensorrt.version import (
    ApiGeneration,
    TensorRTVersion,
    UnsupportedTensorRTError,
    api_generation,
    parse_version,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.6.1", TensorRTVersion(8, 6, 1)),
        ("8.6.1.post1", TensorRTVersion(8, 6, 1)),
        ("10.3.0.26", TensorRTVersion(10, 3, 0)),
        ("10.0", TensorRTVersion(10, 0, 0)),
    ],
)
def test_versions_read_from_tensorrt_version_strings(text: str, expected: TensorRTVersion) -> None:
    assert parse_version(text) == expected


def test_unreadable_version_names_the_text() -> None:
    with pytest.raises(UnsupportedTensorRTError, match="'unknown'"):
        parse_version("unknown")


@pytest.mark.parametrize(
    ("version", "number"),
    [
        (TensorRTVersion(7, 0, 0), 7000),
        (TensorRTVersion(8, 6, 1), 8601),
        (TensorRTVersion(10, 3, 0), 100300),
        (TensorRTVersion(10, 13, 2), 101302),
    ],
)
def test_cache_header_number_follows_nv_tensorrt_version(version: TensorRTVersion, number: int) -> None:
    assert version.number == number


@pytest.mark.parametrize(
    ("version", "generation"),
    [
        ("8.6.0", ApiGeneration.TRT8),
        ("8.6.1", ApiGeneration.TRT8),
        ("10.0.1", ApiGeneration.TRT10),
        ("10.16.1", ApiGeneration.TRT10),
    ],
)
def test_supported_versions_pick_their_api_path(version: str, generation: ApiGeneration) -> None:
    assert api_generation(parse_version(version)) is generation


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("8.5.3", "older than 8.6"),
        ("7.2.3", "older than 8.6"),
        ("9.3.0", "limited releases"),
        ("11.0.0", "removed the FP16/INT8 builder flags"),
    ],
)
def test_unsupported_versions_fail_with_reason_and_fix(version: str, reason: str) -> None:
    with pytest.raises(UnsupportedTensorRTError) as info:
        api_generation(parse_version(version))
    assert reason in str(info.value)
    assert "quantizer-tensorrt" in str(info.value)
    assert info.value.exit_code is ExitCode.INVALID_INPUT
