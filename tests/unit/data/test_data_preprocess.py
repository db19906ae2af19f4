"""The one preprocessing function: colour order, resize modes, scaling, layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgequant.api import v1alpha1 as api
from edgequant.data.preprocess import ImageSizeError, describe, float_range, normalize, preprocess, to_model_pixels
from edgequant.util.errors import InvalidInputError


def _contract(**kw: object) -> api.InputContract:
    return api.InputContract.model_validate(kw)


def _rgb(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = 200  # red
    img[..., 2] = 10  # a little blue
    return img


def test_rgb_bgr_gray_channel_orders() -> None:
    img = _rgb(4, 4)
    rgb = to_model_pixels(img, _contract(shape=[4, 4, 3]))
    bgr = to_model_pixels(img, _contract(shape=[4, 4, 3], colorOrder="BGR"))
    gray = to_model_pixels(img, _contract(shape=[4, 4, 1], colorOrder="GRAY"))
    assert rgb[0, 0].tolist() == [200, 0, 10]
    assert bgr[0, 0].tolist() == [10, 0, 200]
    assert gray.shape == (4, 4, 1) and gray[0, 0, 0] == round(200 * 0.299 + 10 * 0.114)


def test_nchw_layout_and_scaling_with_mean_std() -> None:
    contract = _contract(
        shape=[3, 2, 2], layout="NCHW", scaling={"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}
    )
    x = preprocess(_rgb(2, 2), contract)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(
        x[:, 0, 0], [(200 / 255 - 0.5) / 0.25, (0 - 0.5) / 0.5, (10 / 255 - 0.5) / 1.0], rtol=1e-5
    )


def test_offset_scaling_maps_to_minus_one_one() -> None:
    contract = _contract(shape=[1, 2, 1], colorOrder="GRAY", scaling={"scale": 1 / 127.5, "offset": -1})
    x = normalize(np.array([[[[0]], [[255]]]], dtype=np.uint8), contract)
    np.testing.assert_allclose(x.ravel(), [-1.0, 1.0], atol=1e-6)
    assert float_range(contract) == pytest.approx((-1.0, 1.0))


def test_stretch_center_crop_and_pad() -> None:
    wide = np.zeros((10, 40), dtype=np.uint8)
    wide[:, 15:25] = 255  # a bright band in the middle
    gray = {"colorOrder": "GRAY"}
    stretched = to_model_pixels(
        wide, _contract(shape=[10, 10, 1], **gray, resize={"mode": "stretch", "interpolation": "nearest"})
    )
    cropped = to_model_pixels(
        wide, _contract(shape=[10, 10, 1], **gray, resize={"mode": "center-crop", "interpolation": "nearest"})
    )
    padded = to_model_pixels(
        wide, _contract(shape=[10, 10, 1], **gray, resize={"mode": "pad", "interpolation": "nearest"})
    )
    assert stretched.shape == cropped.shape == padded.shape == (10, 10, 1)
    # centre crop keeps the middle 10 columns: all inside the band
    assert cropped.min() == 255
    # stretch squeezes the band to a quarter of the width
    assert 1 <= int((stretched[0, :, 0] == 255).sum()) <= 4
    # pad letterboxes: black rows above and below a 10x2.5 strip
    assert padded[0].max() == 0 and padded[-1].max() == 0 and padded[5].max() == 255


def test_resize_none_rejects_other_sizes_naming_the_file() -> None:
    contract = _contract(shape=[8, 8, 1], colorOrder="GRAY", resize={"mode": "none"})
    assert to_model_pixels(np.zeros((8, 8), np.uint8), contract).shape == (8, 8, 1)
    with pytest.raises(ImageSizeError, match="cat.png: image is 9x8 but the model input is 8x8"):
        to_model_pixels(np.zeros((8, 9), np.uint8), contract, source="cat.png")


def test_transparency_composites_over_black_and_16_bit_scales() -> None:
    rgba = Image.new("RGBA", (2, 2), (255, 255, 255, 0))
    assert to_model_pixels(rgba, _contract(shape=[2, 2, 3])).max() == 0
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert to_model_pixels(deep, _contract(shape=[2, 2, 1], colorOrder="GRAY")).min() == 255


def test_non_uint8_arrays_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="dtype float32; datasets hold uint8"):
        to_model_pixels(np.zeros((2, 2), np.float32), _contract(shape=[2, 2, 1], colorOrder="GRAY"))


def test_describe_names_every_step() -> None:
    text = describe(
        _contract(
            shape=[3, 96, 96],
            layout="NCHW",
            colorOrder="BGR",
            scaling={"scale": 1, "mean": [1, 2, 3], "std": [4, 5, 6]},
        )
    )
    assert text.startswith("BGR, resize 96x96 (stretch, bilinear)") and "NCHW" in text and "[1.0, 2.0, 3.0]" in text
