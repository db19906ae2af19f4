"""The worker's memory budget (setting, cgroup, default) and the probe batch it allows. No framework."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgequant.api.worker_contract import MEMORY_BUDGET_ENV
from edgequant.util.memory import (
    BUDGET_ENV,
    DEFAULT_BUDGET_BYTES,
    MAX_PROBE_BATCH,
    PROBE_SHARE,
    memory_budget,
    parse_quantity,
    probe_batch_size,
    tensor_bytes_per_sample,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1073741824", 2**30),
        ("3Gi", 3 * 2**30),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("64k", 64_000),
        ("1e9", 10**9),
        (" 8Ki ", 8192),
    ],
)
def test_quantities_are_read_as_kubernetes_writes_them(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["3GB", "lots", "-1Gi", "0", "Gi"])
def test_a_bad_setting_names_the_variable_and_the_fix(text: str) -> None:
    with pytest.raises(ValueError, match=rf"{BUDGET_ENV}=.*(3Gi|positive)"):
        parse_quantity(text)


def test_the_worker_reads_the_name_the_operator_sets() -> None:
    assert BUDGET_ENV == MEMORY_BUDGET_ENV == "EDGEQUANT_MEMORY_BUDGET"


def _cgroup(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return root


def test_the_setting_wins_over_the_cgroup_limit(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, "memory.max", str(4 * 2**30))
    budget = memory_budget({BUDGET_ENV: "3Gi"}, cgroup_root=root)
    assert budget.bytes == 3 * 2**30 and budget.source == BUDGET_ENV


@pytest.mark.parametrize("name", ["memory.max", "memory/memory.limit_in_bytes"])
def test_without_a_setting_the_cgroup_limit_is_the_budget(tmp_path: Path, name: str) -> None:
    budget = memory_budget({}, cgroup_root=_cgroup(tmp_path, name, str(5 * 2**30)))
    assert budget.bytes == 5 * 2**30 and "cgroup" in budget.source


@pytest.mark.parametrize(("name", "text"), [("memory.max", "max"), ("memory/memory.limit_in_bytes", str(2**63 - 4096))])
def test_an_unlimited_cgroup_falls_back_to_the_default(tmp_path: Path, name: str, text: str) -> None:
    budget = memory_budget({BUDGET_ENV: " "}, cgroup_root=_cgroup(tmp_path, name, text))
    assert budget.bytes == DEFAULT_BUDGET_BYTES and "default" in budget.source


def test_no_cgroup_files_falls_back_to_the_default(tmp_path: Path) -> None:
    assert memory_budget({}, cgroup_root=tmp_path / "absent").bytes == DEFAULT_BUDGET_BYTES


def test_batch_is_the_budget_share_over_the_bytes_per_sample() -> None:
    per_sample = 80 * 2**20  # a 224x224 MobileNet-class model: ~40 MiB of activations per model and sample
    assert (
        probe_batch_size(budget_bytes=3 * 2**30, bytes_per_sample=per_sample)
        == int(PROBE_SHARE * 3 * 2**30) // per_sample
        == 9
    )
    assert probe_batch_size(budget_bytes=2**30, bytes_per_sample=per_sample, share=0.5) == 6


def test_batch_is_clamped_to_one_and_sixty_four() -> None:
    assert probe_batch_size(budget_bytes=1, bytes_per_sample=10**9) == 1
    assert probe_batch_size(budget_bytes=2**40, bytes_per_sample=1000) == MAX_PROBE_BATCH == 64
    assert probe_batch_size(budget_bytes=2**30, bytes_per_sample=0) == 64


def test_tensor_bytes_per_sample_ignores_the_batch_dimension() -> None:
    assert tensor_bytes_per_sample(("n", 32, 112, 112), 4) == 32 * 112 * 112 * 4
    assert tensor_bytes_per_sample((1, 1000), 4) == 4000
    assert tensor_bytes_per_sample(("n", "c", 7, 7), 4) is None
    assert tensor_bytes_per_sample((None, 3, -1), 4) is None
