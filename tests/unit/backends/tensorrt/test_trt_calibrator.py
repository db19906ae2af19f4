"""Calibration batching, padding, device copies and the callbacks TensorRT makes, with host memory for the GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgequant.backends.tensorrt.calibrator import (
    CalibrationDataError,
    CalibrationSession,
    batch_count,
    fixed_batches,
    manifest_for,
)

SAMPLE = (1, 28, 28)


def _all(batches):  # the samples in data order, as the pipeline yields them
    return np.concatenate([x for x, _ in batches])


@pytest.mark.parametrize(("n", "batch_size"), [(500, 32), (64, 64), (65, 64), (10, 32), (1, 8), (128, 1)])
def test_fixed_batches_keep_order_and_pad_the_last_with_the_first_samples(
    fashion_batches, n: int, batch_size: int
) -> None:
    source = fashion_batches(n, batch_size=64)
    expected = _all(source)
    out = list(fixed_batches((x for x, _ in source), batch_size=batch_size, sample_shape=SAMPLE))
    assert len(out) == batch_count(n, batch_size) == math.ceil(n / batch_size)
    assert [b.index for b in out] == list(range(len(out)))
    assert all(b.data.shape == (batch_size, *SAMPLE) and b.data.dtype == np.float32 for b in out)
    flat = np.concatenate([b.data for b in out])
    np.testing.assert_array_equal(flat[:n], expected)
    padding = len(out) * batch_size - n
    assert sum(b.real for b in out) == n and out[-1].real == batch_size - padding
    # Padding repeats the set from its first sample (cycling when the set is smaller than a batch), never zeros.
    np.testing.assert_array_equal(flat[n:], expected[np.arange(padding) % n])


def test_fixed_batches_are_identical_on_every_pass(fashion_batches) -> None:
    source = fashion_batches(300, batch_size=50)
    first = [b.data for b in fixed_batches((x for x, _ in source), batch_size=32, sample_shape=SAMPLE)]
    second = [b.data for b in fixed_batches((x for x, _ in source), batch_size=32, sample_shape=SAMPLE)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_samples_of_another_layout_are_refused_with_the_fix(fashion_batches) -> None:
    source = fashion_batches(10)
    with pytest.raises(CalibrationDataError, match=r"\[28, 28, 1\].*layout"):
        list(fixed_batches((x for x, _ in source), batch_size=4, sample_shape=(28, 28, 1)))


def test_session_copies_each_batch_into_one_device_buffer_then_ends(fashion_batches, host_allocator) -> None:
    source = fashion_batches(100)
    session = CalibrationSession(
        input_name="input", batch_size=32, sample_shape=SAMPLE, allocator=host_allocator, batches=source
    )
    pointers = []
    while (ptrs := session.get_batch(["input"])) is not None:
        pointers.append(ptrs)
    assert session.error is None
    assert len(pointers) == session.expected_batches == 4
    assert len(host_allocator.buffers) == 1 and all(p == [host_allocator.buffers[0].ptr] for p in pointers)
    assert host_allocator.buffers[0].data.size == 32 * 28 * 28 * 4
    np.testing.assert_array_equal(np.concatenate(host_allocator.copies)[:100], _all(source))
    assert session.fed == [32, 32, 32, 4]
    session.close()
    assert host_allocator.released == [host_allocator.buffers[0].ptr]


def test_reset_replays_the_same_batches(fashion_batches, host_allocator) -> None:
    session = CalibrationSession(
        input_name="x", batch_size=16, sample_shape=SAMPLE, allocator=host_allocator, batches=fashion_batches(40)
    )
    while session.get_batch(["x"]) is not None:
        pass
    first = list(host_allocator.copies)
    session.reset()
    while session.get_batch(["x"]) is not None:
        pass
    assert all(np.array_equal(a, b) for a, b in zip(first, host_allocator.copies[len(first) :], strict=True))


def test_errors_are_kept_for_the_builder_instead_of_raised_into_tensorrt(fashion_batches, host_allocator) -> None:
    session = CalibrationSession(
        input_name="input", batch_size=8, sample_shape=SAMPLE, allocator=host_allocator, batches=fashion_batches(10)
    )
    assert session.get_batch(["input", "mask"]) is None
    assert isinstance(session.error, CalibrationDataError) and "single input 'input'" in str(session.error)
    assert session.get_batch(["input"]) is None  # stays stopped after an error


def test_cache_only_session_reports_a_rejected_cache() -> None:
    session = CalibrationSession(
        input_name="input", batch_size=8, sample_shape=SAMPLE, allocator=None, cached=b"TRT-8601-X\n"
    )
    assert session.read_calibration_cache() == b"TRT-8601-X\n"
    assert session.get_batch(["input"]) is None
    assert "did not accept the supplied calibration cache" in str(session.error)


def test_written_cache_is_copied_out_of_tensorrts_buffer() -> None:
    session = CalibrationSession(input_name="input", batch_size=8, sample_shape=SAMPLE, allocator=None)
    buffer = bytearray(b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n")
    session.write_calibration_cache(memoryview(buffer))
    buffer[:3] = b"XXX"
    assert session.written == b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n"


def test_manifest_is_deterministic_and_changes_with_any_pixel(fashion_batches, fashion_mnist) -> None:
    a = manifest_for(fashion_batches(130), input_name="input", batch_size=32, sample_shape=SAMPLE)
    b = manifest_for(fashion_batches(130, batch_size=17), input_name="input", batch_size=32, sample_shape=SAMPLE)
    assert a == b and a.sha256 == b.sha256  # the pipeline's own batch size does not matter
    assert (a.samples, a.batches, a.padded, a.batch_shape) == (130, 5, 30, (32, 1, 28, 28))
    assert manifest_for(fashion_batches(130), input_name="input", batch_size=64, sample_shape=SAMPLE).sha256 != a.sha256
    assert (
        manifest_for(fashion_batches(130, start=1), input_name="input", batch_size=32, sample_shape=SAMPLE).sha256
        != a.sha256
    )


def test_manifest_catches_a_source_that_delivers_fewer_samples_than_announced(fashion_batches) -> None:
    source = fashion_batches(50)
    source.count = 60
    with pytest.raises(CalibrationDataError, match="announced 60 samples and delivered 50"):
        manifest_for(source, input_name="input", batch_size=16, sample_shape=SAMPLE)
