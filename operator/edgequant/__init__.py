"""edgequant: declarative quantization of vision models for edge devices.

Importing this package is cheap on purpose: no TensorFlow, torch or TensorRT
is imported until a backend runs.
"""

__version__ = "0.1.0"
