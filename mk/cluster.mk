# A real Kubernetes control plane for tests and people (docs/control-plane.md).
#   make cluster-bins               build what is missing of etcd, kube-apiserver, kube-controller-manager,
#                                   kube-scheduler, kubectl (tools/k8s, tools/etcd), helm and kueue into .tools/bin
#   make kueue-bin                  build the Kueue controller manager (tools/kueue; docs/kueue.md)
#   eval "$(make -s cluster-up)"    start one in the background; prints `export KUBECONFIG=...` / `export PATH=...`
#   make cluster-up NODE=real       ... with a real node (kubelet + containerd + runc) running `make images`' images
#   make cluster-down               stop it; no process is left behind
# A binary found in $KUBEBUILDER_ASSETS (the envtest convention) is used instead of building it.

.PHONY: cluster-bins kueue-bin cluster-bins-real realnode-packages cluster-up cluster-down cluster-status

CLUSTER_STATE ?= $(CURDIR)/.cache/cluster
# Two cores are shared with other work: keep Go builds to two parallel jobs.
CLUSTER_GOFLAGS ?= -p=2 -buildvcs=false
HELM_VERSION ?= v3.22.0
K8S_VERSION := $(shell sed -n 's|^[[:space:]]*\(require \)\{0,1\}k8s.io/kubernetes \(v[0-9.]*\).*|\2|p' tools/k8s/go.mod)
K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
K8S_COMPONENTS := kube-apiserver kube-controller-manager kube-scheduler kubectl
# The node: process (tests/harness/node.py) or real (the kubelet below, containerd, runc; tests/harness/realnode.py).
NODE ?= process

# $(call cluster_bin,NAME): the .tools/bin target for NAME, or nothing when KUBEBUILDER_ASSETS has it.
cluster_bin = $(if $(and $(KUBEBUILDER_ASSETS),$(wildcard $(KUBEBUILDER_ASSETS)/$(1))),,$(TOOLS_BIN)/$(1))

cluster-bins: $(foreach b,etcd $(K8S_COMPONENTS) helm kueue,$(call cluster_bin,$(b)))

kueue-bin: $(call cluster_bin,kueue)

# The real node: the kubelet, from the same Kubernetes module as the control plane, and Debian's runtime packages.
REALNODE_PACKAGES := containerd runc containernetworking-plugins iptables
cluster-bins-real: cluster-bins $(call cluster_bin,kubelet) realnode-packages

realnode-packages:
	@command -v containerd >/dev/null && command -v runc >/dev/null && command -v iptables >/dev/null \
	  && test -x /usr/lib/cni/bridge || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $(REALNODE_PACKAGES) >/dev/null; }

$(addprefix $(TOOLS_BIN)/,$(K8S_COMPONENTS) kubelet): $(TOOLS_BIN)/%: tools/k8s/go.mod tools/k8s/go.sum tools/k8s/build.sh
	GOFLAGS="$(CLUSTER_GOFLAGS)" nice -n 10 tools/k8s/build.sh $(TOOLS_BIN) $*

# Kueue keeps its own k8s.io module versions (v0.17: client-go v0.35, exercised against our v1.37 server by
# tests/e2e/test_kueue.py); its CRDs stay in the module cache, where tests/harness/kueue.py applies them from
# (tools/kueue/build.sh --crd-dir).
$(TOOLS_BIN)/kueue: tools/kueue/go.mod tools/kueue/go.sum tools/kueue/build.sh
	GOFLAGS="$(CLUSTER_GOFLAGS)" tools/kueue/build.sh $(TOOLS_BIN)

$(TOOLS_BIN)/etcd: tools/etcd/go.mod tools/etcd/go.sum tools/etcd/build.sh
	GOFLAGS="$(CLUSTER_GOFLAGS)" tools/etcd/build.sh $(TOOLS_BIN)

# helm has no replace lines, so `go install pkg@version` works; kept out of the Kubernetes module.
# The k8sVersion ldflags make `helm template` / `helm lint` assume our server's minor by default.
$(TOOLS_BIN)/helm: tools/k8s/go.mod
	mkdir -p $(TOOLS_BIN)
	cd /tmp && GOBIN=$(TOOLS_BIN) GOFLAGS="$(CLUSTER_GOFLAGS)" CGO_ENABLED=0 go install -trimpath \
	  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
	    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(K8S_MINOR) \
	    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(K8S_MINOR)" \
	  helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	touch $@

# Everything but the export lines goes to stderr, so `eval "$(make -s cluster-up)"` is safe.
cluster-up:
	@$(MAKE) --no-print-directory install $(if $(filter real,$(NODE)),cluster-bins-real images,cluster-bins) >&2
	@$(PY) -m tests.harness up --state-dir $(CLUSTER_STATE) --node $(NODE)

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m tests.harness down --state-dir $(CLUSTER_STATE); fi

cluster-status:
	@$(PY) -m tests.harness status --state-dir $(CLUSTER_STATE)
