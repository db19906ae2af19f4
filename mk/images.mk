# Container images built without a Docker engine or a registry (docs/helm.md, "Images").
#   make images          base image + operator, quantizer-tflite, quantizer-onnx, quantizer-torch, the pod sandbox
#                        image, loaded into containerd's k8s.io namespace (CONTAINERD_ROOT) for the real node
#   make images-test     only what the real-node suite runs (no quantizer-torch): `make test` builds these
#   make image-NAME      one image into buildah's store only
# The Dockerfiles under images/ are the source of truth and build unchanged with `docker build`; here
# buildah (Debian's package, daemonless) reads them, and build arguments adapt them to this machine.
# quantizer-tensorrt needs NVIDIA's NGC base image: it is checked statically only (tests/unit/chart).

.PHONY: images images-test images-tools images-load images-load-test python-base pause-image \
  $(addprefix image-,$(BUILT_IMAGES))

IMAGE_REGISTRY ?= edgequant
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
# What `make images` builds; quantizer-tensorrt is not among them (see above).
BUILT_IMAGES := operator quantizer-tflite quantizer-onnx quantizer-torch
# What tests/e2e_realnode runs (tests/harness/realnode.py REQUIRED_IMAGES): `make test` builds only these.
# quantizer-torch (torch-qat; 5.4 GB with PyPI's CUDA torch, 20 min cold) is built by `make images` alone.
TEST_IMAGES := operator quantizer-tflite quantizer-onnx
# containerd names an unqualified `edgequant/operator` docker.io/edgequant/operator: the chart's values.
image_ref = docker.io/$(IMAGE_REGISTRY)/$(1):$(IMAGE_TAG)

