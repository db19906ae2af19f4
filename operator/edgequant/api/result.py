"""The compact result the worker writes to its termination message (< 4 KiB) for the operator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import Field

from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.v1alpha1 import ApiModel, Results

#: Kubernetes truncates termination messages at 4096 bytes; stay well below.
TERMINATION_MESSAGE_LIMIT = 3584
#: What the status says when the results had to be shortened to fit.
SHORTENED_NOTE = "results shortened to fit the 4 KiB termination message; report.json has them all"


class WorkerResult(ApiModel):
    exit_code: int = Field(..., description="The worker's exit code (edgequant.api.exitcodes).")
    reason: str = Field(..., description="CamelCase reason matching the exit code.")
    message: str = Field("", description="One-line summary or the error with its fix.")
    results: Results | None = Field(None, description="Results when an artifact was published.")
    shortened: bool = Field(False, description="True when parts of the results were left out to fit the limit.")
    stage: str | None = Field(
        None, max_length=64, description="The last stage the worker started, 'n/N name' (status.progress)."
    )

    @classmethod
    def for_exit(cls, code: ExitCode, message: str, results: Results | None = None) -> WorkerResult:
        return cls(exit_code=int(code), reason=REASONS[code], message=message, results=results)

    def to_termination_message(self) -> str:
        """Serialise compactly; past the limit, leave out detail step by step (the last step always fits)."""
        data = self.to_wire()
        if not data.get("shortened"):
            data.pop("shortened", None)  # only when true: operators older than the flag still parse the rest
        text = _dump(data)
        for step in _SHRINK_STEPS:
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
                return text
            step(data)
            data["shortened"] = True
            text = _dump(data)
        return text

    @classmethod
    def from_termination_message(cls, text: str) -> WorkerResult:
        return cls.model_validate(json.loads(text))


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut so that its JSON encoding (quotes aside) takes at most ``max_bytes`` bytes; '…' marks a cut."""
    if len(json.dumps(text)) - 2 <= max_bytes:
        return text
    budget, kept = max_bytes - len(json.dumps("…")) + 2, []
    for char in text[:max_bytes]:
        budget -= len(json.dumps(char)) - 2
        if budget < 0:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _results(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("results") or {}


def _cut_lists_and_message(data: dict[str, Any]) -> None:
    data["message"] = _cut(data.get("message", ""), 1024)
    res = _results(data)
    for key in ("warnings", "sensitiveLayers", "pinnedLayers"):
        if key in res:
            res[key] = [_cut(str(v), 128) for v in res[key][:3]]


def _drop_detail(data: dict[str, Any]) -> None:
    res = _results(data)
    for key in ("warnings", "inputContract", "sensitiveLayers", "pinnedLayers"):
        res.pop(key, None)
    data["message"] = _cut(data.get("message", ""), 512)


def _drop_report_uri(data: dict[str, Any]) -> None:
    _results(data).pop("reportUri", None)


def _drop_artifact(data: dict[str, Any]) -> None:
    _results(data).pop("artifact", None)


def _drop_results(data: dict[str, Any]) -> None:
    """The last step: exit code, reason (short, from REASONS) and a 1 KiB message always fit."""
    data.pop("results", None)
    data["reason"] = _cut(str(data.get("reason", "")), 64)
    data["message"] = _cut(data.get("message", ""), 1024)


_SHRINK_STEPS: tuple[Callable[[dict[str, Any]], None], ...] = (
    _cut_lists_and_message,
    _drop_detail,
    _drop_report_uri,
    _drop_artifact,
    _drop_results,
)
