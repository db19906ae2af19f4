"""URI parsing: the two schemes, prefixes, and errors that name the URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgequant.storage.uri import ObjectUri, as_prefix, file_uri, parse_uri
from edgequant.util.errors import InvalidInputError


def test_s3_uri_splits_bucket_and_key() -> None:
    parsed = parse_uri("s3://models/team/cnn.keras")
    assert parsed == ObjectUri("s3", "models", "team/cnn.keras")
    assert not parsed.is_prefix
    assert parsed.basename == "cnn.keras"
    assert str(parsed) == "s3://models/team/cnn.keras"


def test_trailing_slash_is_a_prefix_and_child_appends() -> None:
    parsed = parse_uri("s3://data/fmnist/calibration/")
    assert parsed.is_prefix
    assert parsed.basename == "calibration"
    assert str(parsed.child("report.json")) == "s3://data/fmnist/calibration/report.json"
    assert parse_uri("s3://bucket").is_prefix


def test_file_uri_keeps_the_path() -> None:
    parsed = parse_uri("file:///tmp/out/model.tflite")
    assert (parsed.scheme, parsed.key) == ("file", "/tmp/out/model.tflite")
    assert str(parsed) == "file:///tmp/out/model.tflite"


@pytest.mark.parametrize("uri", ["http://x/y", "/abs/path", "s3:///key", "file://"])
def test_bad_uris_are_named(uri: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_uri(uri)
    assert repr(uri) in str(err.value)


def test_as_prefix_and_file_uri(tmp_path: Path) -> None:
    assert as_prefix("s3://b/out") == "s3://b/out/"
    assert as_prefix("s3://b/out/") == "s3://b/out/"
    assert file_uri(tmp_path, folder=True) == f"file://{tmp_path.resolve()}/"
    assert file_uri(tmp_path / "m.keras") == f"file://{tmp_path.resolve()}/m.keras"