# The local base: Debian bookworm (python3 is 3.11, as in the Dockerfiles' default python:3.11-slim-bookworm).
PYTHON_BASE_IMAGE ?= localhost/edgequant/python-base:3.11-bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBIAN_SECURITY_MIRROR ?= http://deb.debian.org/debian-security
PYTHON_BASE_PACKAGES := python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata
# The pod sandbox image the real node's containerd uses (tools/pause).
PAUSE_IMAGE ?= localhost/edgequant/pause:1.0
# RUN steps reach PyPI with the host's CA bundle mounted read-only (a TLS-inspecting proxy's CA is
# trusted at build time without ending up in an image).
BUILD_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# quantizer-torch wants PyTorch's CPU-only wheels from download.pytorch.org. Where that index is not
# reachable, pip is pointed at PyPI instead, whose torch is the CUDA build: the same code, plus ~3 GB of
# nvidia-* and triton wheels in the image (docs/helm.md). Set TORCH_CPU_INDEX to choose.
PYTORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_CPU_INDEX ?= $(shell curl -fsS --max-time 10 -o /dev/null $(PYTORCH_CPU_INDEX)/ 2>/dev/null \
  && echo $(PYTORCH_CPU_INDEX) || echo https://pypi.org/simple)
# containerd's content store for the real node: persistent, so images are loaded once per machine. One
# variable for both sides: the loader here and the test harness (tests/harness/realnode.py) read it.
EDGEQUANT_CONTAINERD_ROOT ?= /var/lib/edgequant/containerd
export EDGEQUANT_CONTAINERD_ROOT
CONTAINERD_ROOT := $(EDGEQUANT_CONTAINERD_ROOT)
IMAGE_BUILD_FLAGS ?= --layers --network host
IMAGE_BUILD_ARGS_quantizer-torch = --build-arg TORCH_CPU_INDEX=$(TORCH_CPU_INDEX)
IMAGE_PACKAGES := buildah mmdebstrap containerd runc

images: images-tools python-base pause-image $(addprefix image-,$(BUILT_IMAGES)) images-load

images-tools:
	@[ "$$(id -u)" = 0 ] || { echo "make images: buildah, containerd and the real node need root (run as root)" >&2; exit 1; }
	@for c in $(IMAGE_PACKAGES); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	 if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	   apt-get install -y -qq --no-install-recommends $(IMAGE_PACKAGES) >/dev/null; fi

# mmdebstrap from Debian's mirrors, trimmed of docs, man pages and apt lists; rebuilt only when missing
# (`buildah rmi $(PYTHON_BASE_IMAGE)` to refresh it with the latest security updates).
python-base: images-tools
	@if ! buildah inspect --type image $(PYTHON_BASE_IMAGE) >/dev/null 2>&1; then \
	  set -e; tar=$$(mktemp /tmp/edgequant-base.XXXXXX.tar); \
	  nice -n 10 mmdebstrap --quiet --variant=minbase --include=$(PYTHON_BASE_PACKAGES) \
	    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	    --dpkgopt='path-exclude=/usr/share/locale/*' \
	    --customize-hook='rm -rf "$$1"/var/lib/apt/lists/* "$$1"/var/cache/apt/* "$$1"/var/log/apt/*' \
	    bookworm $$tar "deb $(DEBIAN_MIRROR) bookworm main" "deb $(DEBIAN_MIRROR) bookworm-updates main" \
	    "deb $(DEBIAN_SECURITY_MIRROR) bookworm-security main"; \
	  c=$$(buildah from scratch); buildah add -q $$c $$tar / >/dev/null; rm -f $$tar; \
	  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	    --env LANG=C.UTF-8 --cmd python3 $$c; \
	  buildah commit --rm -q $$c $(PYTHON_BASE_IMAGE) >/dev/null; \
	  echo "built $(PYTHON_BASE_IMAGE)" >&2; fi

pause-image: images-tools
	@if ! buildah inspect --type image $(PAUSE_IMAGE) >/dev/null 2>&1; then \
	  set -e; bin=$$(mktemp -d); \
	  (cd tools/pause && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $$bin/pause .); \
	  c=$$(buildah from scratch); buildah copy -q $$c $$bin/pause /pause >/dev/null; rm -rf $$bin; \
	  buildah config --entrypoint '["/pause"]' --user 65535:65535 $$c; \
	  buildah commit --rm -q $$c $(PAUSE_IMAGE) >/dev/null; echo "built $(PAUSE_IMAGE)" >&2; fi

$(addprefix image-,$(BUILT_IMAGES)): image-%: images-tools python-base
	@$(if $(filter quantizer-torch,$*),[ "$(TORCH_CPU_INDEX)" = "$(PYTORCH_CPU_INDEX)" ] || echo "make images:" \
	  "$(PYTORCH_CPU_INDEX) is not reachable; quantizer-torch gets PyPI's torch (the CUDA build: a larger" \
	  "image, same code) from $(TORCH_CPU_INDEX)" >&2,:)
	nice -n 10 buildah bud $(IMAGE_BUILD_FLAGS) -v $(BUILD_CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro \
	  --build-arg PYTHON_BASE=$(PYTHON_BASE_IMAGE) $(IMAGE_BUILD_ARGS_$*) \
	  -f images/$*/Dockerfile --ignorefile images/$*/Dockerfile.dockerignore -t $(call image_ref,$*) .

images-test: images-tools python-base pause-image $(addprefix image-,$(TEST_IMAGES)) images-load-test

images-load: images-tools
	tools/images/load.sh $(CONTAINERD_ROOT) $(foreach i,$(BUILT_IMAGES),$(call image_ref,$(i))) $(PAUSE_IMAGE)

images-load-test: images-tools
	tools/images/load.sh $(CONTAINERD_ROOT) $(foreach i,$(TEST_IMAGES),$(call image_ref,$(i))) $(PAUSE_IMAGE)

# `make test-realnode` runs tests/e2e_realnode alone: the kubelet, the runtime packages and the test images first.
# `make test` runs it among its suites (realnode-ready is one of its prerequisites). A change under operator/
# rebuilds only each image's last layer (docs/helm.md, "Images").
.PHONY: test-realnode realnode-ready
realnode-ready: cluster-bins-real images-test

test-realnode: install realnode-ready
	$(PY) -m pytest -q -ra tests/e2e_realnode
