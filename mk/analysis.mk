# Sensitivity, mixed precision, the acceptance gate, diagnostics and the HTML report. See docs/analysis.md.
.PHONY: test-analysis bench-sensitivity bench-real-models report-screenshot

# Unit (pure, no frameworks) and integration (real TFLite / ONNX Runtime on Fashion-MNIST CNNs) suites.
test-analysis: install test-data
	$(PY) -m pytest -q -ra tests/unit/analysis tests/integration/analysis

# Fast mode cost vs one quantize+evaluate, and its top-5 overlap with the exhaustive ranking (same run).
bench-sensitivity: install test-data
	$(PY) bench/sensitivity.py

# Real pretrained models (tests/realmodels.py): the worker against the bare framework call, peak RSS, quantize
# time and FP32 top-1 agreement, each measurement in its own child process killed past REAL_CAP_GIB.
REAL_CAP_GIB ?= 12
bench-real-models: install test-data
	$(PY) bench/real_models.py --cap-gib $(REAL_CAP_GIB)

# Render REPORT (a report.json or the folder holding it) and screenshot it with headless Chromium: SHOT=report.png
REPORT ?= out/report.json
SHOT ?= report.png
report-screenshot: install
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	html=$$($(VENV)/bin/edgequant report $(REPORT)) && \
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
	  --disable-sync --no-first-run --user-data-dir=$$(mktemp -d) --window-size=1100,2600 \
	  --screenshot=$(abspath $(SHOT)) "file://$$(realpath $$html)"
