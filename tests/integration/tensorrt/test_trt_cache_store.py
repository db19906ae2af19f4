"""Content-addressed calibration caches: the key, and the round trip through storage (file:// and moto's S3 server)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.cache_format import CalibrationTable, render
from edgequant.backends.tensorrt.cache_store import CacheKey, CalibrationCacheStore, cache_prefix, save_quietly
from edgequant.backends.tensorrt.calibrator import CalibrationManifest
from edgequant.storage import Stores, file_uri

pytestmark = pytest.mark.integration

KEY = CacheKey(model_sha256="a" * 64, manifest_sha256="b" * 64, recipe="gpu-entropy", tensorrt_version="8.6.1")
MANIFEST = CalibrationManifest(
    input_name="input",
    batch_shape=(32, 1, 28, 28),
    dtype="float32",
    samples=500,
    batches=16,
    padded=12,
    batch_sha256=tuple(f"{i:064x}" for i in range(16)),
)
CACHE = render(
    CalibrationTable(version=8601, algorithm="EntropyCalibration2", scales={"input": 1 / 127, "logits": 0.1})
)


def test_every_key_part_changes_the_name() -> None:
    names = {KEY.stem}
    for change in (
        {"model_sha256": "c" * 64},
        {"manifest_sha256": "d" * 64},
        {"recipe": "gpu-minmax"},
        {"tensorrt_version": "10.3.0"},
    ):
        names.add(replace(KEY, **change).stem)
    assert len(names) == 5
    assert KEY.stem.startswith("trt8.6.1-gpu-entropy-") and len(KEY.stem.rsplit("-", 1)[1]) == 24
    assert replace(KEY).digest == KEY.digest  # stable for equal keys


def _spec(output: str, cache_uri: str | None = None) -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate(
        {
            "model": {
                "uri": "file:///m/model.onnx",
                "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"},
            },
            "method": "tensorrt-int8",
            "calibration": {"dataset": {"uri": "file:///d/"}, **({"cacheUri": cache_uri} if cache_uri else {})},
            "output": {"uri": output},
        }
    )


def test_prefix_defaults_beside_the_output_and_follows_cache_uri() -> None:
    spec = _spec("s3://bucket/runs/7")
    assert cache_prefix(spec.calibration, output_uri=spec.output.uri) == "s3://bucket/runs/7/calibration-cache/"
    spec = _spec("s3://bucket/runs/7/", "s3://shared/trt-caches")
    assert cache_prefix(spec.calibration, output_uri=spec.output.uri) == "s3://shared/trt-caches/"


def _round_trip(stores: Stores, prefix: str, workdir: Path) -> str:
    store = CalibrationCacheStore(stores=stores, prefix=prefix, workdir=workdir)
    assert store.load(KEY, version_number=8601, algorithm="EntropyCalibration2") is None  # a miss, not an error
    uploaded = store.save(KEY, CACHE, manifest=MANIFEST)
    assert uploaded.uri == prefix + KEY.stem + ".cache"
    fresh = CalibrationCacheStore(stores=stores, prefix=prefix, workdir=workdir / "second-job")
    hit = fresh.load(KEY, version_number=8601, algorithm="EntropyCalibration2")
    assert hit is not None and hit.data == CACHE and hit.uri == uploaded.uri
    # Same bytes under another key are not found; a header for another TensorRT is not used.
    assert fresh.load(replace(KEY, recipe="gpu-minmax"), version_number=8601, algorithm="MinMaxCalibration") is None
    assert fresh.load(KEY, version_number=100300, algorithm="EntropyCalibration2") is None
    return uploaded.uri


def test_round_trip_through_file_storage(tmp_path: Path) -> None:
    prefix = file_uri(tmp_path / "out", folder=True) + "calibration-cache/"
    _round_trip(Stores(storage=api.Storage()), prefix, tmp_path / "work")
    sidecar = (tmp_path / "out" / "calibration-cache" / f"{KEY.stem}.json").read_text()
    assert '"manifestSha256": "' + "b" * 64 in sidecar and '"batchSha256"' in sidecar


def test_round_trip_through_s3(s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    stores = Stores(storage=api.Storage(endpoint=s3_server.endpoint, path_style=True, region="us-east-1"))
    uri = _round_trip(stores, f"s3://{s3_bucket}/runs/1/calibration-cache/", tmp_path)
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == [f"runs/1/calibration-cache/{KEY.stem}.cache", f"runs/1/calibration-cache/{KEY.stem}.json"]
    assert uri == f"s3://{s3_bucket}/{keys[0]}"


def test_a_corrupt_stored_cache_is_a_miss(tmp_path: Path) -> None:
    prefix = file_uri(tmp_path / "caches", folder=True)
    (tmp_path / "caches").mkdir()
    (tmp_path / "caches" / f"{KEY.stem}.cache").write_text("not a cache\n")
    store = CalibrationCacheStore(stores=Stores(storage=api.Storage()), prefix=prefix, workdir=tmp_path / "w")
    assert store.load(KEY, version_number=8601, algorithm="EntropyCalibration2") is None


def test_a_failed_save_is_a_warning_not_a_failed_job(s3_server: Any, tmp_path: Path) -> None:
    stores = Stores(storage=api.Storage(endpoint=s3_server.endpoint, path_style=True, region="us-east-1"))
    store = CalibrationCacheStore(stores=stores, prefix="s3://no-such-bucket-edgequant/c/", workdir=tmp_path)
    uploaded, warning = save_quietly(store, KEY, CACHE, manifest=MANIFEST)
    assert uploaded is None
    assert warning is not None and warning.startswith(
        f"calibration cache not stored at s3://no-such-bucket-edgequant/c/{KEY.stem}.cache"
    )
