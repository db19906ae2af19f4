"""Start and stop a real Kubernetes control plane on loopback, plus the process-backed node.

Components: etcd, kube-apiserver (TLS, RBAC, service-account signing keys, client-certificate
authentication), kube-controller-manager (every default controller, each with its own service
account), kube-scheduler and :mod:`tests.harness.node` (two nodes: a CPU node and a GPU node).

Binaries are looked up, one by one, in ``$KUBEBUILDER_ASSETS`` (the envtest convention) and then in
``.tools/bin`` of this checkout (``make cluster-bins`` builds them there), then on ``$PATH``.

Every process started here carries ``EDGEQUANT_CLUSTER_ID=<id>`` in its environment, the process
node passes it on to the containers it runs, and :meth:`Cluster.stop` (and ``python -m
tests.harness down``) ends any process still carrying that id, so nothing is left behind even
when a component died without cleaning up after itself.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import realnode
from .pki import Pki, make_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENT_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "node",
    "containerd",
    "kubelet",
)
#: ``node`` kinds: the process-backed node (fast suites) or a real kubelet + containerd (tests/harness/realnode.py).
NODE_KINDS = ("process", "real")
CLUSTER_ID_ENV = "EDGEQUANT_CLUSTER_ID"


class ClusterError(RuntimeError):
    """The control plane could not be started (the message names the component and its log)."""


def find_binaries(names: Iterable[str] = CONTROL_PLANE_BINARIES) -> dict[str, Path]:
    """Path of each binary: ``$KUBEBUILDER_ASSETS`` first, then ``.tools/bin``, then ``$PATH``."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    dirs = []
    if os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(Path(os.environ["KUBEBUILDER_ASSETS"]))
    dirs.append(TOOLS_BIN)
    for name in names:
        for d in dirs:
            p = d / name
            if p.is_file() and os.access(p, os.X_OK):
                found[name] = p
                break
        else:
            which = shutil.which(name)
            if which:
                found[name] = Path(which)
            else:
                missing.append(name)
    if missing:
        raise ClusterError(
            f"missing binaries {missing}: run `make cluster-bins` (builds them into {TOOLS_BIN}) "
            "or point KUBEBUILDER_ASSETS at a folder that holds them"
        )
    return found


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """preexec_fn: the child gets ``sig`` when the process that started it dies. The node gets
    SIGTERM, so that it can still stop the containers it started."""

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    return preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def marked_pids(cluster_id: str) -> list[int]:
    """Processes whose environment carries ``EDGEQUANT_CLUSTER_ID=<cluster_id>``."""
    needle = f"{CLUSTER_ID_ENV}={cluster_id}".encode()
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            pids.append(int(entry))
    return pids


