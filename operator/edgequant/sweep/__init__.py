"""QuantizationSweep: expanding the matrix into cells, gathering their results, the combined report."""
