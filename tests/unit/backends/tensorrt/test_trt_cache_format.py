"""TensorRT's calibration cache text, checked against the format NVIDIA documents (samples/sampleINT8/README.md)."""

from __future__ import annotations

import struct

import pytest

from edgequant.backends.tensorrt.cache_format import (
    CalibrationCacheFormatError,
    CalibrationTable,
    check_matches,
    from_ranges,
    hex_to_scale,
    parse,
    render,
    scale_to_hex,
)

#: The table printed in NVIDIA's sampleINT8 README ("Calibration file").
NVIDIA_SAMPLE = b"""TRT-7000-EntropyCalibration2
data: 3c008912
conv1: 3c88edfc
pool1: 3c88edfc
conv2: 3ddc858b
pool2: 3ddc858b
ip1: 3db6bd6e
ip2: 3e691968
prob: 3c010a14
"""


def test_nvidia_sample_table_parses_to_its_header_and_scales() -> None:
    table = parse(NVIDIA_SAMPLE)
    assert (table.version, table.algorithm, table.header) == (
        7000,
        "EntropyCalibration2",
        "TRT-7000-EntropyCalibration2",
    )
    assert list(table.scales) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]
    # prob is a softmax output in [0, 1]: its dynamic range is ~1, so its scale is ~1/127.
    assert table.dynamic_range("prob") == pytest.approx(1.0, rel=1e-3)
    assert table.scales["conv1"] == pytest.approx(struct.unpack(">f", bytes.fromhex("3c88edfc"))[0])


def test_scales_are_big_endian_float32_bit_patterns() -> None:
    assert scale_to_hex(1 / 127) == "3c010204"
    assert hex_to_scale("3c010204") == pytest.approx(1 / 127)
    assert hex_to_scale(scale_to_hex(0.123456789)) == pytest.approx(0.123456789, rel=1e-7)


def test_render_writes_the_documented_layout_in_name_order() -> None:
    table = CalibrationTable(version=8601, algorithm="MinMaxCalibration", scales={"y": 0.5, "input": 1 / 127})
    text = render(table).decode()
    assert text == "TRT-8601-MinMaxCalibration\ninput: 3c010204\ny: 3f000000\n"
    back = parse(render(table))
    assert back.header == table.header
    assert back.scales == pytest.approx(dict(table.scales), rel=1e-7)  # float32 on the way through


def test_ranges_become_max_abs_over_127() -> None:
    table = from_ranges(
        {"a": (-2.54, 1.0), "b": (0.0, 6.35), "dead": (0.0, 0.0)}, version=100300, algorithm="EntropyCalibration2"
    )
    assert table.header == "TRT-100300-EntropyCalibration2"
    assert table.scales["a"] == pytest.approx(0.02)
    assert table.scales["b"] == pytest.approx(0.05)
    assert 0 < table.scales["dead"] < 1e-9


def test_unknown_calibrator_name_is_refused() -> None:
    with pytest.raises(ValueError, match="LegacyCalibration"):
        from_ranges({"a": (0, 1)}, version=8601, algorithm="LegacyCalibration")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"", "empty"),
        (b"calibration\nx: 3c010204\n", "line 1"),
        (b"TRT-8601-EntropyCalibration2\nx 3c010204\n", "line 2"),
        (b"TRT-8601-EntropyCalibration2\nx: 3c0102\n", "line 2"),
        (b"TRT-8601-EntropyCalibration2\nx: 3c010204\nx: 3c010204\n", "repeats"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_malformed_caches_are_errors_naming_the_line(data: bytes, where: str) -> None:
    with pytest.raises(CalibrationCacheFormatError, match=where):
        parse(data, source="s3://b/c.cache")


def test_tensor_names_may_contain_colons() -> None:
    table = parse(b"TRT-8601-EntropyCalibration2\n(Unnamed Layer* 3) [Shuffle]_output: 3c010204\nns:x: 3f000000\n")
    assert set(table.scales) == {"(Unnamed Layer* 3) [Shuffle]_output", "ns:x"}


def test_header_of_another_version_or_calibrator_does_not_match() -> None:
    table = parse(NVIDIA_SAMPLE)
    check_matches(table, version=7000, algorithm="EntropyCalibration2", source="c")
    with pytest.raises(CalibrationCacheFormatError, match="TRT-8601-EntropyCalibration2"):
        check_matches(table, version=8601, algorithm="EntropyCalibration2", source="c")
    with pytest.raises(CalibrationCacheFormatError, match="MinMaxCalibration"):
        check_matches(table, version=7000, algorithm="MinMaxCalibration", source="c")
