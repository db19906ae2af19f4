"""Threads that serve status refreshes, results first.

A refresh that may write a result (a pod ended, a Job concluded) is what a user waits on; one that may write
Running or Pending is not. Both wait on the API server, not the CPU, so they share one set of threads, and a
waiting result refresh always starts before any waiting other one: a burst of new jobs (their Running writes)
never delays the result of one that ended, and a burst of results gets every thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: Queue ranks: lower starts first.
RESULT = 0
OTHER = 1


class RefreshPool:
    """A fixed set of threads taking work from one queue ordered by rank, then by arrival."""

    def __init__(self, workers: int, *, name: str = "edgequant-refresh") -> None:
        if workers < 1:
            raise ValueError(f"a refresh pool needs at least one thread, not {workers}")
        self._queue: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._arrivals = itertools.count()
        self._ready = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], Any], *, rank: int = OTHER) -> Future[Any]:
        """Queue ``fn``; its Future holds what it returns or raises. Refused (RuntimeError) once shut down."""
        future: Future[Any] = Future()
        with self._ready:
            if self._stopped:
                raise RuntimeError("the refresh pool is shut down")
            heapq.heappush(self._queue, (rank, next(self._arrivals), future, fn))
            self._ready.notify()
        return future

    def waiting(self) -> dict[int, int]:
        """Queued (not started) work by rank."""
        with self._ready:
            counts: dict[int, int] = {}
            for rank, *_ in self._queue:
                counts[rank] = counts.get(rank, 0) + 1
            return counts

    def shutdown(self) -> None:
        """Cancel what has not started and let the threads end after their current work."""
        with self._ready:
            self._stopped = True
            for _, _, future, _ in self._queue:
                future.cancel()
            self._queue.clear()
            self._ready.notify_all()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopped:
                    self._ready.wait()
                if not self._queue:
                    return
                _, _, future, fn = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to whoever awaits the Future, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)
