# ONNX Runtime and PyTorch QAT backends. See docs/onnx.md and docs/torch-qat.md.
.PHONY: bench-onnx test-onnx

# Static Q/DQ through edgequant vs a bare quant_pre_process + quantize_static on the same model and data
# (ratio, target <= 1.05). ALGORITHM=entropy or percentile to bench the histogram calibrators.
ALGORITHM ?= minmax
bench-onnx: install test-data
	$(PY) bench/onnx_static.py --algorithm $(ALGORITHM)

# The backends' unit and integration suites (about 1.5 minutes on 2 cores once the test CNN is cached).
test-onnx: install test-data
	$(PY) -m pytest -q -ra tests/unit/backends/onnx tests/integration/onnx
