"""Operator scale bench (not a test): N QuantizationJobs at once on the real control plane + process node.

Prints jobs-created-per-second (batch Jobs the operator created, first QuantizationJob submitted -> last
Job seen), the p50/p95/max latency from a pod's exit to its QuantizationJob's terminal status (both seen
by watches in this process; and on server clocks alone: the status write's managedFields time minus the
container's finishedAt), the Job controller's own lag (pod exit -> the Job's Complete/Failed condition), and
the operator's peak RSS (VmHWM) and CPU time, and the operator's writes to the API server per job, counted by
the API server itself (its /metrics ``apiserver_request_total``, before and after the run, by verb and resource).
Where the time between a container's exit and its status goes: the operator's own histograms
(``edgequant_result_latency_seconds`` by step, refresh wait and duration), this process's watch delay after
``finishedAt``, and, sampled every half second during the run, the bare API server's latency (a GET and a merge
PATCH of a small ConfigMap) and the machine's load average.

Every job uses the cheapest run there is: a tflite-dynamic-range spec whose model file does not exist, so
the worker starts, fails its first read (InvalidInput, exit 10, no retry) and the whole path
QuantizationJob -> Job -> pod -> termination message -> status is exercised at almost no CPU cost.

    .venv/bin/python bench/operator_scale.py --jobs 1000          # starts its own cluster
    EDGEQUANT_TEST_CLUSTER=.cache/cluster .venv/bin/python bench/operator_scale.py   # `make cluster-up` one
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import Cluster  # noqa: E402

TERMINAL = ("Succeeded", "Failed")
#: After the last terminal status, how long to wait before reading the write counters a last time.
EVENT_SETTLE_SECONDS = 5.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Recorder:
    """First time (monotonic, this process) each thing was seen by a watch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job_created: dict[str, float] = {}
        self.pod_exited: dict[str, float] = {}  # by QuantizationJob name
        self.qj_terminal: dict[str, float] = {}
        self.job_concluded: dict[str, float] = {}  # by QuantizationJob name: the Job's Complete/Failed condition
        self.qj_phase: dict[str, str] = {}
        #: By QuantizationJob name: this watch's first sighting of the ended container minus its finishedAt (wall).
        self.exit_seen_delay: dict[str, float] = {}

    def first(self, table: dict[str, float], key: str) -> None:
        with self.lock:
            table.setdefault(key, time.monotonic())


def watch(cluster: Cluster, namespace: str, kind: str, recorder: Recorder, stop: threading.Event) -> None:
    """List+watch one kind as plain JSON, recording first sightings; re-lists after an ERROR (e.g. 410 Gone)."""
    from kubernetes import client
    from kubernetes.watch.watch import iter_resp_lines

    api = cluster.api_client()
    if kind == "jobs":
        func, args = client.BatchV1Api(api).list_namespaced_job, (namespace,)
    elif kind == "pods":
        func, args = client.CoreV1Api(api).list_namespaced_pod, (namespace,)
    else:
        func, args = (
            client.CustomObjectsApi(api).list_namespaced_custom_object,
            ("edgequant.io", "v1alpha1", namespace, "quantizationjobs"),
        )
    resource_version: str | None = None
    while not stop.is_set():
        try:
            kwargs: dict[str, Any] = {"watch": True, "_preload_content": False, "timeout_seconds": 30}
            if resource_version:
                kwargs["resource_version"] = resource_version
            response = func(*args, **kwargs)
            try:
                for line in iter_resp_lines(response):
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        resource_version = None  # too old: list again from now
                        break
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    if event.get("type") != "BOOKMARK":
                        _record(kind, obj, recorder)
            finally:
                response.release_conn()
        except Exception as exc:  # a dropped watch is re-opened; the first sighting is what counts
            print(f"watch {kind}: {type(exc).__name__}: {exc}; re-watching", file=sys.stderr)
            time.sleep(0.5)


