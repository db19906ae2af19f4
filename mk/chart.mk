# Helm chart, container images, GitOps health check. See docs/helm.md.
CHART := charts/edgequant
IMAGE_REGISTRY ?= edgequant
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGES := operator quantizer-tflite quantizer-torch quantizer-tensorrt

.PHONY: chart chart-crds chart-rbac chart-lint images $(addprefix image-,$(IMAGES)) lua

# Everything in the chart that is generated: the CRD copy and the RBAC rules.
chart: chart-crds chart-rbac

# The chart ships the very file `make crd` writes; tests/unit/chart fails when the two differ.
chart-crds:
	cp crds/edgequant.io_quantizationjobs.yaml $(CHART)/crds/edgequant.io_quantizationjobs.yaml

chart-lint: cluster-bins
	$(TOOLS_BIN)/helm lint --strict $(CHART)
	$(TOOLS_BIN)/helm lint --strict $(CHART) --set 'operator.watchNamespaces={team-a,team-b}' --set replicaCount=2

# Builds every image where a Docker engine answers; without one the Dockerfiles are still checked by
# tests/unit/chart/test_images.py (buildkit's parser, no engine).
images: $(addprefix image-,$(IMAGES))

$(addprefix image-,$(IMAGES)): image-%:
	@docker info >/dev/null 2>&1 || { echo "make $@: no Docker engine answers (docker info failed); build on a machine with one" >&2; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f images/$*/Dockerfile -t $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG) .

# Real Lua interpreters for the Argo CD health check tests: 5.1 (Argo CD's dialect) and 5.4.
lua:
	@command -v lua5.1 >/dev/null && command -v lua5.4 >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq lua5.1 lua5.4; }

test: lua
