"""A process-backed Kubernetes node: a small kubelet that runs each container as a local process.

Run it as ``python -m tests.harness.node --kubeconfig KUBECONFIG --state-dir DIR`` (the cluster
harness does). It registers two nodes with the API server and keeps them Ready:

- ``edgequant-cpu``: a plain CPU node;
- ``edgequant-gpu``: capacity ``nvidia.com/gpu`` (default 4), label
  ``nvidia.com/gpu.present=true`` and taint ``nvidia.com/gpu=present:NoSchedule``, so only pods
  that tolerate the taint (and, by convention, select the label) land there.

It watches the pods the scheduler binds to those nodes and runs them the way a kubelet would, with
these mappings (tests/harness/README.md has the full contract):

- image: ignored as a filesystem; every container runs on this machine with the project's
  virtualenv ``bin`` first on PATH. With no ``command`` the image's entrypoint comes from
  :data:`DEFAULT_IMAGE_ENTRYPOINTS` (or ``--image-entrypoints``); with none, ``args`` is the
  command line. An absolute command path that does not exist here is looked up by its base name.
- volumes (emptyDir, configMap, secret, projected, downwardAPI, hostPath) are materialised under
  ``DIR/pods/<namespace>_<pod>_<uid>/volumes/<volume>``. Each container gets a root folder
  ``.../containers/<name>/rootfs`` in which every ``mountPath`` is a symlink to its volume and the
  termination message path is a symlink to the real file. The process finds them through
  ``EDGEQUANT_ROOTFS`` (prefix any absolute container path with it), ``EDGEQUANT_MOUNTS`` (JSON:
  container path -> host path) and ``EDGEQUANT_TERMINATION_LOG`` (the host file behind
  ``terminationMessagePath``). Container paths that appear in command, args, env values and
  workingDir (at the start of a value, after ``=``, ``:``, ``,``, whitespace, a quote or
  ``file://``) are rewritten to the host paths.
- output: stdout and stderr of each container run go to
  ``.../containers/<name>/<restartCount>.log``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

log = logging.getLogger("process-node")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TERMINATION_MESSAGE_LIMIT = 4096  # bytes, per container (kubelet's limit)
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LEASE_DURATION = 40
LEASE_RENEW = 10.0
STATUS_REFRESH = 60.0
RESYNC = 30.0
# Images whose entrypoint we know: pattern on the image reference without tag/digest -> argv.
DEFAULT_IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "*edgequant*quantizer*": ["edgequant-worker"],
    "*edgequant*operator*": ["edgequant", "operator"],
}
ENV_ROOTFS = "EDGEQUANT_ROOTFS"
ENV_MOUNTS = "EDGEQUANT_MOUNTS"
ENV_TERMINATION_LOG = "EDGEQUANT_TERMINATION_LOG"
ENV_POD_DIR = "EDGEQUANT_POD_DIR"
ENV_NODE = "EDGEQUANT_NODE_NAME"
CLUSTER_ID_ENV = "EDGEQUANT_CLUSTER_ID"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- small helpers
def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined references are replaced, ``$$`` is ``$``,
    undefined references stay as written."""
    out = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == "$" and i + 1 < n:
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                j = value.find(")", i + 2)
                if j != -1:
                    name = value[i + 2 : j]
                    out.append(env[name] if name in env else value[i : j + 1])
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(q: str | int | float) -> Decimal:
    s = str(q).strip()
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", s)
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"bad quantity {q!r}")
    return Decimal(m.group(1)) * _SUFFIX[m.group(2)]


def field_path_value(pod: dict, path: str) -> str:
    meta = pod.get("metadata", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path!r}")
    return simple[path]


# --------------------------------------------------------------------------- node description
@dataclass
class NodeSpec:
    name: str
    capacity: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def default_nodes(args: argparse.Namespace) -> list[NodeSpec]:
    base = {
        "cpu": str(args.cpu),
        "memory": args.memory,
        "pods": str(args.max_pods),
        "ephemeral-storage": "100Gi",
        "hugepages-2Mi": "0",
        "hugepages-1Gi": "0",
    }
    common = {"kubernetes.io/os": "linux", "kubernetes.io/arch": _arch(), "edgequant.io/process-node": "true"}
    cpu = NodeSpec(args.cpu_node, dict(base), {**common, "kubernetes.io/hostname": args.cpu_node})
    gpu = NodeSpec(
        args.gpu_node,
        {**base, GPU_RESOURCE: str(args.gpus)},
        {**common, "kubernetes.io/hostname": args.gpu_node, GPU_LABEL[0]: GPU_LABEL[1]},
        [dict(GPU_TAINT)],
    )
    return [cpu, gpu]


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


# --------------------------------------------------------------------------- pod worker
class ConfigError(ValueError):
    """A container's configuration cannot be resolved yet (missing Secret/ConfigMap or key): the
    container waits in ``CreateContainerConfigError`` and is retried, as with a kubelet."""


@dataclass
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass
class ContainerRun:
    name: str
    spec: dict
    init: bool
    restart_count: int = 0
    proc: subprocess.Popen | None = None
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    started_at: str | None = None
    log_path: Path | None = None
    term_path: Path | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    next_start: float = 0.0  # monotonic time before which a restart waits (back-off)
    recorded: bool = False  # the current run's exit is recorded in ``state``/``last_state``
    config_pending: bool = False  # waiting in CreateContainerConfigError for a retry
    done: bool = False  # terminated and will not be restarted

    def status(self, image_id: str) -> dict:
        running = "running" in self.state
        st = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": image_id,
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if self.last_state:
            st["lastState"] = self.last_state
        if self.proc is not None:
            st["containerID"] = f"process://{self.proc.pid}"
        return st


class _StartFailed:
    """Stands in for the process of a container that could not be started (exit code 128)."""

    returncode = 128
    pid = 0

    def poll(self) -> int:
        return 128