def _record(kind: str, obj: dict[str, Any], recorder: Recorder) -> None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if kind == "jobs":
        recorder.first(recorder.job_created, obj["metadata"]["name"])
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
            recorder.first(recorder.job_concluded, labels.get("edgequant.io/quantizationjob", "?"))
    elif kind == "pods":
        for cs in (obj.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated:
                name = labels.get("edgequant.io/quantizationjob", "?")
                recorder.first(recorder.pod_exited, name)
                if terminated.get("finishedAt"):
                    with recorder.lock:
                        recorder.exit_seen_delay.setdefault(name, time.time() - _epoch(terminated["finishedAt"]))
    else:
        phase = (obj.get("status") or {}).get("phase")
        if phase in TERMINAL:
            recorder.first(recorder.qj_terminal, obj["metadata"]["name"])
            recorder.qj_phase[obj["metadata"]["name"]] = phase


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Probe:
    """The bare API server's latency and the machine's load while the run goes on: every half second one GET and one
    merge PATCH of a small ConfigMap (a write through to etcd, like a status patch), and the 1-minute load average."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(cluster.api_client())
        self.namespace = namespace
        self.get_s: list[float] = []
        self.patch_s: list[float] = []
        self.load: list[float] = []
        self.stop = threading.Event()
        self.core.create_namespaced_config_map(namespace, {"metadata": {"name": "bench-probe"}, "data": {"n": "0"}})
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        n = 0
        while not self.stop.wait(0.5):
            n += 1
            self.load.append(os.getloadavg()[0])
            try:
                started = time.monotonic()
                self._drain(self.core.read_namespaced_config_map("bench-probe", self.namespace, _preload_content=False))
                self.get_s.append(time.monotonic() - started)
                started = time.monotonic()
                self._drain(
                    self.core.patch_namespaced_config_map(
                        "bench-probe", self.namespace, {"data": {"n": str(n)}}, _preload_content=False
                    )
                )
                self.patch_s.append(time.monotonic() - started)
            except Exception as exc:  # a probe that fails is reported, not fatal
                print(f"probe: {type(exc).__name__}: {exc}", file=sys.stderr)

    @staticmethod
    def _drain(response: Any) -> None:
        """Read the whole response, so that its connection goes back to the pool clean."""
        response.read()
        response.release_conn()

    def summary(self) -> dict[str, Any]:
        def spread(values: list[float]) -> dict[str, Any]:
            if not values:
                return {}
            return {
                "n": len(values),
                "p50_s": round(percentile(values, 0.5), 3),
                "p95_s": round(percentile(values, 0.95), 3),
            }

        return {
            "get": spread(self.get_s),
            "patch": spread(self.patch_s),
            "load_average_1m": {
                "mean": round(sum(self.load) / len(self.load), 1) if self.load else None,
                "max": round(max(self.load), 1) if self.load else None,
            },
        }


def manifest(name: str, out_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": name},
        "spec": {
            "method": "tflite-dynamic-range",
            "model": {
                "uri": f"file://{out_dir}/absent/{name}.keras",
                "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"},
            },
            "output": {"uri": f"file://{out_dir}/out/{name}/"},
            "execution": {"backoffLimit": 0},
            # A small scratch volume: the default (20Gi, requested as ephemeral-storage) would fit 5 pods on the node.
            "resources": {
                "requests": {"cpu": "10m", "memory": "64Mi"},
                "limits": {"memory": "256Mi"},
                "scratchSize": "64Mi",
            },
        },
    }


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm, cpu


def _component_pids(cluster: Cluster) -> dict[str, int]:
    pids = {name: comp.pid or (comp.proc.pid if comp.proc else None) for name, comp in cluster.components.items()}
    return {name: pid for name, pid in pids.items() if pid and Path(f"/proc/{pid}").exists()}


def _histograms(text: str, name: str) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
    """One Prometheus histogram from an exposition: per label set (as written, without ``le``), its cumulative
    buckets, sum and count."""
    out: dict[str, tuple[list[tuple[float, float]], float, float]] = {}
    for line in text.splitlines():
        if not line.startswith(name + "_"):
            continue
        head, value = line.rsplit(" ", 1)
        series, _, labels = head.partition("{")
        labels = labels.rstrip("}")
        le = None
        parts = []
        for part in filter(None, labels.split(",")):
            key, _, val = part.partition("=")
            if key == "le":
                le = float(val.strip('"'))
            else:
                parts.append(part)
        buckets, total, count = out.setdefault(",".join(parts), ([], 0.0, 0.0))
        if series == name + "_bucket" and le is not None:
            buckets.append((le, float(value)))
        elif series == name + "_sum":
            out[",".join(parts)] = (buckets, float(value), count)
        elif series == name + "_count":
            out[",".join(parts)] = (buckets, total, float(value))
    return out


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """A quantile from cumulative buckets, interpolated linearly inside its bucket (as Prometheus does)."""
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= q * count and count:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return round(lower + (le - lower) * ((q * count - below) / inside if inside else 1.0), 2)
        lower, below = le, cumulative
    return None


def refresh_latency(url: str) -> dict[str, Any]:
    """The operator's own histograms: refresh wait and duration (all refreshes), and the steps of a result's way
    from the pod's exit to the terminal status; count, mean, p50 and p95 (interpolated in the buckets) each."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, Any] = {}
    for name in (
        "edgequant_status_refresh_wait_seconds",
        "edgequant_status_refresh_seconds",
        "edgequant_result_latency_seconds",
    ):
        for labels, (buckets, total, count) in _histograms(text, name).items():
            key = name + (f"{{{labels}}}" if labels else "")
            out[key] = {
                "count": int(count),
                "mean_s": round(total / count, 3) if count else None,
                "p50_s": _quantile(buckets, count, 0.5),
                "p95_s": _quantile(buckets, count, 0.95),
            }
    return out


def status_written_after_exit(items: list[dict[str, Any]]) -> list[float]:
    """Server clocks, no watch in this process involved: the status update's managedFields time minus
    status.completionTime (the deciding container's finishedAt, as the node reported it). Whole seconds."""
    from datetime import datetime

    def parse(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    latencies = []
    for item in items:
        done = (item.get("status") or {}).get("completionTime")
        writes = [
            f["time"]
            for f in item["metadata"].get("managedFields") or []
            if f.get("subresource") == "status" and f.get("time")
        ]
        if done and writes:
            latencies.append(max(parse(w) for w in writes) - parse(done))
    return latencies


#: (verb, resource, subresource) the operator writes; nobody else in the bench does (the bench only POSTs the
#: QuantizationJobs, subtracted below; the Job controller writes jobs/status, the node pods/status).
OPERATOR_WRITES = {
    ("POST", "jobs", ""),
    ("PATCH", "jobs", ""),
    ("PUT", "jobs", ""),
    ("DELETE", "jobs", ""),
    ("PATCH", "quantizationjobs", ""),
    ("PUT", "quantizationjobs", ""),
    ("PATCH", "quantizationjobs", "status"),
    ("PUT", "quantizationjobs", "status"),
}
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def write_requests(cluster: Cluster) -> dict[tuple[str, str, str], float]:
    """The API server's own count of write requests so far, by (verb, resource, subresource), all codes summed."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=30).stdout
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",") if "=" in part
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        if labels.get("verb") in WRITE_VERBS:
            key = (labels["verb"], labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
            if not labels.get("code", "").startswith(
                "2"
            ):  # refused writes (409 conflicts...) count too; also shown apart
                refused = (
                    labels["verb"],
                    labels.get("resource", ""),
                    f"{labels.get('subresource', '')}#code={labels.get('code')}",
                )
                counts[refused] = counts.get(refused, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def operator_writes(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float], jobs: int, operator_events: int
) -> dict[str, Any]:
    """Writes the operator made during the run: per (verb, resource[/subresource]), total, and per job."""
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    by_kind = {
        f"{verb} {resource}{'/' + sub if sub else ''}": int(n)
        for (verb, resource, sub), n in sorted(delta.items())
        if (verb, resource, sub) in OPERATOR_WRITES and n
    }
    total = sum(by_kind.values())
    by_kind.update(
        {
            f"{verb} {resource}{'/' if not sub.startswith('#') else ''}{sub.replace('#', ' ')} (included above)": int(n)
            for (verb, resource, sub), n in sorted(delta.items())
            if "#code=" in sub and (verb, resource, sub.split("#")[0]) in OPERATOR_WRITES and n
        }
    )
    return {
        "by_request": by_kind,
        "total": total,
        "writes_per_job": round(total / jobs, 2) if jobs else None,
        "events_posted": operator_events,
        "writes_per_job_with_events": round((total + operator_events) / jobs, 2) if jobs else None,
        "all_writes_by_request": {
            f"{verb} {resource}{'/' + sub if sub else ''}": int(n)
            for (verb, resource, sub), n in sorted(delta.items())
            if n
        },
    }


def operator_event_count(cluster: Cluster, namespace: str) -> int:
    """Events the operator posted (kopf reports them as component "kopf"), counting repeats of one Event."""
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json", timeout=60).stdout)["items"]
    return sum(
        int(e.get("count") or 1)
        for e in items
        if (e.get("source") or {}).get("component") == "kopf" or e.get("reportingComponent") == "kopf"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(cluster: Cluster, jobs: int, timeout: float, workers: int | None) -> dict[str, Any]:
    from kubernetes import client

    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "edgequant.io_quantizationjobs.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/quantizationjobs.edgequant.io", "--timeout=60s")
    out_dir = Path(tempfile.mkdtemp(prefix="eq-bench-"))
    log = out_dir / "operator.log"
    liveness, metrics = free_port(), free_port()
    argv = [
        str(Path(sys.executable).parent / "edgequant"),
        "operator",
        "-n",
        namespace,
        "--log-format",
        "json",
        "--liveness-port",
        str(liveness),
        "--metrics-port",
        str(metrics),
    ]
    with log.open("wb") as sink:
        operator = subprocess.Popen(
            argv,
            env={**cluster.env(), **({"EDGEQUANT_OPERATOR_WORKERS": str(workers)} if workers else {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    recorder, stop = Recorder(), threading.Event()
    server_side: list[float] = []
    probe: Probe | None = None
    writes: dict[str, Any] = {}
    refresh: dict[str, Any] = {}
    threads = [
        threading.Thread(target=watch, args=(cluster, namespace, kind, recorder, stop), daemon=True)
        for kind in ("jobs", "pods", "qjs")
    ]
    try:
        _wait_http(f"http://127.0.0.1:{liveness}/healthz", operator, log)
        for t in threads:
            t.start()
        time.sleep(1.0)  # the watches are open
        probe = Probe(cluster, namespace)
        probe.thread.start()
        cpu_before = {name: proc_stats(pid)[1] for name, pid in _component_pids(cluster).items()}
        writes_before = write_requests(cluster)
        custom = client.CustomObjectsApi(cluster.api_client())
        names = [f"b-{i:04d}" for i in range(jobs)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda n: custom.create_namespaced_custom_object(
                        "edgequant.io", "v1alpha1", namespace, "quantizationjobs", manifest(n, out_dir)
                    ),
                    names,
                )
            )
        submitted = time.monotonic() - t0
        deadline = t0 + timeout
        while time.monotonic() < deadline and len(recorder.qj_terminal) < jobs:
            time.sleep(1.0)
            assert operator.poll() is None, "the operator exited:\n" + log.read_text()[-4000:]
        elapsed = time.monotonic() - t0
        probe.stop.set()
        rss, cpu = proc_stats(operator.pid)
        components = {
            name: round(proc_stats(pid)[1] - cpu_before.get(name, 0.0), 1)
            for name, pid in _component_pids(cluster).items()
        }
        refresh = refresh_latency(f"http://127.0.0.1:{metrics}/metrics")
        time.sleep(
            EVENT_SETTLE_SECONDS
        )  # writes the operator makes after the terminal status (none expected) count too
        writes = operator_writes(writes_before, write_requests(cluster), jobs, operator_event_count(cluster, namespace))
        server_side = status_written_after_exit(
            custom.list_namespaced_custom_object("edgequant.io", "v1alpha1", namespace, "quantizationjobs")["items"]
        )
    finally:
        stop.set()
        if probe is not None:
            probe.stop.set()
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

    created = sorted(recorder.job_created.values())
    latencies = [
        recorder.qj_terminal[n] - recorder.pod_exited[n] for n in recorder.qj_terminal if n in recorder.pod_exited
    ]
    # The Job controller's own lag (pod exit -> the Job's Complete/Failed condition), and the status relative to it:
    # negative when the operator reported a pod whose exit sealed the Job before the Job controller recorded it.
    job_lag = [
        recorder.job_concluded[n] - recorder.pod_exited[n] for n in recorder.job_concluded if n in recorder.pod_exited
    ]
    vs_job = [
        recorder.qj_terminal[n] - recorder.job_concluded[n] for n in recorder.qj_terminal if n in recorder.job_concluded
    ]
    return {
        "jobs": jobs,
        "terminal": len(recorder.qj_terminal),
        "phases": {p: list(recorder.qj_phase.values()).count(p) for p in TERMINAL},
        "submit_seconds": round(submitted, 1),
        "jobs_created": len(created),
        "jobs_created_per_second": round(len(created) / (created[-1] - t0), 1) if created else 0.0,
        "all_terminal_seconds": round(elapsed, 1),
        "pod_exit_to_status_p50_s": round(percentile(latencies, 0.50), 3) if latencies else None,
        "pod_exit_to_status_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
        "pod_exit_to_status_max_s": round(max(latencies), 3) if latencies else None,
        "server_clock_exit_to_status_p50_s": round(percentile(server_side, 0.50), 1) if server_side else None,
        "server_clock_exit_to_status_p95_s": round(percentile(server_side, 0.95), 1) if server_side else None,
        "bench_watch_exit_seen_after_finished_p50_s": round(percentile(list(recorder.exit_seen_delay.values()), 0.5), 2)
        if recorder.exit_seen_delay
        else None,
        "bench_watch_exit_seen_after_finished_p95_s": round(
            percentile(list(recorder.exit_seen_delay.values()), 0.95), 2
        )
        if recorder.exit_seen_delay
        else None,
        "pod_exit_to_job_concluded_p50_s": round(percentile(job_lag, 0.50), 3) if job_lag else None,
        "pod_exit_to_job_concluded_p95_s": round(percentile(job_lag, 0.95), 3) if job_lag else None,
        "job_concluded_to_status_p50_s": round(percentile(vs_job, 0.50), 3) if vs_job else None,
        "job_concluded_to_status_p95_s": round(percentile(vs_job, 0.95), 3) if vs_job else None,
        "operator_writes": writes,
        "operator_refresh": refresh,
        "api_server_probe": probe.summary() if probe is not None else {},
        "operator_peak_rss_mib": round(rss, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "cluster_cpu_seconds_during_run": components,
        "load_average_at_end": os.getloadavg()[0],
        "operator_log": str(log),
    }


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the operator exited:\n" + log.read_text()[-4000:])
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} never answered")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every job to finish")
    parser.add_argument("--max-pods", type=int, default=110, help="pods the process node runs at once")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="operator handler threads (EDGEQUANT_OPERATOR_WORKERS; default: the operator's own)",
    )
    args = parser.parse_args()
    # The workers start from this checkout: give them the bytecode an image has (pip compiles it there), or every
    # one of 200 processes recompiles the modules without a current .pyc when PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(ROOT / "operator" / "edgequant", quiet=1)
    existing = os.environ.get("EDGEQUANT_TEST_CLUSTER")
    if existing:
        result = run(Cluster.attach(Path(existing).absolute()), args.jobs, args.timeout, args.workers)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="eq-bench-cluster-") as state,
            Cluster(state_dir=Path(state), node_options={"max_pods": args.max_pods}) as cluster,
        ):
            result = run(cluster, args.jobs, args.timeout, args.workers)
    print(json.dumps(result, indent=2))
    writes = result.get("operator_writes") or {}
    print(
        f"operator writes/job: {writes.get('writes_per_job')} ({writes.get('by_request')}); with Events: {writes.get('writes_per_job_with_events')}"
    )
    return 0 if result["terminal"] == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
