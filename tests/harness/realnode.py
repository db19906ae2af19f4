"""A real Kubernetes node for the test control plane: the kubelet built from the control plane's own
Kubernetes module (tools/k8s), containerd and runc (Debian's packages) and a CNI bridge (Debian's
containernetworking-plugins), running the images `make images` built and loaded.

Layout (docs/control-plane.md, "The real node"):

- containerd's content store and snapshots live in :data:`CONTAINERD_ROOT` (persistent: images are
  loaded once per machine by ``make images``); its socket is ``CONTAINERD_ROOT.sock``; its run-time
  state, the kubelet's root dir and the CNI configuration live in the cluster's state dir.
- Pods sit on the bridge :data:`BRIDGE` in :data:`POD_SUBNET`; the host is :data:`GATEWAY` there, so
  a pod reaches servers the tests start on that address (the moto S3 server), and the API server
  through the ``kubernetes`` Service IP, which a DNAT rule points at the API server (what kube-proxy
  would do for that one Service).
- Every pod cgroup sits below :data:`CGROUP_ROOT`: stopping the node kills what is left there, so
  no container process outlives the cluster, then unmounts what the kubelet and containerd mounted,
  removes the pods' network namespaces, the bridge and the DNAT chain.

Only one real node runs per machine (one containerd owns :data:`CONTAINERD_ROOT`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "edgequant-real"
CONTAINERD_ROOT = Path(os.environ.get("EDGEQUANT_CONTAINERD_ROOT", "/var/lib/edgequant/containerd"))
CONTAINERD_SOCKET = Path(f"{CONTAINERD_ROOT}.sock")
PAUSE_IMAGE = "localhost/edgequant/pause:1.0"
BRIDGE = "eqcni0"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = "/edgequant"
CGROUP_V1 = Path("/sys/fs/cgroup")
NAT_CHAIN = "EDGEQUANT-REALNODE"
NETNS_DIR = Path("/run/netns")
#: Debian packages the real node needs (the Makefile's test target installs them).
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables")
#: Images the suite runs, which `make images-test` (mk/images.mk TEST_IMAGES) loads into containerd's k8s.io namespace.
REQUIRED_IMAGES = (
    "docker.io/edgequant/operator:0.1.0",
    "docker.io/edgequant/quantizer-tflite:0.1.0",
    "docker.io/edgequant/quantizer-onnx:0.1.0",
    PAUSE_IMAGE,
)


class RealNodeUnavailable(RuntimeError):
    """The machine lacks something the real node needs; the message names it and the fix."""


def missing_prerequisites(kubelet: Path | None) -> list[str]:
    """What this machine lacks to run the real node, each with its fix (empty: nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: containerd, runc and the kubelet need it (run the suite as root)")
    for tool in ("containerd", "ctr", "runc", "iptables", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` on PATH (apt-get install {' '.join(PACKAGES)})")
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"CNI plugins in {CNI_BIN_DIR} (apt-get install containernetworking-plugins)")
    if kubelet is None or not kubelet.exists():
        missing.append("the kubelet binary in .tools/bin (make cluster-bins NODE=real)")
    if not (CGROUP_V1 / "memory").is_dir() and not (CGROUP_V1 / "cgroup.controllers").exists():
        missing.append(f"cgroups mounted at {CGROUP_V1}")
    return missing


def loaded_images() -> set[str]:
    """Image names in containerd's k8s.io namespace (containerd must be running)."""
    out = subprocess.run(
        ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(out.split())


def containerd_config(state: Path) -> str:
    """containerd's configuration: CRI with runc on cgroupfs, overlayfs, our CNI and sandbox image."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{state / "containerd"}"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state / "containerd-opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # Without CAP_SYS_RESOURCE (as in a container) the sandbox's oom_score_adj -998 cannot be set: stay at ours.
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{state / "cni" / "net.d"}"
"""


def cni_config(state: Path) -> dict:
    """A bridge network with host-local addresses (state kept in the cluster's state dir)."""
    return {
        "cniVersion": "0.4.0",
        "name": "edgequant",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(state / "cni" / "ipam"),
                },
            },
        ],
    }


def kubelet_config(state: Path, ca: Path, cert: Path, key: Path, port: int, healthz_port: int) -> dict:
    """KubeletConfiguration for this machine: cgroup v1 allowed, cgroupfs, no swap check, image GC
    off (the quantizer images are large and loaded once), fast volume stats for emptyDir sizeLimit."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": GATEWAY,
        "port": port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "readOnlyPort": 0,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "volumeStatsAggPeriod": "5s",
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 30,
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "5Mi",
        "podLogsDir": str(state / "pod-logs"),
    }


def run(*argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


def setup_network(apiserver_port: int) -> None:
    """The pod bridge with the host's address on it, and the DNAT of the kubernetes Service."""
    if run("ip", "link", "show", BRIDGE).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge", check=True)
    run("ip", "addr", "replace", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE, check=True)
    run("ip", "link", "set", BRIDGE, "up", check=True)
    make_cgroup_root()
    teardown_nat()
    run("iptables", "-t", "nat", "-N", NAT_CHAIN, check=True)
    run(
        "iptables",
        "-t",
        "nat",
        "-A",
        NAT_CHAIN,
        "-d",
        "10.0.0.1/32",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "DNAT",
        "--to-destination",
        f"{GATEWAY}:{apiserver_port}",
        check=True,
    )
    run("iptables", "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN, check=True)


def teardown_nat() -> None:
    while run("iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN).returncode == 0:
        pass
    run("iptables", "-t", "nat", "-F", NAT_CHAIN)
    run("iptables", "-t", "nat", "-X", NAT_CHAIN)


def write_configs(state: Path, **kubelet_args) -> dict[str, Path]:
    """containerd's config, the CNI conflist and the kubelet's config, under ``state``."""
    (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    paths = {
        "containerd": state / "containerd.toml",
        "cni": state / "cni" / "net.d" / "10-edgequant.conflist",
        "kubelet": state / "kubelet-config.json",
    }
    paths["containerd"].write_text(containerd_config(state))
    paths["cni"].write_text(json.dumps(cni_config(state), indent=2))
    paths["kubelet"].write_text(json.dumps(kubelet_config(state, **kubelet_args), indent=2))
    return paths


def make_cgroup_root() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset starts empty, so it gets its parent's."""
    for hierarchy in CGROUP_V1.iterdir():
        if not (hierarchy / "cgroup.procs").exists() or hierarchy.name == "unified":
            continue
        top = hierarchy / CGROUP_ROOT.lstrip("/")
        top.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (top / name).read_text().strip():
                (top / name).write_text((hierarchy / name).read_text())


def _cgroup_dirs() -> list[Path]:
    """Our cgroup in every v1 hierarchy (and the unified one), deepest first."""
    found: list[Path] = []
    for hierarchy in [*CGROUP_V1.iterdir(), CGROUP_V1 / "unified"] if CGROUP_V1.is_dir() else []:
        top = hierarchy / CGROUP_ROOT.lstrip("/")
        if top.is_dir():
            found += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            found.append(top)
    return found


def kill_pod_processes(timeout: float = 20) -> int:
    """SIGKILL every process in the node's pod cgroups until none is left; returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set()
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.2)
    return len(killed)


def remove_cgroups() -> None:
    for d in _cgroup_dirs():
        with contextlib.suppress(OSError):
            d.rmdir()


def remove_containers() -> None:
    """Delete every container (and its snapshot) the CRI made, while containerd still runs, so the
    next start finds no stale sandboxes in the persistent store."""
    ctr = ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io"]
    listing = run(*ctr, "containers", "ls", "-q")
    for cid in listing.stdout.split() if listing.returncode == 0 else []:
        run(*ctr, "tasks", "kill", "-s", "SIGKILL", cid)
        run(*ctr, "tasks", "rm", "-f", cid)
        run(*ctr, "containers", "rm", cid)


def mounts_below(*roots: Path) -> list[str]:
    """Mount points at or below ``roots`` (deepest first), from /proc/self/mountinfo."""
    prefixes = [str(r.resolve()) if r.exists() else str(r) for r in roots]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_below(*roots: Path) -> list[str]:
    left = []
    for point in mounts_below(*roots):
        if run("umount", point).returncode != 0 and run("umount", "-l", point).returncode != 0:
            left.append(point)
    return left


def netns_created_since(t0: float) -> list[Path]:
    """CNI network namespaces (``cni-*`` under /run/netns) created after ``t0``."""
    if not NETNS_DIR.is_dir():
        return []
    return [p for p in NETNS_DIR.glob("cni-*") if p.lstat().st_mtime >= t0 - 1]


def teardown(state: Path, started_at: float) -> list[str]:
    """Everything after the kubelet and containerd stopped: pod processes, mounts, netns, cgroups,
    bridge, NAT rules. Returns what could not be removed (empty when clean)."""
    problems = []
    kill_pod_processes()
    for ns in netns_created_since(started_at):
        problems += unmount_below(ns)
        with contextlib.suppress(OSError):
            ns.unlink()
    problems += unmount_below(state)
    remove_cgroups()
    run("ip", "link", "del", BRIDGE)
    teardown_nat()
    return problems


@dataclass
class Leftovers:
    """What a stopped real node left behind (all empty when it stopped cleanly)."""

    processes: list[int]
    mounts: list[str]
    netns: list[str]
    bridge: bool

    @classmethod
    def find(cls, state: Path, started_at: float) -> Leftovers:
        pids = []
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (d / "cgroup.procs").read_text().split()]
        return cls(
            processes=pids,
            mounts=mounts_below(state),
            netns=[str(p) for p in netns_created_since(started_at)],
            bridge=run("ip", "link", "show", BRIDGE).returncode == 0,
        )

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.netns or self.bridge)
