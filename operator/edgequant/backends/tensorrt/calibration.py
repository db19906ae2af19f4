"""Where implicit-calibration scales come from: a stored cache, ONNX Runtime on the CPU, or TensorRT on the GPU.

``prepare_calibration`` runs before the build: it describes the calibration set
(manifest), derives the content address, and either finds a stored cache
(calibration skipped), computes the table on the CPU, or sets up GPU batches.
``finish_calibration`` runs after the build and stores what was produced.
Neither needs TensorRT or a GPU; the GPU path only hands the session to the
TensorRT calibrator.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import BackendOptions, TensorRTBackendOptions
from edgequant.backends.base import Batches, own_options
from edgequant.backends.tensorrt.cache_format import check_matches, parse, render
from edgequant.backends.tensorrt.cache_store import CacheKey, CalibrationCacheStore, save_quietly
from edgequant.backends.tensorrt.calibrator import (
    CalibrationManifest,
    CalibrationSession,
    DeviceAllocator,
    manifest_for,
)
from edgequant.backends.tensorrt.ort_calibration import cpu_calibration_table
from edgequant.backends.tensorrt.plan import CalibrationPlan
from edgequant.backends.tensorrt.version import TensorRTVersion
from edgequant.storage import Stores, sha256_file
from edgequant.util.errors import InvalidInputError


class ScaleSource(enum.StrEnum):
    STORED = "stored"
    """A cache with the same content address: calibration skipped."""
    CPU = "cpu"
    """ONNX Runtime computed the ranges on the CPU."""
    GPU = "gpu"
    """TensorRT's calibrator runs during the build."""


@dataclass
class PreparedCalibration:
    session: CalibrationSession
    key: CacheKey
    manifest: CalibrationManifest
    source: ScaleSource
    plan: CalibrationPlan
    version: TensorRTVersion
    stored_uri: str | None = None
    notes: list[str] = field(default_factory=list)


def prepare_calibration(
    *,
    plan: CalibrationPlan,
    model_path: Path,
    batches: Batches | None,
    input_name: str,
    batch_size: int,
    sample_shape: tuple[int, ...],
    percentile: float,
    version: TensorRTVersion,
    store: CalibrationCacheStore,
    allocator: Callable[[], DeviceAllocator],
    workdir: Path,
    log: Callable[[str], None],
) -> PreparedCalibration:
    """Find or compute the scales, or set up the batches for TensorRT's calibrator."""
    if batches is None:
        raise InvalidInputError("spec.calibration: INT8 calibration needs calibration.dataset")
    manifest = manifest_for(batches, input_name=input_name, batch_size=batch_size, sample_shape=sample_shape)
    key = CacheKey(
        model_sha256=sha256_file(model_path),
        manifest_sha256=manifest.sha256,
        recipe=plan.recipe,
        tensorrt_version=str(version),
    )
    log(
        f"calibration set: {manifest.samples} samples in {manifest.batches} batch(es) of {batch_size} "
        f"({manifest.padded} padding), manifest {manifest.sha256[:12]}…"
    )
    session = CalibrationSession(
        input_name=input_name, batch_size=batch_size, sample_shape=sample_shape, allocator=None
    )
    stored = store.load(key, version_number=version.number, algorithm=plan.header_algorithm)
    if stored is not None:
        log(f"calibration skipped: cache {stored.uri}")
        session.cached = stored.data
        return PreparedCalibration(
            session=session,
            key=key,
            manifest=manifest,
            source=ScaleSource.STORED,
            plan=plan,
            version=version,
            stored_uri=stored.uri,
            notes=[f"calibration skipped: identical cache found at {stored.uri}"],
        )
    if plan.device is api.CalibrationDevice.CPU:
        log(f"calibrating on the CPU with ONNX Runtime ({plan.algorithm.value})")
        table = cpu_calibration_table(
            model_path=model_path,
            batches=batches,
            input_name=input_name,
            batch_size=batch_size,
            sample_shape=sample_shape,
            algorithm=plan.algorithm,
            percentile=percentile,
            tensorrt_version=version.number,
            header_algorithm=plan.header_algorithm,
            workdir=workdir / "ort-calibration",
        )
        session.cached = render(table)
        return PreparedCalibration(
            session=session,
            key=key,
            manifest=manifest,
            source=ScaleSource.CPU,
            plan=plan,
            version=version,
            notes=[
                f"INT8 scales of {len(table.scales)} tensors computed on the CPU by ONNX Runtime ({plan.algorithm.value}), "
                f"handed to TensorRT as its calibration cache ({table.header})"
            ],
        )
    session.batches = batches
    session.allocator = allocator()
    log(f"calibrating on the GPU with TensorRT's {plan.header_algorithm} calibrator")
    return PreparedCalibration(
        session=session, key=key, manifest=manifest, source=ScaleSource.GPU, plan=plan, version=version
    )


