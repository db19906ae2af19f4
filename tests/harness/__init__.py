"""A real Kubernetes control plane for tests, plus a node that runs pods as local processes.

- :mod:`tests.harness.cluster` starts etcd, kube-apiserver, kube-controller-manager and
  kube-scheduler (binaries built from the official Go modules by ``make cluster-bins``) and the
  process node, on free loopback ports.
- :mod:`tests.harness.node` is the process-backed node (a small kubelet that runs containers as
  local processes).
- :mod:`tests.harness.fixtures` is the pytest plugin: ``k8s_cluster`` and ``namespace``.

See tests/harness/README.md and docs/control-plane.md.
"""
