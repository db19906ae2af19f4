"""Offline validation of QuantizationJob manifests: every problem with its field path and a fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgequant.api import v1alpha1 as api


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (fix: {self.fix})"


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or "(document)"


def _fix_for(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"add the required field `{error['loc'][-1]}`"
    if kind == "extra_forbidden":
        return "remove it or fix its spelling (see `kubectl explain quantizationjob.spec`)"
    if kind in ("enum", "literal_error"):
        return f"use one of {ctx.get('expected', 'the allowed values')}"
    if kind.startswith(("greater_than", "less_than")):
        return "use a value in the allowed range"
    if kind in ("int_parsing", "int_type", "float_parsing", "float_type", "bool_parsing", "string_type", "list_type", "dict_type", "model_type"):
        return "use the documented type for this field"
    if kind in ("too_short", "too_long"):
        return "give the documented number of items"
    if kind == "string_pattern_mismatch":
        return f"match the pattern {ctx.get('pattern', '')}"
    return "see the message and `kubectl explain quantizationjob.spec`"


def _cross_field_problems(message: str) -> list[Problem]:
    """Cross-field rule failures arrive as one ValueError naming each rule's field."""
    problems = []
    by_message = {r.message: r for r in api.CROSS_FIELD_RULES}
    for chunk in message.split("; "):
        field, _, text = chunk.partition(": ")
        if text in by_message:
            head, _, tail = text.partition(": ")
            problems.append(Problem(field=field, message=head if tail else text, fix=tail or text))
    return problems


def validate_document(doc: Any) -> tuple[api.QuantizationJob | None, list[Problem]]:
    """Validate one parsed manifest; returns the model (when valid) and all problems found."""
    if not isinstance(doc, dict):
        return None, [Problem("(document)", "not a mapping", "write a QuantizationJob manifest (apiVersion, kind, metadata, spec)")]
    try:
        return api.QuantizationJob.model_validate(doc), []
    except ValidationError as exc:
        problems: list[Problem] = []
        for error in exc.errors(include_url=False):
            msg = str(error["msg"]).removeprefix("Value error, ")
            cross = _cross_field_problems(msg)
            if cross:
                problems.extend(cross)
                continue
            field = _loc_to_path(tuple(error["loc"]))
            if error["type"] == "value_error" and ": " in msg:
                head, _, tail = msg.partition(": ")
                problems.append(Problem(field, head, tail))
            else:
                problems.append(Problem(field, msg, _fix_for(error)))
        return None, problems
