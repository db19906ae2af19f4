# The kopf operator (docs/operator.md): run it against the current kubeconfig, test it, bench it.
.PHONY: operator operator-test operator-e2e bench-operator

# Runs against $KUBECONFIG (e.g. `make cluster-up` and KUBECONFIG=.cache/cluster/kubeconfig); flags via OPERATOR_ARGS.
operator: install
	$(VENV)/bin/edgequant operator --log-format plain $(OPERATOR_ARGS)

operator-test: install
	$(PY) -m pytest -q -ra tests/unit/controller

operator-e2e: install cluster-bins test-data
	$(PY) -m pytest -q -ra tests/e2e/test_operator.py

# 1,000 QuantizationJobs at once: Jobs created per second, pod-exit-to-status p95, operator peak RSS.
BENCH_OPERATOR_JOBS ?= 1000
bench-operator: install cluster-bins
	$(PY) bench/operator_scale.py --jobs $(BENCH_OPERATOR_JOBS)
