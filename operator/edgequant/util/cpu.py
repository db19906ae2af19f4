"""CPU features that decide how 8-bit models should be quantized, read from /proc/cpuinfo.

Why it matters: on x86, integer kernels that multiply uint8 activations by
int8 weights (u8s8) without VNNI use VPMADDUBSW, which adds pairs of products
into int16 and saturates when both operands use the full 8-bit range. VNNI
(AVX512-VNNI, AVX-VNNI) and AMX accumulate in int32 and do not. Quantizing
to 7 bits ("reduce range") leaves room in int16. ARM dot-product kernels
accumulate in int32 as well.

``parse_cpuinfo`` is pure; ``detect`` reads this machine.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

#: /proc/cpuinfo flag -> the name people know it by, in the order reports list them.
X86_FEATURES: dict[str, str] = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
}
ARM_FEATURES: dict[str, str] = {
    "asimd": "NEON",
    "asimddp": "dot product",
    "i8mm": "I8MM",
}
_X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})
_ARM_MACHINES = frozenset({"aarch64", "arm64", "armv7l", "armv8l"})


@dataclass(frozen=True)
class CpuFeatures:
    machine: str
    """platform.machine(): x86_64, aarch64, ..."""
    model: str
    flags: frozenset[str]
    """Lower-case feature flags ('flags' on x86, 'Features' on ARM)."""

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in _X86_MACHINES

    @property
    def is_arm(self) -> bool:
        return self.machine.lower() in _ARM_MACHINES

    @property
    def vnni(self) -> bool:
        """An int8 dot product that accumulates in int32 (VNNI or AMX)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def u8s8_saturates(self) -> bool | None:
        """True on x86 without VNNI/AMX; False where int8 products accumulate in int32; None when unknown."""
        if self.is_x86:
            return not self.vnni
        if self.is_arm:
            return False
        return None

    def describe(self) -> str:
        """'x86_64 (AMD EPYC): AVX2, AVX512, AVX512-VNNI' — what the report says about this CPU."""
        names = X86_FEATURES if self.is_x86 else ARM_FEATURES if self.is_arm else {}
        present = [label for flag, label in names.items() if flag in self.flags]
        where = f"{self.machine} ({self.model})" if self.model else self.machine
        return f"{where}: {', '.join(present) if present else 'no SIMD int8 features listed'}"


def parse_cpuinfo(text: str, *, machine: str) -> CpuFeatures:
    """Features of the first processor block of a /proc/cpuinfo text."""
    flags: frozenset[str] = frozenset()
    model = ""
    for line in text.splitlines():
        if not line.strip():
            if flags:
                break  # end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return CpuFeatures(machine=machine, model=model, flags=flags)


def detect(path: Path = CPUINFO) -> CpuFeatures:
    """This machine's CPU; an unreadable cpuinfo (macOS, some sandboxes) gives no flags."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text, machine=platform.machine())
