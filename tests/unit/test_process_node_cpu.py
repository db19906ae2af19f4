"""The test node weighs each pod's processes as the kubelet does (tests/harness/node.py): pure rules, no cgroups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.node import MAX_CPU_SHARES, MIN_CPU_SHARES, PodCpuGroups, pod_cpu_shares


def _container(cpu: str | None) -> dict:
    return {"name": "c", "resources": {"requests": {"cpu": cpu}} if cpu else {}}


@pytest.mark.parametrize(
    ("requests", "shares"),
    [
        (["1"], 1024),
        (["250m"], 256),
        (["10m"], 10),
        (["100m", "400m"], 512),
        ([None], MIN_CPU_SHARES),
        (["1m"], MIN_CPU_SHARES),
        (["1000"], MAX_CPU_SHARES),
    ],
)
def test_shares_follow_the_cpu_request(requests: list[str | None], shares: int) -> None:
    assert pod_cpu_shares({"containers": [_container(c) for c in requests]}) == shares


def test_an_init_container_larger_than_the_main_ones_sets_the_weight() -> None:
    spec = {"initContainers": [_container("2")], "containers": [_container("500m")]}
    assert pod_cpu_shares(spec) == 2048


def test_a_hierarchy_that_cannot_be_written_turns_the_weights_off(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    assert PodCpuGroups.create("edgequant-node-1", root=tmp_path / "not-a-dir") is None


def test_groups_of_a_node_that_died_are_removed_and_a_live_one_is_kept(tmp_path: Path) -> None:
    dead = tmp_path / "edgequant-node-999999999"
    (dead / "some-pod-uid").mkdir(parents=True)
    live = tmp_path / "edgequant-node-1"  # PID 1 is always there
    live.mkdir()
    groups = PodCpuGroups.create("edgequant-node-2", root=tmp_path)
    assert groups is not None and (tmp_path / "edgequant-node-2" / "cpu.shares").read_text() == "1024"
    assert not dead.exists() and live.exists()