def kill_marked(cluster_id: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then after ``grace`` seconds SIGKILL, every process marked with ``cluster_id``."""
    pids = marked_pids(cluster_id)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in marked_pids(cluster_id):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def tail(path: Path, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    pid: int | None = None


@dataclass
class Cluster:
    """A running (or stopped) control plane whose state lives in ``state_dir``.

    Attributes for tests: :attr:`kubeconfig` (admin, system:masters), :attr:`bin_dir` (where
    kubectl/kube-apiserver/... are; put it first on PATH), :attr:`server` (https URL),
    :attr:`logs` (component name -> log file), :attr:`pods_dir` (the node's per-pod folders with
    container output), :attr:`server_version`.
    """

    state_dir: Path
    detached: bool = False  # True for `make cluster-up`: processes outlive this Python process
    node_options: dict[str, Any] = field(default_factory=dict)
    start_timeout: float = 180.0
    node: str = "process"  # one of NODE_KINDS
    started_at: float = field(default_factory=time.time)
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    binaries: dict[str, Path] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _api_clients: list[Any] = field(default_factory=list)
    #: What stopping the real node could not remove (mounts); empty after a clean stop.
    teardown_problems: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- paths and handles
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def logs(self) -> dict[str, Path]:
        return {name: self.log_dir / f"{name}.log" for name in COMPONENT_ORDER}

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "node" / "pods"

    @property
    def bin_dir(self) -> Path:
        return self.binaries["kubectl"].parent if self.binaries else TOOLS_BIN

    @property
    def path_dirs(self) -> list[Path]:
        """Folders to put first on PATH: where the binaries were found, then ``.tools/bin``
        (helm lives there even when KUBEBUILDER_ASSETS provides the rest)."""
        dirs: list[Path] = []
        for p in [*(b.parent for b in self.binaries.values()), TOOLS_BIN]:
            if p not in dirs:
                dirs.append(p)
        return dirs

    @property
    def helm(self) -> Path:
        """The helm binary (``$KUBEBUILDER_ASSETS``, ``.tools/bin`` or ``$PATH``)."""
        return find_binaries(["helm"])["helm"]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    def env(self) -> dict[str, str]:
        """Environment for a command that should talk to this cluster (KUBECONFIG and PATH)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([*map(str, self.path_dirs), env.get("PATH", "")])
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; returns the CompletedProcess (text output).

        With ``check`` (default) a non-zero exit raises :class:`subprocess.CalledProcessError`
        whose message includes stderr.
        """
        cmd = [str(self.binaries["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode,
                cmd,
                proc.stdout,
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}",
            )
        return proc

    def client_configuration(self, token: str | None = None):
        """A ``kubernetes.client.Configuration`` for this cluster: admin by default, or
        authenticated with a bearer ``token`` (e.g. a ServiceAccount's)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        if token is None:
            config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        else:
            cfg.host = self.server
            cfg.ssl_ca_cert = str(self.pki.ca_crt)
            cfg.api_key = {"authorization": f"Bearer {token}"}
        cfg.connection_pool_maxsize = 32
        return cfg

    def api_client(self, token: str | None = None):
        """A new ``kubernetes.client.ApiClient`` (closed when the cluster stops)."""
        from kubernetes import client

        api = client.ApiClient(self.client_configuration(token))
        self._api_clients.append(api)
        return api

    # ---------------------------------------------------------------- start
    def start(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.node not in NODE_KINDS:
            raise ClusterError(f"node must be one of {NODE_KINDS}, not {self.node!r}")
        self.binaries = find_binaries()
        if self.node == "real":
            self._check_real_node()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        (self.state_dir / "node").mkdir(exist_ok=True)
        etcd_client, etcd_peer, apiserver = free_ports(3)
        self.ports = {"etcd": etcd_client, "etcd-peer": etcd_peer, "apiserver": apiserver}

        clients = {
            "admin": ("admin", ["system:masters"]),
            "kube-controller-manager": ("system:kube-controller-manager", []),
            "kube-scheduler": ("system:kube-scheduler", []),
        }
        server_ips = ["127.0.0.1", SERVICE_IP]
        if self.node == "real":
            clients["kubelet"] = (f"system:node:{realnode.NODE_NAME}", ["system:nodes"])
            server_ips.append(realnode.GATEWAY)
        pki = make_pki(
            self.state_dir / "pki",
            server_ips=server_ips,
            server_dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            clients=clients,
        )
        for name in clients:
            self._write_kubeconfig(self.kubeconfig if name == "admin" else self.state_dir / f"{name}.kubeconfig", name)
        self._save_state()

        d = self.state_dir
        self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=default",
                f"--data-dir={d / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"http://127.0.0.1:{etcd_client}/health"), 60)

        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_crt}",
                f"--secure-port={apiserver}",
                # The real node's pods reach the API server on the bridge (the kubernetes Service's DNAT).
                f"--bind-address={'0.0.0.0' if self.node == 'real' else '127.0.0.1'}",
                f"--advertise-address={realnode.GATEWAY if self.node == 'real' else '127.0.0.1'}",
                f"--kubelet-client-certificate={pki.crt('admin')}",
                f"--kubelet-client-key={pki.key('admin')}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                # OwnerReferencesPermissionEnforcement (OpenShift's default): setting blockOwnerDeletion on a Job needs
                # update on the owner's finalizers, which the operator's RBAC must grant (docs/security.md, item 4).
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", self._apiserver_ready, self.start_timeout)

        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-job-syncs=10",
                "--concurrent-gc-syncs=20",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        # The service-account controller (run by kube-controller-manager) creates `default`.
        self._wait("kube-controller-manager", lambda: self._default_sa_exists("default"), self.start_timeout)

        if self.node == "real":
            self._start_real_node()
            self._save_state()
            return
        node_argv = [
            sys.executable,
            str(Path(__file__).with_name("node.py")),
            "--kubeconfig",
            str(self.kubeconfig),
            "--state-dir",
            str(d / "node"),
            "--server-version",
            self.server_version,
        ]
        for key, value in self.node_options.items():
            node_argv += [f"--{key.replace('_', '-')}", str(value)]
        self._spawn("node", node_argv, cwd=REPO_ROOT, extra_env={"PYTHONUNBUFFERED": "1"})
        self._wait("node", self._nodes_ready, self.start_timeout)
        self._save_state()

    # ---------------------------------------------------------------- the real node
    def _check_real_node(self) -> None:
        try:
            kubelet: Path | None = find_binaries(["kubelet"])["kubelet"]
        except ClusterError:
            kubelet = None
        missing = realnode.missing_prerequisites(kubelet)
        if missing:
            raise realnode.RealNodeUnavailable(
                "the real node cannot start containers on this machine; missing:\n  - " + "\n  - ".join(missing)
            )
        if (
            realnode.CONTAINERD_SOCKET.exists()
            and subprocess.run(
                ["ctr", "--address", str(realnode.CONTAINERD_SOCKET), "version"], capture_output=True, timeout=10
            ).returncode
            == 0
        ):
            raise realnode.RealNodeUnavailable(
                f"a containerd already serves {realnode.CONTAINERD_ROOT} ({realnode.CONTAINERD_SOCKET}): another "
                "real node (or `make images` loading) runs on this machine; one real node per machine"
            )
        self.binaries["kubelet"] = kubelet

    def _start_real_node(self) -> None:
        d = self.state_dir / "node"
        kubelet_port, healthz_port = free_ports(2)
        self.ports.update({"kubelet": kubelet_port, "kubelet-healthz": healthz_port})
        realnode.setup_network(self.ports["apiserver"])
        pki = self.pki
        # The kubelet serves with the API server's certificate (its SANs include the node's address).
        paths = realnode.write_configs(
            d,
            ca=pki.ca_crt,
            cert=pki.crt("apiserver"),
            key=pki.key("apiserver"),
            port=kubelet_port,
            healthz_port=healthz_port,
        )
        self._write_kubeconfig(self.state_dir / "kubelet.kubeconfig", "kubelet")
        self._spawn("containerd", ["containerd", "--config", str(paths["containerd"]), "--log-level", "warn"])
        self._wait(
            "containerd",
            lambda: (
                subprocess.run(
                    ["ctr", "--address", str(realnode.CONTAINERD_SOCKET), "version"], capture_output=True, timeout=5
                ).returncode
                == 0
            ),
            60,
        )
        absent = set(realnode.REQUIRED_IMAGES) - realnode.loaded_images()
        if absent:
            raise realnode.RealNodeUnavailable(
                f"images missing from containerd's k8s.io namespace ({realnode.CONTAINERD_ROOT}): "
                f"{', '.join(sorted(absent))}; build and load them with `make images-test`"
            )
        self._spawn(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                f"--config={paths['kubelet']}",
                f"--kubeconfig={self.state_dir / 'kubelet.kubeconfig'}",
                f"--root-dir={d / 'kubelet'}",
                f"--hostname-override={realnode.NODE_NAME}",
                f"--node-ip={realnode.GATEWAY}",
                "--v=1",
            ],
        )
        self._wait("kubelet", self._nodes_ready, self.start_timeout)

    def _stop_real_node(self) -> list[str]:
        """Stop the kubelet, the pods' processes, containerd; undo mounts, netns, bridge, NAT."""
        kubelet = self.components.get("kubelet")
        if kubelet is not None and kubelet.pid is not None:
            self._terminate(kubelet, 5.0)
        realnode.kill_pod_processes()
        containerd = self.components.get("containerd")
        if containerd is not None and containerd.pid is not None and _pid_alive(containerd.pid):
            realnode.remove_containers()
            self._terminate(containerd, 10.0)
        kill_marked(self.cluster_id, grace=2.0)
        return realnode.teardown(self.state_dir / "node", self.started_at)

    def _write_kubeconfig(self, path: Path, user: str) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        pki = self.pki
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "edgequant-test",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(pki.ca_crt)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(pki.crt(user)), "client-key-data": b64(pki.key(user))},
                }
            ],
            "contexts": [
                {
                    "name": "edgequant-test",
                    "context": {"cluster": "edgequant-test", "user": user, "namespace": "default"},
                }
            ],
            "current-context": "edgequant-test",
        }
        path.write_text(json.dumps(cfg, indent=2))
        path.chmod(0o600)

    def _spawn(
        self, name: str, argv: list[str], cwd: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> None:
        log = self.logs[name]
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env[CLUSTER_ID_ENV] = self.cluster_id
        env.update(extra_env or {})
        with open(log, "ab") as out:
            out.write(f"==> {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.state_dir,
                env=env,
                start_new_session=True,
                preexec_fn=None
                if self.detached
                else _die_with_parent(signal.SIGTERM if name == "node" else signal.SIGKILL),
            )
        self.components[name] = Component(name, argv, log, proc, proc.pid)
        self._save_state()

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        comp = self.components.get(name)
        while True:
            for c in self.components.values():
                if c.proc is not None and c.proc.poll() is not None:
                    raise ClusterError(
                        f"{c.name} exited with code {c.proc.returncode} while waiting for {name}; "
                        f"log {c.log}:\n{tail(c.log, 40)}"
                    )
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                log = comp.log if comp else self.log_dir
                raise ClusterError(
                    f"{name} not ready after {timeout:.0f}s; log {log}:\n{tail(log, 40) if comp else ''}"
                )
            time.sleep(0.25)

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.crt("admin")), str(self.pki.key("admin")))
        return ctx

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.server + path, timeout=5, context=self._ssl_context()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _apiserver_ready(self) -> bool:
        status, _ = self._get("/readyz")
        return status == 200

    def _default_sa_exists(self, namespace: str) -> bool:
        status, _ = self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        return status == 200

    def _nodes_ready(self) -> bool:
        status, body = self._get("/api/v1/nodes")
        if status != 200:
            return False
        items = json.loads(body)["items"]
        if len(items) < (1 if self.node == "real" else 2):
            return False
        for n in items:
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
            taints = {t["key"] for t in n.get("spec", {}).get("taints", []) or []}
            if conds.get("Ready") != "True" or "node.kubernetes.io/not-ready" in taints:
                return False
        return True

    @property
    def server_version(self) -> str:
        status, body = self._get("/version")
        if status != 200:
            raise ClusterError(f"GET /version: {status} {body[:200]!r}")
        return json.loads(body)["gitVersion"]

    # ---------------------------------------------------------------- state file (cluster-up)
    def _save_state(self) -> None:
        state = {
            "cluster_id": self.cluster_id,
            "ports": self.ports,
            "node": self.node,
            "started_at": self.started_at,
            "kubeconfig": str(self.kubeconfig),
            "bin_dir": str(self.bin_dir),
            "path_dirs": [str(p) for p in self.path_dirs],
            "components": {c.name: {"pid": c.pid, "log": str(c.log)} for c in self.components.values()},
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @classmethod
    def attach(cls, state_dir: Path) -> Cluster:
        """A handle on a cluster started elsewhere (e.g. by `make cluster-up`) from its state."""
        state = json.loads((state_dir / "cluster.json").read_text())
        c = cls(
            state_dir=state_dir,
            detached=True,
            cluster_id=state["cluster_id"],
            node=state.get("node", "process"),
            started_at=state.get("started_at", 0.0),
        )
        c.ports = state["ports"]
        with contextlib.suppress(ClusterError):
            c.binaries = find_binaries()
        for name, info in state["components"].items():
            c.components[name] = Component(name, [], Path(info["log"]), None, info["pid"])
        return c

    def running(self) -> bool:
        return any(c.pid and _pid_alive(c.pid) for c in self.components.values())

    # ---------------------------------------------------------------- stop
    def stop(self, grace: float = 10.0) -> None:
        """Stop every component (node first, etcd last) and any process left with our id."""
        for api in self._api_clients:
            with contextlib.suppress(Exception):
                api.close()
        self._api_clients.clear()
        if self.node == "real":
            self.teardown_problems = self._stop_real_node()
        for name in reversed(COMPONENT_ORDER):
            comp = self.components.get(name)
            if comp is None or comp.pid is None:
                continue
            self._terminate(comp, grace if name == "node" else 5.0)
        kill_marked(self.cluster_id, grace=2.0)
        self._save_state()

    @staticmethod
    def _terminate(comp: Component, grace: float) -> None:
        pid = comp.pid
        assert pid is not None
        if not _pid_alive(pid):
            if comp.proc is not None:
                comp.proc.poll()
            return
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if comp.proc is not None:
                if comp.proc.poll() is not None:
                    break
            elif not _pid_alive(pid):
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if comp.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                comp.proc.wait(timeout=5)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self, namespace: str | None = None, lines: int = 60) -> list[tuple[str, str]]:
        """(title, text) sections: each component's log tail and, for ``namespace``, the pods'
        container output and the namespace's objects and events."""
        sections = []
        for name, path in self.logs.items():
            if path.exists():
                sections.append((f"{name} log ({path}), last {lines} lines", tail(path, lines)))
        if namespace:
            for pod_dir in sorted(self.pods_dir.glob(f"{namespace}_*")):
                for log in sorted(pod_dir.glob("containers/*/*.log")):
                    sections.append((f"container output {log}", tail(log, 40)))
            with contextlib.suppress(Exception):
                out = self.kubectl("get", "all,events", "-n", namespace, "-o", "wide", check=False, timeout=20)
                sections.append((f"kubectl get all,events -n {namespace}", out.stdout + out.stderr))
        return sections
