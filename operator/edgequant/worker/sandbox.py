"""The worker as two processes, so that the one running the user's model holds no storage credentials.

The parent (PID 1 of the quantizer container) keeps the environment the Job gave it, storage keys included, makes
itself non-dumpable (its /proc/<pid>/environ and memory become unreadable to other processes of the same user),
and starts the child with those keys scrubbed from the environment. The child runs the whole pipeline (model
loading, conversion, evaluation, analysis) and asks the parent for every download and upload
(storage/broker.py), which the parent serves only for the URIs the spec names. The Job turns this on with
SANDBOX_ENV (edgequant.api.worker_contract); `edgequant run` on a laptop runs in one process.

Not covered: a file the platform mounts for workload identity (IRSA's web-identity token file) stays readable by the
child, as by any process of the container's user; Secret keys, the usual case, travel only in the parent's env.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.api.worker_contract import BROKER_FD_ENV, SANDBOX_ENV, WORKDIR_ENV
from edgequant.storage import Stores, as_prefix
from edgequant.storage.broker import serve

#: Variables that name where or how, not a secret: kept for the child.
_KEEP = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"})
_CREDENTIAL = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY|SESSION|API_KEY|AUTH)", re.IGNORECASE
)
_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1


def scrubbed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without credentials: every AWS_* variable but region/CA settings, and anything named like a
    secret (…SECRET…, …TOKEN…, …PASSWORD…, …CREDENTIAL…, …ACCESS_KEY…)."""
    return {
        name: value
        for name, value in environ.items()
        if name in _KEEP or not (name.upper().startswith("AWS_") or _CREDENTIAL.search(name))
    }


def storage_scope(spec: api.QuantizationJobSpec) -> tuple[list[str], list[str]]:
    """(URIs and prefixes the child may read, prefixes it may write): what the spec names, nothing else."""
    writes = [as_prefix(spec.output.uri)]
    if spec.calibration is not None and spec.calibration.cache_uri:
        writes.append(as_prefix(spec.calibration.cache_uri))
    reads = [spec.model.uri, *writes]
    for section in (spec.calibration, spec.training, spec.evaluation):
        if section is not None:
            reads.append(section.dataset.uri)
    return reads, writes


def make_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<this pid>/environ, mem and maps become root's, ptrace is refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the model process never outlives the parent that serves its storage."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def wipe_initial_environ(environ: Mapping[str, str]) -> int:
    """Overwrite, in this process's memory, the values of the credentials in the environment block the kernel
    shows as /proc/self/environ (Python keeps its own copy in os.environ). Returns the bytes overwritten."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50 and 51 of proc(5)
    except (OSError, IndexError, ValueError):
        return 0
    secret = {name for name in environ if name not in scrubbed_env({name: ""})}
    block = ctypes.string_at(start, end - start)
    wiped, offset = 0, 0
    for entry in block.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name.decode(errors="replace") in secret and value:
            ctypes.memset(start + offset + len(name) + 1, ord("*"), len(value))
            wiped += len(value)
        offset += len(entry) + 1
    return wiped


def run_sandboxed(
    argv: Sequence[str],
    *,
    stores: Any,
    reads: list[str],
    writes: list[str],
    environ: Mapping[str, str],
    roots: list[Path] | None = None,
) -> int:
    """Run ``argv`` as the credential-free child, serving its storage requests for files below ``roots`` (default:
    the scratch folder); returns its exit status (negative: the signal that ended it)."""
    parent_end, child_end = socket.socketpair()
    env = scrubbed_env(environ)
    env.pop(SANDBOX_ENV, None)
    env[BROKER_FD_ENV] = str(child_end.fileno())
    make_non_dumpable()
    wipe_initial_environ(environ)  # not even this process reads them back from /proc on the child's behalf
    if roots is None:
        roots = [Path(environ.get(WORKDIR_ENV) or tempfile.gettempdir())]
    child = subprocess.Popen(list(argv), env=env, pass_fds=[child_end.fileno()], preexec_fn=_die_with_parent)
    child_end.close()
    broker = threading.Thread(
        target=serve, args=(parent_end, stores), kwargs={"reads": reads, "writes": writes, "roots": roots}, daemon=True
    )
    broker.start()

    def forward(signum: int, _frame: Any) -> None:  # the kubelet signals PID 1: pass it on
        if child.poll() is None:
            child.send_signal(signum)

    previous = (
        {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        broker.join(timeout=10)


def main_as_parent(argv: Sequence[str], spec: api.QuantizationJobSpec) -> int:
    """The pod's worker: run ``edgequant-worker argv`` as the sandboxed child; end as it ended."""
    reads, writes = storage_scope(spec)
    status = run_sandboxed(
        [sys.executable, "-m", "edgequant.worker.main", *argv],
        stores=Stores(storage=spec.storage),
        reads=reads,
        writes=writes,
        environ=os.environ,
    )
    if status < 0:  # killed (e.g. by the OOM killer): end the same way, so the container reports it
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status
