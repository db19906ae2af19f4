"""Importing TensorFlow quietly, once, only when a TFLite job runs."""

from __future__ import annotations

import os
from types import ModuleType


def import_tf() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def import_keras() -> ModuleType:
    """Keras 3, the Keras TensorFlow ships today (``tf_keras`` is only used for QAT, see legacy_keras)."""
    import_tf()
    import keras

    return keras
