"""The refresh pool: result refreshes start before waiting others, failures reach the caller, shutdown drops the rest.

Synchronised with events, not timing: a gate holds the pool's one thread busy while the queue fills.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from edgequant.controller import refresh_pool
from edgequant.controller.refresh_pool import RefreshPool

WAIT = 30.0  # seconds; only a broken pool ever waits this long


def _busy(pool: RefreshPool) -> threading.Event:
    """Occupy the pool's one thread until the returned gate is set."""
    started, gate = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert gate.wait(WAIT)

    pool.submit(hold)
    assert started.wait(WAIT)
    return gate


def test_waiting_results_start_before_waiting_others_and_each_rank_keeps_its_order() -> None:
    pool = RefreshPool(1)
    try:
        gate = _busy(pool)
        order: list[str] = []
        futures = [
            pool.submit(lambda: order.append("running a"), rank=refresh_pool.OTHER),
            pool.submit(lambda: order.append("pending b"), rank=refresh_pool.OTHER),
            pool.submit(lambda: order.append("result c"), rank=refresh_pool.RESULT),
            pool.submit(lambda: order.append("result d"), rank=refresh_pool.RESULT),
        ]
        assert pool.waiting() == {refresh_pool.OTHER: 2, refresh_pool.RESULT: 2}
        gate.set()
        for future in futures:
            future.result(WAIT)
        assert order == ["result c", "result d", "running a", "pending b"]
        assert pool.waiting() == {}
    finally:
        pool.shutdown()


def test_what_a_refresh_returns_or_raises_reaches_its_future() -> None:
    pool = RefreshPool(2)
    try:
        assert pool.submit(lambda: 42).result(WAIT) == 42

        def fail() -> None:
            raise ValueError("the status keeps changing")

        with pytest.raises(ValueError, match="keeps changing"):
            pool.submit(fail, rank=refresh_pool.RESULT).result(WAIT)
        assert pool.submit(lambda: "still serving").result(WAIT) == "still serving"  # a failure ends no thread
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_refuses_more() -> None:
    pool = RefreshPool(1)
    gate = _busy(pool)
    queued = pool.submit(lambda: None)
    pool.shutdown()
    gate.set()
    with pytest.raises(CancelledError):
        queued.result(WAIT)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        RefreshPool(0)
