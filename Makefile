# edgequant — developer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= operator,s3,tflite,onnx,torch,dev
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: install test test-unit test-data demo crd lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/*.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -e '.[$(EXTRAS)]'
	$(PIP) install -q --no-deps -r requirements/tflite-nodeps.txt
	@# PyPI's torch pulls triton (GPU kernels only); importing it in a process that already loaded
	@# TensorFlow segfaults. CPU torch never needs it, so the dev venv goes without.
	$(PIP) uninstall -y -q triton || true
	touch $@

# Every suite: unit, integration (real frameworks, moto S3 server), e2e (real control plane) and e2e_realnode
# (a real kubelet + containerd node running the images; realnode-ready builds and loads them, mk/images.mk;
# it needs root and never skips). One pytest process per framework suite, as in production where each
# quantizer image holds one framework: TensorFlow and torch in one process is not a supported combination.
TEST_SUITES ?= tests/unit tests/integration/test_storage_s3.py,tests/integration/tflite tests/integration/onnx \
	tests/integration/analysis tests/integration/realmodels tests/integration/tensorrt tests/e2e tests/e2e_realnode
test: lint install cluster-bins test-data realnode-ready
	@failed=""; for suite in $(TEST_SUITES); do \
	  echo "==== pytest $${suite//,/ }"; \
	  $(PY) -m pytest -q -ra $${suite//,/ } || failed="$$failed $$suite"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED suites:$$failed"; exit 1; fi

# Style and types (configured in pyproject.toml): ruff's rules over all Python, the formatter's check, and
# mypy over the package, strict on api/, controller/ and analysis/.
LINT_PATHS := operator tests bench tools
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

test-unit: install
	$(PY) -m pytest -q -ra tests/unit

# Real labeled images for tests and the demo, from Debian's package (no download at run time), and the
# photographs of tests/realmodels.py (Debian's wallpaper packages).
REAL_PHOTO_PACKAGES := lomiri-wallpapers-16.04 mate-backgrounds
test-data:
	@test -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || \
	  { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
	@test -f /usr/share/backgrounds/mate/nature/Aqua.jpg -a -f /usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(REAL_PHOTO_PACKAGES); }

crd: install
	$(VENV)/bin/edgequant crd --out-dir crds

clean:
	rm -rf $(VENV) .tools

-include mk/*.mk
