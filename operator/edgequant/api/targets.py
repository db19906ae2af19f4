"""Deployment targets: the device a QuantizationJob or a sweep cell is meant for, and its default methods.

Minimal table: a target names the methods that suit it, in preference order. ``resolve_target`` is where a
target fills in what a spec leaves out; here it only reports the method the spec carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TargetProfile:
    name: str
    methods: tuple[str, ...]
    """Default methods for the target, most preferred first."""


@dataclass(frozen=True)
class TargetChoice:
    """One value a target chose for a spec, and why."""

    field: str
    value: str
    reason: str


TARGETS: Mapping[str, TargetProfile] = {
    p.name: p
    for p in (
        TargetProfile("rpi-xnnpack", ("tflite-int8", "tflite-float16")),
        TargetProfile("coral-edgetpu", ("tflite-int8",)),
        TargetProfile("jetson", ("tensorrt-int8", "tensorrt-mixed")),
        TargetProfile("x86-avx2", ("onnx-static",)),
        TargetProfile("x86-vnni", ("onnx-static",)),
        TargetProfile("arm64-cpu", ("tflite-int8",)),
        TargetProfile("generic", ("onnx-static",)),
    )
}


def resolve_target(spec: Any) -> tuple[Any, list[TargetChoice]]:
    """The spec with what its target fills in, and the choices made (none beyond naming the method here)."""
    target = getattr(spec, "target", None)
    if target is None:
        return spec, []
    return spec, [TargetChoice("method", str(spec.method), f"set in the spec (target {target})")]
