"""Kueue's controller manager as a host process against the test control plane (docs/kueue.md).

The binary is built from the Go module ``sigs.k8s.io/kueue`` (``make kueue-bin``, tools/kueue); its CRDs are
applied from the same module's source in the Go module cache (``config/components/crd/bases``), never from copies.

What a Kueue Deployment gets from the cluster is provided the way a kubelet would: the webhook Secret
(``kueue-system/kueue-webhook-server-cert``) holds a CA and a serving certificate made here, and the same files
are in the manager's certificate folder (a kubelet would mount the Secret there). Kueue's internal certificate
management finds them valid, keeps them, and injects the CA into the conversion webhooks of its CRDs, which point
at the manager's webhook server on 127.0.0.1, so that every served version of Kueue's API works. No mutating or
validating webhook configuration is installed: the edgequant operator creates its Jobs suspended and labelled
itself, which is all Kueue's Job webhook would add.

Usage::

    kueue = Kueue(cluster, state_dir).start()   # applies the CRDs, starts the manager, waits for /readyz
    ...
    kueue.stop()

The process carries the cluster's ``EDGEQUANT_CLUSTER_ID``, so the cluster's teardown ends it too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import (
    CLUSTER_ID_ENV,
    REPO_ROOT,
    Cluster,
    ClusterError,
    _die_with_parent,
    find_binaries,
    free_ports,
    tail,
)
from .pki import make_webhook_pki

TOOLS_DIR = REPO_ROOT / "tools" / "kueue"
NAMESPACE = "kueue-system"
WEBHOOK_SERVICE = "kueue-webhook-service"
WEBHOOK_SECRET = "kueue-webhook-server-cert"
#: The CRDs whose conversion webhook Kueue's certificate management looks after (pkg/util/cert).
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
API = "kueue.x-k8s.io/v1beta2"


def crd_dir() -> Path:
    """Kueue's CRDs in the Go module cache, at the version tools/kueue/go.mod pins (downloaded if needed)."""
    done = subprocess.run(
        [str(TOOLS_DIR / "build.sh"), "--crd-dir"], capture_output=True, text=True, timeout=300, check=False
    )
    path = Path(done.stdout.strip()) if done.returncode == 0 else None
    if path is None or not any(path.glob("*.yaml")):
        raise ClusterError(f"cannot find Kueue's CRDs with tools/kueue/build.sh --crd-dir: {done.stderr.strip()}")
    return path


def kueue_binary() -> Path:
    try:
        return find_binaries(["kueue"])["kueue"]
    except ClusterError as exc:
        raise ClusterError(
            "missing the kueue binary: run `make kueue-bin` (tools/kueue builds it into .tools/bin)"
        ) from exc


@dataclass
class Kueue:
    cluster: Cluster
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.state_dir / "kueue.log"

    def start(self, timeout: float = 180.0) -> Kueue:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        binary = kueue_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        webhook, health = free_ports(2)
        self.ports = {"webhook": webhook, "health": health}
        pki = make_webhook_pki(
            self.state_dir / "pki",
            ca_name="kueue-ca",
            server_dns=[f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"],
            server_ips=["127.0.0.1"],
        )
        cert_dir = self.state_dir / "serving-certs"
        cert_dir.mkdir(exist_ok=True)
        shutil.copyfile(pki.crt("server"), cert_dir / "tls.crt")
        shutil.copyfile(pki.key("server"), cert_dir / "tls.key")

        kubectl = self.cluster.kubectl
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir()), timeout=180)
        deadline = time.monotonic() + 120
        crds = [f"crd/{p}.kueue.x-k8s.io" for p in CONVERTED]
        while (
            kubectl("wait", "--for=condition=Established", *crds, "--timeout=30s", timeout=60, check=False).returncode
            != 0
        ):
            if time.monotonic() > deadline:  # (kubectl wait fails at once on a CRD without status conditions yet)
                raise ClusterError(f"Kueue's CRDs are not established after 120s: {', '.join(crds)}")
            time.sleep(1)
        ca = base64.b64encode(pki.ca_crt.read_bytes()).decode()
        for plural in CONVERTED:
            conversion = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"https://127.0.0.1:{webhook}/convert", "caBundle": ca},
                    "conversionReviewVersions": ["v1"],
                },
            }
            kubectl(
                "patch",
                "crd",
                f"{plural}.kueue.x-k8s.io",
                "--type=merge",
                "-p",
                json.dumps({"spec": {"conversion": conversion}}),
            )
        kubectl("create", "namespace", NAMESPACE, check=False)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WEBHOOK_SECRET, "namespace": NAMESPACE},
            "data": {
                name: base64.b64encode(path.read_bytes()).decode()
                for name, path in {
                    "ca.crt": pki.ca_crt,
                    "ca.key": pki.ca_key,
                    "tls.crt": pki.crt("server"),
                    "tls.key": pki.key("server"),
                }.items()
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(secret))

        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(cert_dir)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {
                "enable": True,
                "webhookServiceName": WEBHOOK_SERVICE,
                "webhookSecretName": WEBHOOK_SECRET,
            },
            "integrations": {"frameworks": ["batch/job"]},
            # The on-demand visibility API is an aggregated API server of its own: not needed to queue Jobs.
            "featureGates": {"VisibilityOnDemand": False},
        }
        config_file = self.state_dir / "config.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), CLUSTER_ID_ENV: self.cluster.cluster_id}
        with open(self.log, "ab") as out:
            argv = [str(binary), f"--config={config_file}", "--zap-log-level=2"]
            out.write(f"==> {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGKILL),  # noqa: PLW1509  as the cluster's own components
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise ClusterError(
                    f"kueue exited with code {self.proc.returncode}; log {self.log}:\n{tail(self.log, 40)}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(f"kueue not ready after {timeout:.0f}s; log {self.log}:\n{tail(self.log, 40)}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health']}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