class PodWorker(threading.Thread):
    def __init__(self, node: ProcessNode, pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.node = node
        self.pod = pod
        self.uid = meta["uid"]
        self.ns = meta["namespace"]
        self.pod_name = meta["name"]
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.deleting = False
        self.gone = False  # the API object no longer exists
        self.delete_sent = False
        self.finished = threading.Event()
        self.dir = node.pods_dir / f"{self.ns}_{self.pod_name}_{self.uid}"
        self.start_time: str | None = None
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.initialized = not pod["spec"].get("initContainers")
        spec = pod["spec"]
        self.init_runs = [ContainerRun(c["name"], c, True) for c in spec.get("initContainers", [])]
        self.runs = [ContainerRun(c["name"], c, False) for c in spec.get("containers", [])]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.mounts_ready = False
        self._last_status: str | None = None

    # -- events from the watch --------------------------------------------------------
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp"):
                self.deleting = True
        self.wake.set()

    def object_gone(self) -> None:
        with self.lock:
            self.gone = True
            self.deleting = True
        self.wake.set()

    # -- main ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            log.exception("pod %s/%s: worker crashed", self.ns, self.pod_name)
            self._kill_all(grace=0)
            with contextlib.suppress(Exception):
                self.reason, self.message = "ProcessNodeError", f"process node error: {e!r}"
                self._terminal("Failed")
        finally:
            self.finished.set()
            self.node.worker_finished(self)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.start_time = self.pod.get("status", {}).get("startTime") or now()
        self._report()
        # Volumes: retried until they can be built (missing Secret/ConfigMap) or the pod goes.
        backoff = 0.5
        while not self._should_stop():
            try:
                self.volumes = self._build_volumes()
                break
            except Exception as e:  # noqa: BLE001
                self.node.event(self.pod, "Warning", "FailedMount", str(e))
                for r in self.init_runs + self.runs:
                    r.state = {"waiting": {"reason": "ContainerCreating", "message": str(e)}}
                self._report()
                self.wake.wait(backoff)
                self.wake.clear()
                backoff = min(backoff * 2, 10)
        else:
            self._finish_deletion()
            return
        self.mounts_ready = True

        # Init containers, one at a time; a failed one is retried unless restartPolicy=Never.
        for run in self.init_runs:
            while True:
                if self._should_stop():
                    self._finish_deletion()
                    return
                if run.proc is None or run.config_pending:
                    if time.monotonic() >= run.next_start:
                        self._start(run)
                        self._report()
                elif run.exited.is_set() and not run.recorded:
                    self._record_exit(run)
                    code = run.state["terminated"]["exitCode"]
                    if code == 0:
                        self._report()
                        break
                    if self.restart_policy == "Never":
                        self._terminal("Failed")
                        return
                    self._await_restart(run)
                    self._report()
                elif run.recorded and time.monotonic() >= run.next_start:
                    self._start(run)
                    self._report()
                self._wait_tick(run)
        self.initialized = True

        # Main containers, all at once.
        for run in self.runs:
            self._start(run)
        self._update_phase()
        self._report()
        while True:
            if self._should_stop():
                self._finish_deletion()
                return
            if self._deadline_exceeded():
                msg = "Pod was active on the node longer than the specified deadline"
                self.node.event(self.pod, "Normal", "DeadlineExceeded", msg)
                self._kill_all(grace=self._grace())
                self.reason, self.message = "DeadlineExceeded", msg
                self._terminal("Failed")
                return
            changed = False
            for run in self.runs:
                if run.done:
                    continue
                if run.exited.is_set() and not run.recorded:
                    self._record_exit(run)
                    code = run.state["terminated"]["exitCode"]
                    if self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0):
                        self._await_restart(run)
                    else:
                        run.done = True
                    changed = True
                elif (run.recorded or run.config_pending) and time.monotonic() >= run.next_start:
                    self._start(run)
                    changed = True
            if all(r.done for r in self.runs):
                ok = all(r.state["terminated"]["exitCode"] == 0 for r in self.runs)
                self._terminal("Succeeded" if ok else "Failed")
                return
            if changed:
                self._update_phase()
                self._report()
            self._wait_tick()

    def _update_phase(self) -> None:
        """Running once any main container has been started, Pending before."""
        if self.phase == "Pending" and any(isinstance(r.proc, subprocess.Popen) or r.recorded for r in self.runs):
            self.phase = "Running"

    def _wait_tick(self, run: ContainerRun | None = None) -> None:
        timeout = 1.0
        runs = [run] if run else self.runs
        soonest = [r.next_start - time.monotonic() for r in runs if r.next_start]
        soonest = [s for s in soonest if s > 0]
        if soonest:
            timeout = min(timeout, min(soonest))
        self.wake.wait(max(timeout, 0.05))
        self.wake.clear()

    def _should_stop(self) -> bool:
        with self.lock:
            return self.deleting or self.node.stopping.is_set()

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        g = meta.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(g)

    def _deadline_exceeded(self) -> bool:
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        if not ads or not self.start_time:
            return False
        started = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return (datetime.now(UTC) - started).total_seconds() >= ads

    # -- containers ---------------------------------------------------------------------
    def _start(self, run: ContainerRun) -> None:
        """Start (or restart) one container as a process group of its own."""
        try:
            env, pod_env = self._container_env(run.spec)
        except ConfigError as e:
            if run.state.get("waiting", {}).get("message") != str(e):
                self.node.event(self.pod, "Warning", "Failed", f"Error: {e}")
            run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            run.next_start = time.monotonic() + 2.0
            run.config_pending = True
            return
        run.config_pending = False
        if run.proc is not None:
            if not run.recorded:
                self._record_exit(run)
            if "terminated" in run.state:
                run.last_state = {"terminated": run.state["terminated"]}
            run.restart_count += 1
        cdir = self.dir / "containers" / run.name
        cdir.mkdir(parents=True, exist_ok=True)
        run.log_path = cdir / f"{run.restart_count}.log"
        run.term_path = cdir / f"termination-log-{run.restart_count}"
        run.term_path.write_bytes(b"")
        run.exited = threading.Event()
        run.recorded = False
        run.proc = None
        started = now()
        try:
            argv, env, cwd = self._process_spec(run, cdir, env, pod_env)
            with open(run.log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except Exception as e:  # noqa: BLE001 - exec failure: like a runtime's StartError
            msg = f"failed to start container {run.name!r}: {e}"
            with open(run.log_path, "ab") as out:
                out.write((msg + "\n").encode())
            run.proc = _StartFailed()  # type: ignore[assignment]
            run.started_at = started
            run.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": msg,
                    "startedAt": started,
                    "finishedAt": now(),
                }
            }
            run.recorded = False
            run.exited.set()
            self.node.event(self.pod, "Warning", "Failed", msg)
            self.wake.set()
            return
        run.proc = proc
        if self.node.cpu_groups is not None:
            self.node.cpu_groups.place(self.uid, pod_cpu_shares(self.pod["spec"]), proc.pid)
        run.started_at = started
        run.state = {"running": {"startedAt": started}}
        self.node.register_proc(proc)
        threading.Thread(
            target=self._reap, args=(run, proc), daemon=True, name=f"reap-{self.pod_name}-{run.name}"
        ).start()
        self.node.event(self.pod, "Normal", "Started", f"Started container {run.name}")

    def _reap(self, run: ContainerRun, proc: subprocess.Popen) -> None:
        proc.wait()
        self.node.unregister_proc(proc)
        run.exited.set()
        self.wake.set()

    def _await_restart(self, run: ContainerRun) -> None:
        """The container exited and will be restarted after a back-off (CrashLoopBackOff)."""
        base, cap = self.node.restart_backoff, self.node.restart_backoff_max
        delay = min(cap, base * (2**run.restart_count))
        run.next_start = time.monotonic() + delay
        run.last_state = {"terminated": run.state["terminated"]}
        run.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": (
                    f"back-off {delay:g}s restarting failed container={run.name} "
                    f"pod={self.pod_name}_{self.ns}({self.uid})"
                ),
            }
        }
        if run.last_state["terminated"]["exitCode"] != 0:
            self.node.event(self.pod, "Warning", "BackOff", f"Back-off restarting failed container {run.name}")

    def _record_exit(self, run: ContainerRun) -> None:
        """Record the exit of the current run in ``run.state`` (terminated)."""
        proc = run.proc
        assert proc is not None
        run.recorded = True
        if isinstance(proc, _StartFailed):
            return
        code = proc.returncode
        if code is None:
            return
        if code < 0:  # killed by a signal: report it the way a runtime does
            code = 128 - code
        message = self._termination_message(run, code)
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at or now(),
            "finishedAt": now(),
            "containerID": f"process://{proc.pid}",
        }
        if message:
            term["message"] = message
        run.state = {"terminated": term}

    def _termination_message(self, run: ContainerRun, code: int) -> str:
        data = b""
        if run.term_path is not None:
            with contextlib.suppress(OSError):
                with open(run.term_path, "rb") as f:
                    data = f.read(TERMINATION_MESSAGE_LIMIT)
        policy = run.spec.get("terminationMessagePolicy", "File")
        if not data and code != 0 and policy == "FallbackToLogsOnError" and run.log_path:
            with contextlib.suppress(OSError):
                with open(run.log_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - FALLBACK_LOG_BYTES))
                    tail = f.read()
                lines = tail.split(b"\n")
                if lines and lines[-1] == b"":
                    lines = lines[:-1]
                data = b"\n".join(lines[-FALLBACK_LOG_LINES:])
                if tail.endswith(b"\n"):
                    data += b"\n"
        return data.decode("utf-8", "replace")

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every running container's process group, SIGKILL after ``grace`` seconds."""
        live = [r for r in self.init_runs + self.runs if isinstance(r.proc, subprocess.Popen) and not r.exited.is_set()]
        for r in live:
            self.node.event(self.pod, "Normal", "Killing", f"Stopping container {r.name}")
            with contextlib.suppress(OSError):
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(grace, 0)
        for r in live:
            r.exited.wait(max(0.0, deadline - time.monotonic()))
        for r in live:
            if not r.exited.is_set():
                with contextlib.suppress(OSError):
                    os.killpg(r.proc.pid, signal.SIGKILL)
                r.exited.wait(10)
            # Whatever survived the leader in its group goes too.
            with contextlib.suppress(OSError):
                os.killpg(r.proc.pid, signal.SIGKILL)
        for r in live:
            if not r.recorded:
                self._record_exit(r)
            r.done = True

    # -- terminal states ------------------------------------------------------------------
    def _terminal(self, phase: str) -> None:
        self._kill_all(grace=0)
        for r in self.runs:
            if "terminated" not in r.state:
                r.state = {"waiting": {"reason": "PodInitializing"}} if not self.initialized else r.state
        self.phase = phase
        self._report()
        self._cleanup_volumes()
        # A pod that got a deletion timestamp in the meantime is removed by the node.
        if self.deleting:
            self._delete_object()

    def _finish_deletion(self) -> None:
        """Deletion (or node shutdown): stop the containers within the grace period, report the
        final status, then remove the pod object (grace period 0), as the kubelet does."""
        if self.node.stopping.is_set() and not self.deleting:
            self._kill_all(grace=min(self._grace(), 5))
            return
        self._kill_all(grace=self._grace())
        if not self.gone:
            if self.phase not in ("Succeeded", "Failed"):
                started = [r for r in self.runs if "terminated" in r.state]
                ok = (
                    started
                    and len(started) == len(self.runs)
                    and all(r.state["terminated"]["exitCode"] == 0 for r in self.runs)
                )
                if self.restart_policy == "Always":
                    ok = False
                self.phase = "Succeeded" if ok else "Failed"
                for r in self.init_runs + self.runs:
                    if "terminated" not in r.state and "terminated" in r.last_state:
                        r.state = r.last_state  # was waiting to restart: its last run counts
                    elif "terminated" not in r.state:
                        r.state = {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "ContainerStatusUnknown",
                                "message": "The container could not be located when the pod was terminated",
                                "startedAt": r.started_at or now(),
                                "finishedAt": now(),
                            }
                        }
            self._report()
            self._delete_object()
        self._cleanup_volumes()

    def _delete_object(self) -> None:
        if self.delete_sent or self.gone:
            return
        self.delete_sent = True
        self.node.delete_pod(self.ns, self.pod_name, self.uid)

    def _cleanup_volumes(self) -> None:
        # Secret and token contents do not outlive the pod; container output stays.
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        shutil.rmtree(self.dir / "tmp", ignore_errors=True)
        if self.node.cpu_groups is not None:
            self.node.cpu_groups.release(self.uid)

    # -- status ---------------------------------------------------------------------------
    def _report(self) -> None:
        if self.gone:
            return
        image_id = self.node.image_id
        init_statuses = [r.status(image_id) for r in self.init_runs]
        statuses = [r.status(image_id) for r in self.runs]
        running_ready = self.phase == "Running" and all("running" in r.state for r in self.runs)
        t = now()
        terminal = self.phase in ("Succeeded", "Failed")

        def cond(ctype: str, ok: bool, reason: str | None = None) -> dict:
            c = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": t}
            if reason and not ok:
                c["reason"] = reason
            return c

        done_reason = "PodCompleted" if terminal else "ContainersNotReady"
        conditions = [
            cond("PodReadyToStartContainers", self.mounts_ready and not terminal),
            cond("Initialized", self.initialized or (terminal and not self.init_runs), "ContainersNotInitialized"),
            cond("ContainersReady", running_ready, done_reason),
            cond("Ready", running_ready, done_reason),
        ]
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": statuses,
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        # Keep lastTransitionTime stable when nothing but time changed.
        key = json.dumps(
            {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]},
            sort_keys=True,
        )
        if key == self._last_status:
            return
        prev = {c["type"]: c for c in self.pod.get("status", {}).get("conditions", [])}
        for c in conditions:
            p = prev.get(c["type"])
            if p and p.get("status") == c["status"] and p.get("lastTransitionTime"):
                c["lastTransitionTime"] = p["lastTransitionTime"]
        if self.node.patch_pod_status(self.ns, self.pod_name, self.uid, status):
            self._last_status = key

    # -- volumes and process environment -----------------------------------------------------
    def _build_volumes(self) -> dict[str, str]:
        vols: dict[str, str] = {}
        vroot = self.dir / "volumes"
        vroot.mkdir(exist_ok=True)
        for vol in self.pod["spec"].get("volumes", []) or []:
            name = vol["name"]
            path = vroot / name
            if "hostPath" in vol:
                hp = vol["hostPath"]
                if hp.get("type") in ("DirectoryOrCreate",) and not os.path.exists(hp["path"]):
                    os.makedirs(hp["path"], exist_ok=True)
                vols[name] = hp["path"]
                continue
            files: dict[str, tuple[bytes, int | None]] = {}
            default_mode = 0o644
            if "emptyDir" in vol:
                pass
            elif "configMap" in vol:
                src = vol["configMap"]
                default_mode = src.get("defaultMode", default_mode)
                files = self._configmap_files(src)
            elif "secret" in vol:
                src = vol["secret"]
                default_mode = src.get("defaultMode", default_mode)
                files = self._secret_files(src)
            elif "downwardAPI" in vol:
                src = vol["downwardAPI"]
                default_mode = src.get("defaultMode", default_mode)
                files = self._downward_files(src.get("items", []))
            elif "projected" in vol:
                src = vol["projected"]
                default_mode = src.get("defaultMode", default_mode)
                for s in src.get("sources", []) or []:
                    if "secret" in s:
                        files.update(self._secret_files({**s["secret"], "secretName": s["secret"].get("name")}))
                    elif "configMap" in s:
                        files.update(self._configmap_files(s["configMap"]))
                    elif "downwardAPI" in s:
                        files.update(self._downward_files(s["downwardAPI"].get("items", [])))
                    elif "serviceAccountToken" in s:
                        sat = s["serviceAccountToken"]
                        token = self.node.service_account_token(self.pod, sat)
                        files[sat["path"]] = (token.encode(), None)
                    else:
                        raise ValueError(f"volume {name}: unsupported projected source {sorted(s)}")
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise ValueError(f"volume {name}: unsupported volume type {kinds}")
            path.mkdir(parents=True, exist_ok=True)
            for rel, (data, mode) in files.items():
                target = path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(data)
                os.chmod(tmp, mode if mode is not None else default_mode)
                tmp.replace(target)
            vols[name] = str(path)
        return vols

    def _configmap_files(self, src: dict) -> dict[str, tuple[bytes, int | None]]:
        cm = self.node.get_object("configmaps", self.ns, src["name"])
        if cm is None:
            if src.get("optional"):
                return {}
            raise ValueError(f'configmap "{src["name"]}" not found')
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return self._select(data, src, f'configmap "{src["name"]}"')

    def _secret_files(self, src: dict) -> dict[str, tuple[bytes, int | None]]:
        name = src.get("secretName") or src.get("name")
        sec = self.node.get_object("secrets", self.ns, name)
        if sec is None:
            if src.get("optional"):
                return {}
            raise ValueError(f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()}
        return self._select(data, src, f'secret "{name}"')

    @staticmethod
    def _select(data: dict[str, bytes], src: dict, what: str) -> dict[str, tuple[bytes, int | None]]:
        items = src.get("items")
        if not items:
            return {k: (v, None) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if src.get("optional"):
                    continue
                raise ValueError(f"{what} has no key {it['key']!r}")
            out[it["path"]] = (data[it["key"]], it.get("mode"))
        return out

    def _downward_files(self, items: list[dict]) -> dict[str, tuple[bytes, int | None]]:
        out = {}
        for it in items:
            if "fieldRef" in it:
                value = field_path_value(self.pod, it["fieldRef"]["fieldPath"])
            else:
                value = self._resource_value(it["resourceFieldRef"], None)
            out[it["path"]] = (value.encode(), it.get("mode"))
        return out

    def _resource_value(self, ref: dict, container: dict | None) -> str:
        cname = ref.get("containerName")
        if cname or container is None:
            cs = self.pod["spec"]["containers"] + self.pod["spec"].get("initContainers", [])
            container = next(c for c in cs if c["name"] == cname) if cname else cs[0]
        kind, _, res = ref["resource"].partition(".")
        resources = container.get("resources") or {}
        value = (resources.get(kind) or {}).get(res)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(res)
        if value is None:
            value = self.node.capacity_of(self.pod["spec"]["nodeName"]).get(res, "0")
        divisor = parse_quantity(ref.get("divisor", "1") or "1")
        if divisor == 0:
            divisor = Decimal(1)
        return str(math.ceil(parse_quantity(value) / divisor))

    def _env_value(self, e: dict, container: dict, env: dict[str, str]) -> str | None:
        if "value" in e or "valueFrom" not in e:
            return expand(e.get("value", ""), env)
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            return field_path_value(self.pod, vf["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in vf:
            return self._resource_value(vf["resourceFieldRef"], container)
        if "secretKeyRef" in vf or "configMapKeyRef" in vf:
            is_secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef" if is_secret else "configMapKeyRef"]
            obj = self.node.get_object("secrets" if is_secret else "configmaps", self.ns, ref["name"])
            kind = "secret" if is_secret else "configmap"
            if obj is None:
                if ref.get("optional"):
                    return None
                raise ConfigError(f'{kind} "{ref["name"]}" not found')
            if is_secret:
                data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
            else:
                data = dict(obj.get("data") or {})
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
            return data[ref["key"]]
        raise ConfigError(f"unsupported valueFrom {sorted(vf)}")

    def _container_env(self, c: dict) -> tuple[dict[str, str], dict[str, str]]:
        """(base environment incl. envFrom, the container's ``env``); raises ConfigError."""
        node = self.node
        # Base environment: what an image would carry, plus the node's documented variables.
        env: dict[str, str] = {
            "PATH": f"{node.venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": self.pod_name,
            "TMPDIR": str(self.dir / "tmp"),
            "VIRTUAL_ENV": str(node.venv_bin.parent),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        for k in node.passthrough_env:
            if k in os.environ:
                env[k] = os.environ[k]
        host, port = node.api_host, node.api_port
        env.update(
            {
                "KUBERNETES_SERVICE_HOST": host,
                "KUBERNETES_SERVICE_PORT": str(port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                "KUBERNETES_PORT": f"tcp://{host}:{port}",
                "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}",
                "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                "KUBERNETES_PORT_443_TCP_ADDR": host,
                "KUBERNETES_PORT_443_TCP_PORT": str(port),
            }
        )
        # envFrom, then env (later entries win, as in the kubelet).
        for ef in c.get("envFrom", []) or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                ref = ef["configMapRef"]
                obj = node.get_object("configmaps", self.ns, ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'configmap "{ref["name"]}" not found')
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = v
            elif "secretRef" in ef:
                ref = ef["secretRef"]
                obj = node.get_object("secrets", self.ns, ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'secret "{ref["name"]}" not found')
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode("utf-8", "replace")
        pod_env: dict[str, str] = {}
        for e in c.get("env", []) or []:
            try:
                value = self._env_value(e, c, {**env, **pod_env})
            except ConfigError:
                raise
            except (ValueError, KeyError, StopIteration) as err:
                raise ConfigError(f"env {e.get('name')!r}: {err}") from err
            if value is not None:
                pod_env[e["name"]] = value
        return env, pod_env

    def _process_spec(
        self, run: ContainerRun, cdir: Path, env: dict[str, str], pod_env: dict[str, str]
    ) -> tuple[list[str], dict, str]:
        c = run.spec
        node = self.node

        # Mounts: each mountPath is a symlink in the container's rootfs.
        term_container_path = c.get("terminationMessagePath") or "/dev/termination-log"
        mounts: list[Mount] = []
        for m in c.get("volumeMounts", []) or []:
            base = self.volumes.get(m["name"])
            if base is None:
                raise ValueError(f"volumeMount {m['name']!r}: no such volume")
            sub = m.get("subPath") or ""
            if m.get("subPathExpr"):
                sub = expand(m["subPathExpr"], {**env, **pod_env})
            host = os.path.join(base, sub) if sub else base
            if sub and not os.path.exists(host):
                os.makedirs(host, exist_ok=True)
            mounts.append(Mount(m["mountPath"].rstrip("/") or "/", host, m.get("readOnly", False)))
        assert run.term_path is not None
        mounts.append(Mount(term_container_path, str(run.term_path)))
        rootfs = cdir / "rootfs"
        if rootfs.exists():
            shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.mkdir(parents=True)
        for m in sorted(mounts, key=lambda m: m.container_path.count("/")):
            link = rootfs / m.container_path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                continue
            link.symlink_to(m.host_path)
        mapping = {m.container_path: m.host_path for m in mounts}

        def rewrite(s: str) -> str:
            return rewrite_paths(s, mapping)

        pod_env = {k: rewrite(v) for k, v in pod_env.items()}
        env.update(
            {
                ENV_ROOTFS: str(rootfs),
                ENV_MOUNTS: json.dumps(mapping, sort_keys=True),
                ENV_TERMINATION_LOG: str(run.term_path),
                ENV_POD_DIR: str(self.dir),
                ENV_NODE: self.pod["spec"]["nodeName"],
                CLUSTER_ID_ENV: os.environ.get(CLUSTER_ID_ENV, ""),
            }
        )
        env.update(pod_env)
        # The marker that lets the harness find stray processes cannot be overridden.
        env[CLUSTER_ID_ENV] = os.environ.get(CLUSTER_ID_ENV, "")

        command = [expand(a, env) for a in c.get("command", []) or []]
        args = [expand(a, env) for a in c.get("args", []) or []]
        if not command:
            command = list(node.entrypoint_for(c.get("image", "")))
        argv = [rewrite(a) for a in command + args]
        if not argv:
            raise ValueError(
                f"no command specified (image {c.get('image')!r} has no known entrypoint on the process node)"
            )
        exe = argv[0]
        if "/" not in exe:
            found = shutil.which(exe, path=env["PATH"])
            if found is None:
                raise FileNotFoundError(f'exec: "{exe}": executable file not found in $PATH')
            argv[0] = found
        elif not os.path.exists(exe):
            found = shutil.which(os.path.basename(exe), path=env["PATH"])
            if found is None:
                raise FileNotFoundError(f'exec: "{exe}": no such file or directory')
            argv[0] = found

        wd = c.get("workingDir") or ""
        if wd:
            mapped = rewrite(wd)
            if mapped != wd or os.path.isdir(wd):
                cwd = mapped
            else:
                cwd = str(rootfs / wd.lstrip("/"))
            os.makedirs(cwd, exist_ok=True)
        else:
            cwd = str(rootfs)
        return argv, env, cwd


_PATH_BOUNDARY_BEFORE = re.compile(r"(?:^|[=:,\s'\"]|file://)$")


def rewrite_paths(value: str, mapping: dict[str, str]) -> str:
    """Replace container paths (keys of ``mapping``) with host paths where they start a path:
    at the start of ``value`` or after ``=``, ``:``, ``,``, whitespace, a quote or ``file://``, and
    followed by the end, ``/``, ``:``, ``,``, whitespace or a quote. Longer container paths win."""
    if not mapping or "/" not in value:
        return value
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("(" + "|".join(re.escape(k) for k in keys) + r")(?=$|[/:,\s'\"])")
    out = []
    pos = 0
    for m in pattern.finditer(value):
        if not _PATH_BOUNDARY_BEFORE.search(value[: m.start()][-8:] if m.start() else ""):
            continue
        out.append(value[pos : m.start()])
        out.append(mapping[m.group(1)])
        pos = m.end()
    out.append(value[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- the node
#: cgroup v1's cpu hierarchy; the kubelet's pod cgroups live there on a cgroup v1 host.
CPU_CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
#: The kubelet's bounds on cpu.shares (MinShares for a pod without CPU requests, MaxShares).
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144


def pod_cpu_shares(pod_spec: dict) -> int:
    """cpu.shares the kubelet gives a pod: its CPU requests in millicores x 1024 / 1000 (the larger of the main
    containers' sum and any init container's), at least 2 (a BestEffort pod) and at most 262144."""

    def millicores(containers: list[dict]) -> list[Decimal]:
        return [parse_quantity(c.get("resources", {}).get("requests", {}).get("cpu", "0")) * 1000 for c in containers]

    milli = max(
        [sum(millicores(pod_spec.get("containers", [])), Decimal(0)), *millicores(pod_spec.get("initContainers", []))]
    )
    return int(min(max(milli * 1024 / 1000, MIN_CPU_SHARES), MAX_CPU_SHARES))


class PodCpuGroups:
    """One cpu cgroup per pod, weighted by the pod's CPU request, under one group for the node's pods (as the
    kubelet's ``kubepods``, weight 1024). Without it every container, a session of its own, is an autogroup that
    weighs as much as the API server: 110 pods starve the control plane, which a real node's kubelet prevents."""

    def __init__(self, base: Path):
        self.base = base

    @classmethod
    def create(cls, name: str, root: Path = CPU_CGROUP_ROOT) -> PodCpuGroups | None:
        """The node's group, or None where the cpu hierarchy is not writable (cgroup v2 only, no root)."""
        for stale in root.glob("edgequant-node-*") if root.is_dir() else []:
            owner = stale.name.removeprefix("edgequant-node-")
            if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                continue
            with contextlib.suppress(OSError):  # a node that died: its empty pod groups, then its own
                for child in stale.iterdir():
                    if child.is_dir():
                        child.rmdir()
                stale.rmdir()
        try:
            base = root / name
            base.mkdir(exist_ok=True)
            (base / "cpu.shares").write_text("1024")
        except OSError as e:
            log.warning("no cpu cgroups (%s): pods share the CPU with the control plane as equals", e)
            return None
        return cls(base)

    def place(self, uid: str, shares: int, pid: int) -> None:
        """Move ``pid`` (a container's first process; what it starts later follows) into the pod's group."""
        group = self.base / uid
        try:
            group.mkdir(exist_ok=True)
            (group / "cpu.shares").write_text(str(shares))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:  # the process may have ended already
            log.debug("cpu group of pod %s: %s", uid, e)

    def release(self, uid: str) -> None:
        with contextlib.suppress(OSError):
            (self.base / uid).rmdir()

    def close(self) -> None:
        """Remove every group; processes left in one go back to the root group first."""
        for group in [g for g in self.base.iterdir() if g.is_dir()] if self.base.is_dir() else []:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.base.parent / "cgroup.procs").write_text(pid)
                group.rmdir()
        with contextlib.suppress(OSError):
            self.base.rmdir()


class ProcessNode:
    def __init__(
        self,
        api_client,
        state_dir: Path,
        nodes: list[NodeSpec],
        venv_bin: Path,
        server_version: str,
        restart_backoff: float = 1.0,
        restart_backoff_max: float = 30.0,
        image_entrypoints: dict[str, list[str]] | None = None,
        passthrough_env: list[str] | None = None,
    ):
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.state_dir = state_dir
        self.pods_dir = state_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes
        self.venv_bin = venv_bin
        self.server_version = server_version
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.entrypoints = dict(DEFAULT_IMAGE_ENTRYPOINTS)
        self.entrypoints.update(image_entrypoints or {})
        self.passthrough_env = passthrough_env or []
        self.image_id = f"process://{venv_bin.parent}"
        url = urlparse(api_client.configuration.host)
        self.api_host = url.hostname or "127.0.0.1"
        self.api_port = url.port or 443
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.finished: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.procs_lock = threading.Lock()
        self.boot_id = str(uuid.uuid4())
        self.cpu_groups = PodCpuGroups.create(f"edgequant-node-{os.getpid()}")

    # -- API helpers ------------------------------------------------------------------------
    def get_object(self, kind: str, ns: str, name: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        fn = {"secrets": self.core.read_namespaced_secret, "configmaps": self.core.read_namespaced_config_map}[kind]
        try:
            resp = fn(name, ns, _preload_content=False, _request_timeout=30)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def patch_pod_status(self, ns: str, name: str, uid: str, status: dict) -> bool:
        from kubernetes.client.rest import ApiException

        body = {"metadata": {"uid": uid}, "status": status}
        for attempt in range(5):
            try:
                self.core.patch_namespaced_pod_status(
                    name,
                    ns,
                    body,
                    _content_type="application/strategic-merge-patch+json",
                    _preload_content=False,
                    _request_timeout=30,
                )
                return True
            except ApiException as e:
                if e.status in (404, 409, 422):
                    log.info("status of %s/%s not written: %s %s", ns, name, e.status, (e.body or "")[:300])
                    return False
                time.sleep(0.2 * (attempt + 1))
            except Exception as e:  # noqa: BLE001 - connection trouble: retry
                log.warning("status of %s/%s: %s", ns, name, e)
                time.sleep(0.5 * (attempt + 1))
        return False

    def delete_pod(self, ns: str, name: str, uid: str) -> None:
        from kubernetes.client.rest import ApiException

        for attempt in range(5):
            try:
                self.core.delete_namespaced_pod(
                    name,
                    ns,
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                    _preload_content=False,
                    _request_timeout=30,
                )
                return
            except ApiException as e:
                if e.status in (404, 409):
                    return
                time.sleep(0.5 * (attempt + 1))
            except Exception:  # noqa: BLE001
                time.sleep(0.5 * (attempt + 1))

    def service_account_token(self, pod: dict, sat: dict) -> str:
        sa = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": sat.get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if sat.get("audience"):
            spec["audiences"] = [sat["audience"]]
        resp = self.core.create_namespaced_service_account_token(
            sa, pod["metadata"]["namespace"], {"spec": spec}, _preload_content=False, _request_timeout=30
        )
        return json.loads(resp.data)["status"]["token"]

    def event(self, pod: dict, etype: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        t = now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": etype,
            "source": {"component": "process-node", "host": pod["spec"].get("nodeName", "")},
            "reportingComponent": "process-node",
            "reportingInstance": pod["spec"].get("nodeName", ""),
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
        }
        with contextlib.suppress(Exception):  # noqa: BLE001 - events are best effort (namespace may be going)
            self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False, _request_timeout=10)

    def capacity_of(self, node_name: str) -> dict[str, str]:
        for n in self.nodes:
            if n.name == node_name:
                return n.capacity
        return {}

    def entrypoint_for(self, image: str) -> list[str]:
        ref = image.split("@", 1)[0]
        if ":" in ref.rsplit("/", 1)[-1]:
            ref = ref.rsplit(":", 1)[0]
        for pattern, argv in self.entrypoints.items():
            if fnmatch.fnmatchcase(ref, pattern) or fnmatch.fnmatchcase(image, pattern):
                return argv
        return []

    def register_proc(self, proc: subprocess.Popen) -> None:
        with self.procs_lock:
            self.procs.add(proc)

    def unregister_proc(self, proc: subprocess.Popen) -> None:
        with self.procs_lock:
            self.procs.discard(proc)

    # -- node registration and heartbeats ---------------------------------------------------------
    def register(self) -> None:
        from kubernetes.client.rest import ApiException

        for n in self.nodes:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": n.name, "labels": n.labels},
                "spec": {"taints": n.taints} if n.taints else {},
            }
            try:
                self.core.create_node(body, _preload_content=False)
            except ApiException as e:
                if e.status != 409:
                    raise
                self.core.patch_node(
                    n.name,
                    {"metadata": {"labels": n.labels}, "spec": {"taints": n.taints or None}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            self.update_node_status(n)
            self.renew_lease(n)

    def update_node_status(self, n: NodeSpec) -> None:
        t = now()

        def cond(ctype: str, status: str, reason: str, message: str) -> dict:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._transition(n, ctype, t),
            }

        alloc = dict(n.capacity)
        status = {
            "capacity": n.capacity,
            "allocatable": alloc,
            "conditions": [
                cond(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
                ),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "process node is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": n.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": n.name,
                "systemUUID": n.name,
                "bootID": self.boot_id,
                "kernelVersion": platform.release(),
                "osImage": "edgequant process node",
                "containerRuntimeVersion": "process://edgequant",
                "kubeletVersion": self.server_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }
        self.core.patch_node_status(
            n.name,
            {"status": status},
            _content_type="application/strategic-merge-patch+json",
            _preload_content=False,
            _request_timeout=30,
        )

    _transitions: ClassVar[dict[tuple[str, str], str]] = {}

    def _transition(self, n: NodeSpec, ctype: str, t: str) -> str:
        return self._transitions.setdefault((n.name, ctype), t)

    def renew_lease(self, n: NodeSpec) -> None:
        from kubernetes.client.rest import ApiException

        t = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": n.name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": t}
        try:
            self.coord.patch_namespaced_lease(
                n.name,
                "kube-node-lease",
                {"spec": spec},
                _content_type="application/merge-patch+json",
                _preload_content=False,
                _request_timeout=15,
            )
        except ApiException as e:
            if e.status != 404:
                raise
            node = json.loads(self.core.read_node(n.name, _preload_content=False).data)
            self.coord.create_namespaced_lease(
                "kube-node-lease",
                {
                    "metadata": {
                        "name": n.name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": n.name, "uid": node["metadata"]["uid"]}
                        ],
                    },
                    "spec": spec,
                },
                _preload_content=False,
                _request_timeout=15,
            )

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW):
            for n in self.nodes:
                try:
                    self.renew_lease(n)
                    if time.monotonic() - last_status >= STATUS_REFRESH:
                        self.update_node_status(n)
                except Exception as e:  # noqa: BLE001
                    log.warning("heartbeat for %s failed: %s", n.name, e)
            if time.monotonic() - last_status >= STATUS_REFRESH:
                last_status = time.monotonic()

    # -- pods ---------------------------------------------------------------------------------
    def dispatch(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        phase = pod.get("status", {}).get("phase")
        with self.lock:
            w = self.workers.get(uid)
            if w is not None:
                w.update(pod)
                return
            done = self.finished.get(uid)
            if done is not None:
                done.pod = pod
                if meta.get("deletionTimestamp") and not done.delete_sent:
                    done.delete_sent = True
                    threading.Thread(
                        target=self.delete_pod, daemon=True, args=(meta["namespace"], meta["name"], uid)
                    ).start()
                return
            if phase in ("Succeeded", "Failed"):
                # Terminal before we saw it (e.g. node restart): only removal is left to do.
                if meta.get("deletionTimestamp"):
                    threading.Thread(
                        target=self.delete_pod, daemon=True, args=(meta["namespace"], meta["name"], uid)
                    ).start()
                return
            if self.stopping.is_set():
                return
            w = PodWorker(self, pod)
            if meta.get("deletionTimestamp"):
                w.deleting = True
            self.workers[uid] = w
        w.start()

    def worker_finished(self, w: PodWorker) -> None:
        with self.lock:
            self.workers.pop(w.uid, None)
            if not w.gone:
                self.finished[w.uid] = w

    def forget(self, uid: str) -> None:
        with self.lock:
            w = self.workers.get(uid)
            self.finished.pop(uid, None)
        if w is not None:
            w.object_gone()

    def watch_loop(self, node_name: str) -> None:
        from kubernetes.client.rest import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        selector = f"spec.nodeName={node_name}"
        rv = None
        last_list = 0.0
        while not self.stopping.is_set():
            try:
                if rv is None or time.monotonic() - last_list > RESYNC:
                    resp = self.core.list_pod_for_all_namespaces(
                        field_selector=selector, _preload_content=False, _request_timeout=60
                    )
                    lst = json.loads(resp.data)
                    rv = lst["metadata"]["resourceVersion"]
                    last_list = time.monotonic()
                    seen = set()
                    for pod in lst["items"]:
                        seen.add(pod["metadata"]["uid"])
                        self.dispatch(pod)
                    with self.lock:
                        known = [
                            u
                            for u, w in list(self.workers.items()) + list(self.finished.items())
                            if w.pod["spec"].get("nodeName") == node_name
                        ]
                    for uid in known:
                        if uid not in seen:
                            self.forget(uid)
                resp = self.core.list_pod_for_all_namespaces(
                    field_selector=selector,
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=int(RESYNC),
                    _preload_content=False,
                    _request_timeout=RESYNC + 30,
                )
                try:
                    for line in iter_resp_lines(resp):
                        if self.stopping.is_set():
                            break
                        if not line:
                            continue
                        ev = json.loads(line)
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            log.info("watch %s: %s", node_name, obj.get("message"))
                            rv = None
                            break
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if ev["type"] == "BOOKMARK":
                            continue
                        if ev["type"] == "DELETED":
                            self.forget(obj["metadata"]["uid"])
                        else:
                            self.dispatch(obj)
                finally:
                    resp.close()
                    resp.release_conn()
            except ApiException as e:
                log.warning("watch %s: %s %s", node_name, e.status, e.reason)
                rv = None
                self.stopping.wait(1)
            except Exception as e:  # noqa: BLE001
                if not self.stopping.is_set():
                    log.warning("watch %s: %r", node_name, e)
                rv = None
                self.stopping.wait(1)

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.register()
        log.info("registered nodes %s", [n.name for n in self.nodes])
        threads = [threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)]
        threads += [
            threading.Thread(target=self.watch_loop, args=(n.name,), daemon=True, name=f"watch-{n.name}")
            for n in self.nodes
        ]
        for t in threads:
            t.start()
        self.stopping.wait()
        self.shutdown()

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        deadline = time.monotonic() + 8
        for w in workers:
            w.finished.wait(max(0.0, deadline - time.monotonic()))
        with self.procs_lock:
            procs = list(self.procs)
        for p in procs:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
        if self.cpu_groups is not None:
            self.cpu_groups.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--server-version", default="v0.0.0")
    p.add_argument("--cpu-node", default="edgequant-cpu")
    p.add_argument("--gpu-node", default="edgequant-gpu")
    p.add_argument("--gpus", type=int, default=int(os.environ.get("EDGEQUANT_NODE_GPUS", 4)))
    p.add_argument("--cpu", default=os.environ.get("EDGEQUANT_NODE_CPU", "16"))
    p.add_argument("--memory", default=os.environ.get("EDGEQUANT_NODE_MEMORY", "64Gi"))
    p.add_argument("--max-pods", type=int, default=int(os.environ.get("EDGEQUANT_NODE_MAX_PODS", 110)))
    p.add_argument(
        "--venv",
        type=Path,
        default=Path(sys.prefix),
        help="virtualenv whose bin/ comes first on every container's PATH",
    )
    p.add_argument("--restart-backoff", type=float, default=1.0)
    p.add_argument("--restart-backoff-max", type=float, default=30.0)
    p.add_argument(
        "--image-entrypoints",
        default=os.environ.get("EDGEQUANT_IMAGE_ENTRYPOINTS"),
        help="JSON object: image pattern (fnmatch, without tag) -> entrypoint argv",
    )
    p.add_argument(
        "--passthrough-env",
        default=os.environ.get("EDGEQUANT_NODE_PASSTHROUGH_ENV", ""),
        help="comma-separated names of the node's environment variables that every container inherits",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    api = client.ApiClient(cfg)
    venv_bin = (args.venv / "bin").absolute()
    node = ProcessNode(
        api,
        args.state_dir.absolute(),
        default_nodes(args),
        venv_bin,
        args.server_version,
        restart_backoff=args.restart_backoff,
        restart_backoff_max=args.restart_backoff_max,
        image_entrypoints=json.loads(args.image_entrypoints) if args.image_entrypoints else None,
        passthrough_env=[s for s in args.passthrough_env.split(",") if s],
    )

    def on_signal(signum, frame):  # noqa: ARG001
        node.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
