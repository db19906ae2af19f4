"""The one preprocessing definition: the spec's input contract applied to a decoded image.

Calibration, evaluation, QAT fine-tuning and the report's input contract all go
through these functions, so a model is never calibrated on data prepared one
way and scored on data prepared another. Two steps, both pure:

1. ``to_model_pixels``: colour conversion (GRAY / RGB / BGR) and resizing
   (stretch, center-crop, pad, none) -> uint8 pixels [H, W, C] at model size.
2. ``normalize``: ``x * scale + offset``, then ``(x - mean) / std`` per
   channel, then the model layout (NHWC or NCHW) -> float32.

``preprocess`` is the two in a row for one image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgequant.api import v1alpha1 as api
from edgequant.util.errors import InvalidInputError

_FILTERS = {
    api.Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    api.Interpolation.NEAREST: Image.Resampling.NEAREST,
    api.Interpolation.BICUBIC: Image.Resampling.BICUBIC,
}


class ImageSizeError(InvalidInputError):
    """resize.mode none and an image of another size."""


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """Arrays are uint8 [H, W] (gray) or [H, W, 1|3] (RGB order), as npz datasets store them."""
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InvalidInputError(f"image array has dtype {array.dtype}; datasets hold uint8 pixels 0-255")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, mode="L")
    if array.ndim == 3 and array.shape[2] == 3:
        return Image.fromarray(array, mode="RGB")
    raise InvalidInputError(f"image array has shape {array.shape}; expected [H, W], [H, W, 1] or [H, W, 3]")


def _convert_colour(image: Image.Image, color_order: api.ColorOrder) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float grayscale: scale to 8 bits before anything else.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    target = "L" if color_order is api.ColorOrder.GRAY else "RGB"
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency over black, the colour a padded border gets as well.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert(target) if image.mode != target else image


def _resize(image: Image.Image, *, height: int, width: int, resize: api.Resize, source: str) -> Image.Image:
    w, h = image.size
    if (w, h) == (width, height):
        return image
    resample = _FILTERS[resize.interpolation]
    mode = resize.mode
    if mode is api.ResizeMode.NONE:
        raise ImageSizeError(
            f"{source}: image is {w}x{h} but the model input is {width}x{height} and model.input.resize.mode is none "
            "(resize the images, or set resize.mode to stretch, center-crop or pad)"
        )
    if mode is api.ResizeMode.STRETCH:
        return image.resize((width, height), resample)
    if mode is api.ResizeMode.CENTER_CROP:
        factor = max(width / w, height / h)
        sw, sh = max(width, round(w * factor)), max(height, round(h * factor))
        scaled = image.resize((sw, sh), resample)
        left, top = (sw - width) // 2, (sh - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    # pad (letterbox): fit inside, centre on black.
    factor = min(width / w, height / h)
    sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
    scaled = image.resize((sw, sh), resample)
    canvas = Image.new(scaled.mode, (width, height))
    canvas.paste(scaled, ((width - sw) // 2, (height - sh) // 2))
    return canvas


def to_model_pixels(
    image: Image.Image | np.ndarray, contract: api.InputContract, *, source: str = "image"
) -> np.ndarray:
    """Colour-convert and resize to the model input: uint8 [H, W, C], channels in the contract's order."""
    pil = _convert_colour(as_pil(image), contract.color_order)
    pil = _resize(pil, height=contract.height, width=contract.width, resize=contract.resize, source=source)
    pixels = np.asarray(pil, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if contract.color_order is api.ColorOrder.BGR:
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


def normalize(pixels: np.ndarray, contract: api.InputContract) -> np.ndarray:
    """uint8 [N, H, W, C] at model size -> float32 model input [N, ...] in the contract's layout."""
    if pixels.ndim != 4:
        raise ValueError(f"normalize takes a batch [N, H, W, C]; got shape {pixels.shape}")
    scaling = contract.scaling
    x = pixels.astype(np.float32) * np.float32(scaling.scale) + np.float32(scaling.offset)
    if scaling.mean is not None and scaling.std is not None:
        mean = np.asarray(scaling.mean, dtype=np.float32)
        std = np.asarray(scaling.std, dtype=np.float32)
        x = (x - mean) / std
    if contract.layout is api.Layout.NCHW:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess(image: Image.Image | np.ndarray, contract: api.InputContract, *, source: str = "image") -> np.ndarray:
    """One decoded image -> one float32 model input (no batch dimension)."""
    return normalize(to_model_pixels(image, contract, source=source)[None], contract)[0]


def float_range(contract: api.InputContract) -> tuple[float, float]:
    """The [min, max] the preprocessed floats can take (pixels 0 and 255 through the scaling)."""
    s = contract.scaling
    low, high = 0.0 * s.scale + s.offset, 255.0 * s.scale + s.offset
    if s.mean is not None and s.std is not None:
        values = [(v - m) / d for m in s.mean for d in s.std for v in (low, high)]
        return min(values), max(values)
    return low, high


def describe(contract: api.InputContract) -> str:
    """The preprocessing in words, for the report and the artifact's input contract."""
    s = contract.scaling
    parts = [
        contract.color_order.value,
        f"resize {contract.height}x{contract.width} ({contract.resize.mode.value}, {contract.resize.interpolation.value})",
        f"x * {s.scale:.6g} + {s.offset:g}",
    ]
    if s.mean is not None and s.std is not None:
        parts.append(f"(x - {s.mean}) / {s.std}")
    parts.append(contract.layout.value)
    return ", ".join(parts)
