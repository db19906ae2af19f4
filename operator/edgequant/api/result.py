"""The compact result the worker writes to its termination message (< 4 KiB) for the operator."""

from __future__ import annotations

import json

from pydantic import Field

from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.v1alpha1 import ApiModel, Results

#: Kubernetes truncates termination messages at 4096 bytes; stay well below.
TERMINATION_MESSAGE_LIMIT = 3584


class WorkerResult(ApiModel):
    exit_code: int = Field(..., description="The worker's exit code (edgequant.api.exitcodes).")
    reason: str = Field(..., description="CamelCase reason matching the exit code.")
    message: str = Field("", description="One-line summary or the error with its fix.")
    results: Results | None = Field(None, description="Results when an artifact was published.")

    @classmethod
    def for_exit(cls, code: ExitCode, message: str, results: Results | None = None) -> "WorkerResult":
        return cls(exit_code=int(code), reason=REASONS[code], message=message, results=results)

    def to_termination_message(self) -> str:
        """Serialise compactly, shrinking lists and the message until it fits the limit."""
        data = self.to_wire()
        text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        res = data.get("results") or {}
        for key in ("warnings", "sensitiveLayers", "pinnedLayers"):
            if key in res:
                res[key] = res[key][:3]
        text = json.dumps(data, separators=(",", ":"))
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and len(data.get("message", "")) > 80:
            data["message"] = data["message"][: len(data["message"]) // 2] + "…"
            text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            res.pop("warnings", None)
            res.pop("inputContract", None)
            text = json.dumps(data, separators=(",", ":"))
        return text

    @classmethod
    def from_termination_message(cls, text: str) -> "WorkerResult":
        return cls.model_validate(json.loads(text))
