"""spec.ptq's bias correction on tflite-int8 with a real pretrained network (EfficientNet-Lite0 in Keras) and real photos.

Both artifacts are calibrated by the same converter call on the same photographs; only the float biases
differ. Measured on 500 calibration / 300 evaluation photographs: output SQNR 11.8 dB (bare) -> 16.6 dB,
top-1 agreement 0.650 -> 0.833. The bound below takes under half of that SQNR gain, on a fifth of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.realmodels import RealModel

pytestmark = pytest.mark.integration

#: dB of output SQNR bias correction must add over the bare converter (measured: +4.8 dB on the full sets).
MIN_SQNR_GAIN_DB = 2.0


def test_bias_correction_raises_fidelity_over_the_bare_converter(
    lite0_keras: RealModel, model_inputs: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    from edgequant.analysis import post_training as pt
    from edgequant.backends.base import Batches
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    model = keras.models.load_model(str(lite0_keras.path), compile=False)
    calibration = model_inputs(lite0_keras, "calibration", 100)
    evaluation = model_inputs(lite0_keras, "evaluation", 100)
    data = Batches(
        make_iter=lambda: iter([(calibration[i : i + 50], np.zeros(50)) for i in range(0, 100, 50)]),
        count=100,
        batch_size=50,
    )
    plan = ptq.plan_bias_correction(model)
    assert len(plan.targets) == 50 and sum(t.batch_norm for t in plan.targets) == 49  # every conv; the logits' bias
    means = ptq.input_means(model, [t.layer for t in plan.targets], (x for x, _ in data))
    corrected, _changed = ptq.bias_corrected(model, plan, means)
    reference = ptq.float_logits(model, evaluation)
    bare = ptq.int8_logits(ptq.calibrate(model, data), evaluation, tmp_path)
    ours = ptq.int8_logits(ptq.calibrate(corrected, data), evaluation, tmp_path)
    gain = pt.sqnr_db(reference, ours) - pt.sqnr_db(reference, bare)
    assert gain >= MIN_SQNR_GAIN_DB, (pt.sqnr_db(reference, bare), pt.sqnr_db(reference, ours))
    assert pt.top1_agreement(reference, ours) >= pt.top1_agreement(reference, bare)
