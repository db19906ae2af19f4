"""numpy's BLAS on one thread while edgequant's own linear algebra runs beside a framework's thread pool.

Second moments and adaptive rounding (``analysis.post_training``) are many small
matrix products and factorizations. On a shared CPU OpenBLAS's threads spin
while they wait for a core that ONNX Runtime's or TensorFlow's threads hold:
on EfficientNet-Lite0 that cost 3-10x the CPU time of one thread, and more wall
time too. One thread gives bit-identical results (OpenBLAS splits the output
among threads, not the sums). threadpoolctl comes with the backends' extras.
"""

from __future__ import annotations

from contextlib import AbstractContextManager


def one_blas_thread() -> AbstractContextManager[object]:
    """A context in which numpy's BLAS runs on one thread."""
    from threadpoolctl import threadpool_limits

    limits: AbstractContextManager[object] = threadpool_limits(limits=1, user_api="blas")
    return limits
