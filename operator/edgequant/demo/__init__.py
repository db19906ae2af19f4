"""`make demo`: Fashion-MNIST -> a small Keras CNN -> the four TFLite methods through `edgequant run` -> one table."""
