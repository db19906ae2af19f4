"""Where the INT8 scales come from, end to end on the CPU: ONNX Runtime's table, the stored-cache skip, the GPU hand-off.

ONNX Runtime and the storage layer are real; only the device memory behind the
GPU calibrator is host memory (pycuda cannot exist here) and TensorRT's own
calls on the session are made by the test, in the order TensorRT makes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.cache_format import parse
from edgequant.backends.tensorrt.cache_store import CalibrationCacheStore
from edgequant.backends.tensorrt.calibration import ScaleSource, finish_calibration, prepare_calibration
from edgequant.backends.tensorrt.calibrator import fixed_batches
from edgequant.backends.tensorrt.model_info import read_model_info
from edgequant.backends.tensorrt.plan import CalibrationPlan
from edgequant.backends.tensorrt.version import TensorRTVersion
from edgequant.storage import Stores, file_uri
from edgequant.util.errors import InvalidInputError

pytestmark = pytest.mark.integration

TRT8 = TensorRTVersion(8, 6, 1)
SAMPLE = (1, 28, 28)


class HostAllocator:
    """Host memory standing in for pycuda device buffers; records copies."""

    def __init__(self) -> None:
        self.copies: list[np.ndarray] = []

    def allocate(self, nbytes: int) -> Any:
        return type("Buffer", (), {"ptr": 0x1000, "nbytes": nbytes})()

    def copy_to_device(self, buffer: Any, host: np.ndarray) -> None:
        assert host.nbytes == buffer.nbytes
        self.copies.append(host.copy())

    def release(self, buffer: Any) -> None:
        pass


def _prepare(
    model: Path,
    batches: Any,
    store: CalibrationCacheStore,
    plan: CalibrationPlan,
    tmp_path: Path,
    allocator: Any = None,
):
    return prepare_calibration(
        plan=plan,
        model_path=model,
        batches=batches,
        input_name="input",
        batch_size=32,
        sample_shape=SAMPLE,
        percentile=99.99,
        version=TRT8,
        store=store,
        allocator=lambda: allocator or HostAllocator(),
        workdir=tmp_path,
        log=lambda _m: None,
    )


def _store(tmp_path: Path, stores: Stores | None = None, prefix: str | None = None) -> CalibrationCacheStore:
    return CalibrationCacheStore(
        stores=stores or Stores(storage=api.Storage()),
        prefix=prefix or file_uri(tmp_path / "out", folder=True) + "calibration-cache/",
        workdir=tmp_path / "work",
    )


def test_cpu_table_is_tensorrts_format_with_scales_from_the_data(
    fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    import onnxruntime as ort

    batches = fashion_batches(200)
    plan = CalibrationPlan(device=api.CalibrationDevice.CPU, algorithm=api.CalibrationAlgorithm.MINMAX)
    prepared = _prepare(fashion_cnn_onnx, batches, _store(tmp_path), plan, tmp_path)
    assert prepared.source is ScaleSource.CPU and prepared.session.batches is None  # TensorRT gets the table, no data
    table = parse(prepared.session.cached or b"")
    assert table.header == "TRT-8601-MinMaxCalibration"
    activations = {o for n in read_model_info(fashion_cnn_onnx).nodes for o in n.outputs}
    assert set(table.scales) == activations | {"input"}
    # Independent of ONNX Runtime's calibrator: the input's and the logits' largest magnitudes over the same batches.
    fed = np.concatenate([b.data for b in fixed_batches((x for x, _ in batches), batch_size=32, sample_shape=SAMPLE)])
    logits = ort.InferenceSession(str(fashion_cnn_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": fed})[
        0
    ]
    assert table.dynamic_range("input") == pytest.approx(float(np.abs(fed).max()), rel=1e-6)
    assert table.dynamic_range("logits") == pytest.approx(float(np.abs(logits).max()), rel=1e-5)


def test_entropy_and_percentile_tables_name_the_calibrator_tensorrt_will_be_given(
    fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    for algorithm, header in (
        (api.CalibrationAlgorithm.ENTROPY, "EntropyCalibration2"),
        (api.CalibrationAlgorithm.PERCENTILE, "MinMaxCalibration"),
    ):
        plan = CalibrationPlan(device=api.CalibrationDevice.CPU, algorithm=algorithm, percentile=99.99)
        prepared = _prepare(
            fashion_cnn_onnx, fashion_batches(100), _store(tmp_path / algorithm.value), plan, tmp_path / algorithm.value
        )
        table = parse(prepared.session.cached or b"")
        assert table.header == f"TRT-8601-{header}" and len(table.scales) == 11


def test_an_identical_job_skips_calibration_and_a_changed_one_does_not(
    fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    plan = CalibrationPlan(device=api.CalibrationDevice.CPU, algorithm=api.CalibrationAlgorithm.MINMAX)
    first = _prepare(fashion_cnn_onnx, fashion_batches(150), _store(tmp_path), plan, tmp_path)
    done = finish_calibration(first, store=_store(tmp_path))
    assert (
        done.stored_uri is not None
        and (tmp_path / "out" / "calibration-cache" / f"{first.key.stem}.cache").read_bytes() == done.data
    )
    again = _prepare(fashion_cnn_onnx, fashion_batches(150), _store(tmp_path), plan, tmp_path)
    assert again.source is ScaleSource.STORED and again.session.cached == done.data
    assert again.notes == [f"calibration skipped: identical cache found at {done.stored_uri}"]
    assert finish_calibration(again, store=_store(tmp_path)).stored_uri == done.stored_uri
    other_data = _prepare(fashion_cnn_onnx, fashion_batches(150, start=20_000), _store(tmp_path), plan, tmp_path)
    assert other_data.source is ScaleSource.CPU and other_data.key.manifest_sha256 != first.key.manifest_sha256
    other_recipe = _prepare(
        fashion_cnn_onnx,
        fashion_batches(150),
        _store(tmp_path),
        CalibrationPlan(device=api.CalibrationDevice.CPU, algorithm=api.CalibrationAlgorithm.ENTROPY),
        tmp_path,
    )
    assert other_recipe.source is ScaleSource.CPU


def test_gpu_calibration_feeds_every_padded_batch_and_stores_what_tensorrt_wrote(
    fashion_cnn_onnx: Path, fashion_batches, s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    stores = Stores(storage=api.Storage(endpoint=s3_server.endpoint, path_style=True, region="us-east-1"))
    store = _store(tmp_path, stores, f"s3://{s3_bucket}/runs/9/calibration-cache/")
    plan = CalibrationPlan(device=api.CalibrationDevice.GPU, algorithm=api.CalibrationAlgorithm.ENTROPY)
    allocator = HostAllocator()
    batches = fashion_batches(100)
    prepared = _prepare(fashion_cnn_onnx, batches, store, plan, tmp_path, allocator)
    assert prepared.source is ScaleSource.GPU and prepared.session.read_calibration_cache() is None
    session = prepared.session
    while session.get_batch(["input"]) is not None:  # what TensorRT does during build_serialized_network
        pass
    written = b"TRT-8601-EntropyCalibration2\ninput: 3c010204\nlogits: 3e000000\n"
    session.write_calibration_cache(memoryview(written))
    done = finish_calibration(prepared, store=store)
    assert session.fed == [32, 32, 32, 4] and len(allocator.copies) == 4
    assert any("4 batch(es) of 32, 100 samples (28 padding" in n for n in done.notes)
    key = f"runs/9/calibration-cache/{prepared.key.stem}.cache"
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == written
    # The next identical job reads it from S3 and skips calibration.
    again = _prepare(
        fashion_cnn_onnx,
        fashion_batches(100),
        _store(tmp_path / "2", stores, f"s3://{s3_bucket}/runs/9/calibration-cache/"),
        plan,
        tmp_path / "2",
    )
    assert again.source is ScaleSource.STORED and again.session.cached == written


def test_gpu_calibration_that_stopped_early_is_an_error(
    fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    plan = CalibrationPlan(device=api.CalibrationDevice.GPU, algorithm=api.CalibrationAlgorithm.MINMAX)
    prepared = _prepare(fashion_cnn_onnx, fashion_batches(100), _store(tmp_path), plan, tmp_path)
    prepared.session.get_batch(["input"])
    prepared.session.write_calibration_cache(b"TRT-8601-MinMaxCalibration\ninput: 3c010204\n")
    with pytest.raises(InvalidInputError, match="read 1 calibration batches of 4"):
        finish_calibration(prepared, store=_store(tmp_path))
