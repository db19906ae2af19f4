"""TFLite backend: dynamic range, float16, full INT8 (uint8 I/O) and QAT (tfmot) on Keras / SavedModel inputs.

TensorFlow is imported only inside these modules' functions. See docs/tflite.md.
"""
