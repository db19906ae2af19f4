"""The process that runs the user's model holds no storage keys (issue 13, item 7).

`run_sandboxed` (worker/sandbox.py) is run as the worker's parent process would run it, with moto's S3 server and
a storage key in its environment; its child is a probe standing in for model code: it reports what it can see of
the credentials (its environment, /proc/self/environ) and uses storage through the parent's broker. The real
worker runs the same way in every e2e job (the Job sets EDGEQUANT_SANDBOX=1), and tests/e2e/test_faults.py reads
both processes' environments from outside while a worker runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edgequant.worker.sandbox import scrubbed_env

pytestmark = pytest.mark.integration

MARK = "sandbox-secret-5d1c0e7b9a"

PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from edgequant.storage import Stores
    from edgequant.api import v1alpha1 as api
    out, bucket, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    report = {"env_names": sorted(os.environ), "self_environ_has_mark": MARK.encode() in Path("/proc/self/environ").read_bytes()}
    parent_environ = Path(f"/proc/{os.getppid()}/environ")
    try:  # the pod's non-root user cannot open it (the parent is not dumpable); root (these tests) can: then it is wiped
        report["parent_environ_has_mark"] = MARK.encode() in parent_environ.read_bytes()
    except PermissionError:
        report["parent_environ_has_mark"] = "unreadable"
    (work / "link").symlink_to(parent_environ)
    stores = Stores(storage=api.Storage())  # as the pipeline builds it: no endpoint, no keys here
    report["downloaded"] = stores.download(f"s3://{bucket}/models/m.bin", work / "model").read_text()
    (work / "artifact.bin").write_text("quantized")
    report["uploaded"] = stores.upload(work / "artifact.bin", f"s3://{bucket}/out/artifact.bin").uri
    for name, call in {
        "upload-outside": lambda: stores.upload(work / "artifact.bin", f"s3://{bucket}/elsewhere/x"),
        "upload-escape": lambda: stores.upload(work / "artifact.bin", f"s3://{bucket}/out/../elsewhere/x"),
        "download-unnamed": lambda: stores.download(f"s3://{bucket}/secrets/other.bin", work / "x"),
        "upload-parent-environ": lambda: stores.upload(parent_environ, f"s3://{bucket}/out/environ"),
        "upload-link-to-it": lambda: stores.upload(work / "link", f"s3://{bucket}/out/link"),
        "upload-outside-scratch": lambda: stores.upload(Path("/etc/hostname"), f"s3://{bucket}/out/hostname"),
    }.items():
        try:
            call()
            report[name] = "allowed"
        except Exception as exc:
            report[name] = f"{type(exc).__name__}: {exc}"
    out.write_text(json.dumps(report))
""").replace("MARK", repr(MARK))

PARENT = textwrap.dedent("""
    import ctypes, json, os, sys
    from edgequant.api import v1alpha1 as api
    from edgequant.storage import Stores
    from edgequant.worker.sandbox import run_sandboxed
    probe, out, bucket, work, endpoint = sys.argv[1:6]
    stores = Stores(storage=api.Storage(endpoint=endpoint, path_style=True, region="us-east-1"))
    status = run_sandboxed([sys.executable, probe, out, bucket, work], stores=stores,
                           reads=[f"s3://{bucket}/models/m.bin"], writes=[f"s3://{bucket}/out/"], environ=os.environ)
    dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    print(json.dumps({"status": status, "dumpable": dumpable}))
""")


def test_the_model_process_sees_no_storage_keys_and_reaches_storage_only_through_its_parent(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="models/m.bin", Body=b"fp32 model")
    s3_client.put_object(Bucket=s3_bucket, Key="secrets/other.bin", Body=b"not named by the spec")
    probe, parent, out, work = (
        tmp_path / "probe.py",
        tmp_path / "parent.py",
        tmp_path / "report.json",
        tmp_path / "work",
    )
    probe.write_text(PROBE)
    parent.write_text(PARENT)
    work.mkdir()
    env = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": MARK,
        "AWS_SESSION_TOKEN": MARK,
        "DB_PASSWORD": MARK,
        "EDGEQUANT_SPEC": "{}",
        "EDGEQUANT_WORKDIR": str(work),
    }
    done = subprocess.run(
        [sys.executable, str(parent), str(probe), str(out), s3_bucket, str(work), s3_server.endpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    parent_view = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads(out.read_text())

    assert parent_view["status"] == 0
    # The child: no key in its environment, nor in the environment block the kernel keeps for it.
    assert not [
        n
        for n in report["env_names"]
        if n.startswith("AWS_") and n not in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CA_BUNDLE")
    ]
    assert "AWS_SECRET_ACCESS_KEY" in os.environ  # the test's own process had keys to leak (moto's dummy ones)
    assert "DB_PASSWORD" not in report["env_names"] and "EDGEQUANT_SPEC" in report["env_names"]
    assert report["self_environ_has_mark"] is False
    # The parent, which holds the keys, is not dumpable: the kernel gives its /proc/<pid>/environ and memory to
    # root, so the child (the pod's non-root user) cannot read them.
    assert parent_view["dumpable"] == 0
    # Storage works through the parent, for what the spec names only.
    assert report["downloaded"] == "fp32 model" and report["uploaded"] == f"s3://{s3_bucket}/out/artifact.bin"
    assert s3_client.get_object(Bucket=s3_bucket, Key="out/artifact.bin")["Body"].read() == b"quantized"
    assert report["parent_environ_has_mark"] in (False, "unreadable")  # wiped in the parent's memory, or unreadable
    for refused in (
        "upload-outside",
        "upload-escape",
        "download-unnamed",
        "upload-parent-environ",
        "upload-link-to-it",
        "upload-outside-scratch",
    ):
        assert report[refused].startswith("InvalidInputError"), report[refused]
    listed = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert listed == {"models/m.bin", "secrets/other.bin", "out/artifact.bin"}  # nothing outside the output prefix
    assert not (work / "x").exists()


def test_scrubbing_keeps_settings_and_drops_anything_named_like_a_secret() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_SESSION_TOKEN": "c",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
        "AWS_ROLE_ARN": "r",
        "AWS_REGION": "eu-west-1",
        "AWS_CA_BUNDLE": "/ca",
        "GITHUB_TOKEN": "d",
        "MY_PASSWORD": "e",
        "EDGEQUANT_SPEC": "{}",
        "EDGEQUANT_MEMORY_BUDGET": "3Gi",
        "PATH": "/bin",
        "HOME": "/scratch",
    }
    assert scrubbed_env(env) == {
        "AWS_REGION": "eu-west-1",
        "AWS_CA_BUNDLE": "/ca",
        "EDGEQUANT_SPEC": "{}",
        "EDGEQUANT_MEMORY_BUDGET": "3Gi",
        "PATH": "/bin",
        "HOME": "/scratch",
    }


def test_the_model_process_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL: the kubelet, a crash) takes its child along: no orphan keeps running."""
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    parent_code = textwrap.dedent(f"""
        import os, sys
        from edgequant.worker.sandbox import run_sandboxed
        run_sandboxed([sys.executable, "-c", {child!r}], stores=None, reads=[], writes=[], environ=os.environ)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
            time.sleep(0.1)
        child_pid = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child_pid}").exists() and "zombie" not in _state(child_pid):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
