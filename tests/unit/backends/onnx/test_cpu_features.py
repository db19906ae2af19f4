"""CPU features from /proc/cpuinfo text (pure), and what the reports say about them."""

from __future__ import annotations

from pathlib import Path

from edgequant.util.cpu import detect, parse_cpuinfo

EPYC_GENOA = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse2 avx f16c avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu amx_int8
"""
HASWELL = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2673 v3\nflags\t\t: fpu sse2 avx avx2 fma\n"
ALDER_LAKE = "processor\t: 0\nmodel name\t: 12th Gen Intel(R) Core(TM) i7-1260P\nflags\t\t: fpu avx avx2 avx_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f amx_tile amx_int8 amx_bf16\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp i8mm\nCPU implementer\t: 0x41\n"


def test_x86_with_avx512_vnni_does_not_saturate() -> None:
    cpu = parse_cpuinfo(EPYC_GENOA, machine="x86_64")
    assert cpu.is_x86 and cpu.vnni and cpu.u8s8_saturates is False
    assert "amx_int8" not in cpu.flags  # only the first processor's block is read
    assert cpu.describe() == "x86_64 (AMD EPYC 9R14): AVX2, AVX512, AVX512-VNNI"


def test_avx2_without_vnni_saturates() -> None:
    cpu = parse_cpuinfo(HASWELL, machine="x86_64")
    assert not cpu.vnni and cpu.u8s8_saturates is True
    assert cpu.describe() == "x86_64 (Intel(R) Xeon(R) CPU E5-2673 v3): AVX2"


def test_avx_vnni_and_amx_count_as_vnni() -> None:
    assert parse_cpuinfo(ALDER_LAKE, machine="x86_64").u8s8_saturates is False
    amx = parse_cpuinfo(SAPPHIRE_RAPIDS, machine="x86_64")
    assert amx.u8s8_saturates is False and amx.describe().endswith("AVX2, AVX512, AMX-INT8")


def test_arm_features_line() -> None:
    cpu = parse_cpuinfo(GRAVITON, machine="aarch64")
    assert cpu.is_arm and cpu.u8s8_saturates is False
    assert cpu.describe() == "aarch64: NEON, dot product, I8MM"


def test_unknown_when_nothing_is_listed(tmp_path: Path) -> None:
    cpu = detect(tmp_path / "no-cpuinfo")
    assert cpu.flags == frozenset()
    unknown = parse_cpuinfo("", machine="riscv64")
    assert unknown.u8s8_saturates is None and unknown.describe() == "riscv64: no SIMD int8 features listed"


def test_this_machine_is_read() -> None:
    cpu = detect()
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("avx2" in cpu.flags) == (" avx2" in text)
