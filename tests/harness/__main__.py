"""``python -m tests.harness up|down|status [--state-dir DIR]`` — a control plane for people.

``up`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the process node
(``--node real``: kubelet + containerd + runc, tests/harness/realnode.py) in the background (they outlive this command) and prints shell lines to eval::

    eval "$(python -m tests.harness up)"     # or: eval "$(make -s cluster-up)"
    kubectl get nodes
    python -m tests.harness down             # or: make cluster-down

Progress and errors go to stderr; only the ``export`` lines go to stdout.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from .cluster import NODE_KINDS, REPO_ROOT, Cluster, ClusterError, kill_marked
from .realnode import RealNodeUnavailable

DEFAULT_STATE = REPO_ROOT / ".cache" / "cluster"


def _exports(c: Cluster) -> str:
    return (
        f"export KUBECONFIG={shlex.quote(str(c.kubeconfig))}\n"
        f'export PATH={":".join(shlex.quote(str(p)) for p in c.path_dirs)}:"$PATH"\n'
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.harness", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument(
        "--node",
        choices=NODE_KINDS,
        default="process",
        help="process: the process-backed node; real: kubelet + containerd + runc (make images first)",
    )
    args = p.parse_args(argv)
    state = args.state_dir.absolute()

    existing = None
    if (state / "cluster.json").exists():
        existing = Cluster.attach(state)

    if args.command == "status":
        if existing and existing.running():
            print(f"running: {existing.server} (state {state})", file=sys.stderr)
            sys.stdout.write(_exports(existing))
            return 0
        print("not running", file=sys.stderr)
        return 1

    if args.command == "down":
        if existing is None:
            print(f"no cluster state in {state}", file=sys.stderr)
            return 0
        existing.stop()
        left = kill_marked(existing.cluster_id, grace=1.0)
        print(
            f"cluster {existing.cluster_id} stopped" + (f" (ended {len(left)} strays)" if left else ""), file=sys.stderr
        )
        if existing.teardown_problems:
            print(f"could not unmount: {existing.teardown_problems}", file=sys.stderr)
            return 1
        return 0

    # up
    if existing and existing.running():
        print(f"already running: {existing.server} (state {state})", file=sys.stderr)
        sys.stdout.write(_exports(existing))
        return 0
    if existing:
        existing.stop()
    shutil.rmtree(state, ignore_errors=True)
    cluster = Cluster(state_dir=state, detached=True, node=args.node)
    try:
        cluster.start()
    except (ClusterError, RealNodeUnavailable) as e:
        print(f"cluster-up failed: {e}", file=sys.stderr)
        return 1
    print(
        f"control plane {cluster.server_version} at {cluster.server}; logs in "
        f"{cluster.log_dir}; stop with `make cluster-down`",
        file=sys.stderr,
    )
    sys.stdout.write(_exports(cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