@dataclass
class FinishedCalibration:
    data: bytes
    """The cache bytes TensorRT used (stored, CPU-computed or written by its calibrator)."""
    stored_uri: str | None
    notes: list[str]


def finish_calibration(prepared: PreparedCalibration, *, store: CalibrationCacheStore) -> FinishedCalibration:
    """Check what TensorRT used and store new scales under their content address."""
    session = prepared.session
    notes = list(prepared.notes)
    if prepared.source is ScaleSource.GPU:
        if session.written is None:
            raise InvalidInputError("TensorRT finished calibration without writing a calibration cache")
        fed = len(session.fed)
        if fed != session.expected_batches:
            raise InvalidInputError(f"TensorRT read {fed} calibration batches of {session.expected_batches}")
        notes.append(
            f"calibrated on the GPU: {fed} batch(es) of {session.batch_size}, {sum(session.fed)} samples "
            f"({fed * session.batch_size - sum(session.fed)} padding repeat the first samples)"
        )
        data = session.written
    else:
        assert session.cached is not None
        data = session.cached
    table = parse(data, source="calibration cache")
    check_matches(
        table, version=prepared.version.number, algorithm=prepared.plan.header_algorithm, source="calibration cache"
    )
    if prepared.source is ScaleSource.STORED:
        return FinishedCalibration(data=data, stored_uri=prepared.stored_uri, notes=notes)
    uploaded, warning = save_quietly(store, prepared.key, data, manifest=prepared.manifest)
    if warning is not None:
        notes.append(warning)
    else:
        assert uploaded is not None
        notes.append(f"calibration cache stored at {uploaded.uri} (an identical job skips calibration)")
    return FinishedCalibration(data=data, stored_uri=uploaded.uri if uploaded else None, notes=notes)


def precompute_cpu_table(
    *,
    options: BackendOptions,
    keep_float: Sequence[str],
    version: TensorRTVersion,
    model_path: Path,
    batches: Batches | None,
    stores: Stores,
    workdir: Path,
    log: Callable[[str], None],
) -> FinishedCalibration:
    """Compute and store, without a GPU, the calibration cache a GPU job with the same spec will find and use.

    The key is built exactly as the GPU job builds it (same model bytes, same
    sampled and padded batches, recipe ``cpu-<algorithm>``, the given TensorRT
    version), so that job skips calibration.
    """
    from edgequant.backends.tensorrt.backend import resolve_batch_size
    from edgequant.backends.tensorrt.cache_store import cache_prefix
    from edgequant.backends.tensorrt.model_info import read_model_info
    from edgequant.backends.tensorrt.plan import plan_build
    from edgequant.backends.tensorrt.version import api_generation

    trt = own_options(options, TensorRTBackendOptions, backend="TensorRT")
    if trt.tensorrt.calibration_device is not api.CalibrationDevice.CPU:
        raise InvalidInputError(
            "spec.tensorrt.calibrationDevice: set it to cpu, so that the GPU job looks for (and uses) the table computed here"
        )
    plan = plan_build(
        method=trt.method,
        generation=api_generation(version),
        options=trt.tensorrt,
        calibration=trt.calibration,
        keep_float=keep_float,
        fallback=trt.fallback_precision,
    )
    if plan.calibration is None:
        raise InvalidInputError(
            f"spec.tensorrt.int8Mode: {trt.method.value} on TensorRT {version} builds from a Q/DQ model that the job "
            "calibrates itself with ONNX Runtime; there is no TensorRT calibration cache to precompute"
        )
    assert trt.calibration is not None
    info = read_model_info(model_path)
    batch_size, _notes = resolve_batch_size(info, trt.tensorrt)
    store = CalibrationCacheStore(
        stores=stores, prefix=cache_prefix(trt.calibration, output_uri=trt.output_uri), workdir=workdir
    )
    prepared = prepare_calibration(
        plan=plan.calibration,
        model_path=model_path,
        batches=batches,
        input_name=info.input_name,
        batch_size=batch_size,
        sample_shape=info.sample_shape,
        percentile=trt.calibration.percentile,
        version=version,
        store=store,
        allocator=_no_device,
        workdir=workdir,
        log=log,
    )
    return finish_calibration(prepared, store=store)


def _no_device() -> DeviceAllocator:
    raise AssertionError("CPU calibration never allocates device memory")
