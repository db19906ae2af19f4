"""Datasets, the shared preprocessing and calibration-set validation.

- ``datasets.index_dataset``: imagefolder / npz layouts -> ``DatasetIndex``.
- ``preprocess``: the spec's input contract as one function (``preprocess`` =
  ``normalize(to_model_pixels(image))``), used for calibration, evaluation and QAT.
- ``sampling.balanced_sample``: balanced, deterministic choice of N samples.
- ``loader.prepare_set``: sample + decode + inspect -> ``PreparedSet`` whose
  ``batches()`` are the ``backends.base.Batches`` every backend consumes.
- ``validation``: the calibration rules, as ``DataFinding``s naming files (``report/schema.py``).
"""
