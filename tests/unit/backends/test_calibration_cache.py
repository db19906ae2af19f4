"""The calibration cache every backend shares: content-addressed names, complete bundles only, failures cost time only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends import calibration_cache as cc
from edgequant.backends.base import Batches
from edgequant.storage import Stores


def batches(values: list[np.ndarray]) -> Batches:
    return Batches(
        make_iter=lambda: iter([(v, np.zeros(len(v), dtype=np.int64)) for v in values]),
        count=sum(len(v) for v in values),
        batch_size=len(values[0]),
    )


def key(**recipe: object) -> cc.CalibrationKey:
    return cc.CalibrationKey(
        backend="onnxruntime", model_sha256="a" * 64, data_sha256="b" * 64, recipe={"algorithm": "minmax", **recipe}
    )


def store(tmp_path: Path, log: list[str] | None = None) -> cc.CalibrationStore:
    return cc.CalibrationStore(
        stores=Stores(storage=api.Storage()),
        prefix=(tmp_path / "cache").as_uri() + "/",
        workdir=tmp_path / "work",
        log=(log.append if log is not None else lambda _m: None),
    )


def test_every_input_of_the_key_changes_its_name() -> None:
    base = key()
    assert base.stem.startswith("onnxruntime-") and len(base.stem) == len("onnxruntime-") + 24
    variants = [
        key(algorithm="entropy"),
        key(percentile=99.9),
        cc.CalibrationKey("tflite", "a" * 64, "b" * 64, {"algorithm": "minmax"}),
        cc.CalibrationKey("onnxruntime", "c" * 64, "b" * 64, {"algorithm": "minmax"}),
        cc.CalibrationKey("onnxruntime", "a" * 64, "d" * 64, {"algorithm": "minmax"}),
    ]
    assert len({base.stem, *(v.stem for v in variants)}) == 1 + len(variants)
    assert key().stem == base.stem  # deterministic


def test_the_data_hash_is_the_samples_as_delivered() -> None:
    x = np.arange(2 * 4, dtype=np.float32).reshape(2, 1, 2, 2)
    same = cc.batches_sha256(batches([x[:1], x[1:]]))
    assert same == cc.batches_sha256(batches([x[:1].copy(), x[1:].copy()]))
    assert same != cc.batches_sha256(batches([x[1:], x[:1]]))  # order matters
    assert same != cc.batches_sha256(batches([x]))  # so does batching (the shapes are hashed)
    assert same != cc.batches_sha256(batches([x[:1], x[1:] + 1e-3]))


def test_publish_then_fetch_and_an_incomplete_bundle_is_a_miss(tmp_path: Path) -> None:
    ranges = tmp_path / "ranges.json"
    ranges.write_text('{"conv": [0.0, 1.0]}')
    s = store(tmp_path)
    assert s.fetch(key(), ["ranges.json"]) is None and s.misses == 1
    assert s.publish(key(), {"ranges.json": ranges}, meta={"rule": "minmax"}) is None
    found = s.fetch(key(), ["ranges.json"])
    assert found is not None and found["ranges.json"].read_text() == ranges.read_text() and s.hits == 1
    assert s.read_meta(key()) == {"rule": "minmax"}
    assert s.fetch(key(), ["ranges.json", "model.onnx"]) is None  # a file the bundle does not hold
    record = tmp_path / "cache" / key().stem / cc.KEY_FILE
    assert json.loads(record.read_text())["key"] == key().to_json()
    record.unlink()  # an upload that never finished: no key.json
    assert store(tmp_path).fetch(key(), ["ranges.json"]) is None


def test_a_store_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    s = cc.CalibrationStore(
        stores=Stores(storage=api.Storage()), prefix=blocked.as_uri() + "/", workdir=tmp_path / "work"
    )
    ranges = tmp_path / "ranges.json"
    ranges.write_text("{}")
    warning = s.publish(key(), {"ranges.json": ranges})
    assert warning is not None and warning.startswith("calibration cache not stored at ")
    assert s.fetch(key(), ["ranges.json"]) is None


def test_the_prefix_is_cache_uri_else_beside_the_outputs() -> None:
    spec = {
        "method": "onnx-static",
        "model": {"uri": "s3://b/m.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}},
        "calibration": {"dataset": {"uri": "s3://b/cal/"}},
        "output": {"uri": "s3://b/out"},
    }
    parsed = api.QuantizationJobSpec.model_validate(spec)
    assert cc.cache_prefix(parsed.calibration, output_uri=parsed.output.uri) == "s3://b/out/calibration-cache/"
    spec["calibration"]["cacheUri"] = "s3://b/shared"  # type: ignore[index]
    parsed = api.QuantizationJobSpec.model_validate(spec)
    assert cc.cache_prefix(parsed.calibration, output_uri=parsed.output.uri) == "s3://b/shared/"
