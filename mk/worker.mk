# The quantizer worker: the README's demo and the TFLite benchmark. See docs/worker.md and docs/tflite.md.
.PHONY: demo bench-tflite

# Fashion-MNIST (Debian package) -> a small Keras CNN trained briefly (cached under .cache/demo) ->
# the four TFLite methods through `edgequant run` -> one table: method, size, ratio, accuracy, drop, latency.
demo: install test-data
	$(PY) -m edgequant.demo

# Full-INT8 through edgequant vs a bare TFLiteConverter call on the same model and data (ratio, target <= 1.05).
bench-tflite: install test-data
	$(PY) bench/tflite_int8.py
