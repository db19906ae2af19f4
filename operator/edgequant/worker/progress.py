"""How the pipeline tells the world what it is doing: log lines in the pod, progress bars in the CLI."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def stage_started(self, *, index: int, total: int, name: str, title: str) -> None: ...

    def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None: ...

    def log(self, message: str) -> None:
        """One human-readable line about the current stage."""
        ...

    def advance(self, *, task: str, done: int, total: int) -> None:
        """Work inside a stage, e.g. images decoded or scored."""
        ...


class LogProgress:
    """Timestamped lines on stderr (the pod log): stage starts and ends, and every quarter of long tasks."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._start = time.monotonic()
        self._reported: dict[str, int] = {}

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self._start:7.1f}s] {text}", file=self._stream, flush=True)

    def stage_started(self, *, index: int, total: int, name: str, title: str) -> None:
        self._line(f"stage {index}/{total} {name}: {title}")

    def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None:
        self._line(f"stage {name} {'done' if ok else 'FAILED'} in {seconds:.1f}s")

    def log(self, message: str) -> None:
        self._line(f"  {message}")

    def advance(self, *, task: str, done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if done == total or quarter > self._reported.get(task, 0):
            self._reported[task] = quarter
            self._line(f"  {task}: {done}/{total}")
            if done == total:
                self._reported.pop(task, None)


class SilentProgress:
    def stage_started(self, *, index: int, total: int, name: str, title: str) -> None:
        pass

    def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def advance(self, *, task: str, done: int, total: int) -> None:
        pass
