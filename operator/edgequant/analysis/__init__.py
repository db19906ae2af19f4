"""Analysis of quantized models: acceptance gate, sensitivity, mixed precision, diagnostics (pure where possible)."""
