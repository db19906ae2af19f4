"""ONNX Runtime / PyTorch integration fixtures: a Fashion-MNIST CNN (.pt2 + .onnx, cached), a 1.3M-parameter MLP,
real data on disk and through the shared pipeline, and a one-liner that builds a QuantizeRequest from a spec dict.

CPUs differ: x86 without VNNI needs 7-bit weights (reduce_range) where one with VNNI does not. Backend tests take
``forced_cpu``, which runs them under both decisions on every machine, and ``score`` uses reference Q/DQ numerics
(OrtPredictor reference=True), which do not depend on the machine's int8 kernels; test_onnx_static checks the
machine's own choice with the fused kernels.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.util.cpu import CpuFeatures, parse_cpuinfo
from tests.integration.onnx import models

ROOT = Path(__file__).resolve().parents[3]
#: Trained test models live here between runs, keyed by a hash of the code that made them.
MODEL_CACHE = ROOT / ".cache" / "test-models"
CONTRACT = {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}

AVX2_ONLY = parse_cpuinfo("model name\t: test x86 without VNNI\nflags\t\t: fpu sse2 avx avx2 fma\n", machine="x86_64")
WITH_VNNI = parse_cpuinfo(
    "model name\t: test x86 with VNNI\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n", machine="x86_64"
)
#: The two reduce-range decisions (spec.onnx.reduceRange auto), forced whatever this machine is.
FORCED_CPUS = {"reduce-range-on": AVX2_ONLY, "reduce-range-off": WITH_VNNI}


@pytest.fixture(scope="module", params=sorted(FORCED_CPUS))
def forced_cpu(request: pytest.FixtureRequest) -> CpuFeatures:
    """The CPU an OnnxRuntimeBackend decides for: once as x86 without VNNI (7-bit weights), once with VNNI (8-bit)."""
    return FORCED_CPUS[request.param]


@dataclass(frozen=True)
class CnnFiles:
    pt2: Path
    onnx: Path


@pytest.fixture(scope="session")
def fmnist_cnn(fashion_mnist: Any) -> CnnFiles:
    """The small CNN of models.train_cnn (about 84% test accuracy), trained once per version of models.py."""
    key = hashlib.sha256(Path(models.__file__).read_bytes()).hexdigest()[:16]
    folder = MODEL_CACHE / f"onnx-fmnist-cnn-{key}"
    pt2, onnx_path = folder / "fmnist-cnn.pt2", folder / "fmnist-cnn.onnx"
    if not (pt2.is_file() and onnx_path.is_file()):
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        models.train_cnn(fashion_mnist.train_x, fashion_mnist.train_y, staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return CnnFiles(pt2=pt2, onnx=onnx_path)


@pytest.fixture(scope="session")
def dense_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(path, parameter count) of an untrained MLP whose Gemm weights are nearly all of its 5 MB file."""
    return models.dense_heavy_onnx(tmp_path_factory.mktemp("dense") / "dense-heavy.onnx")


@pytest.fixture(scope="session")
def fmnist_npz(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: Any) -> dict[str, Path]:
    """train.npz: 3000 training images the CNN never saw (QAT fine-tuning and calibration draw from it); test.npz: 1000 test images."""
    from edgequant.data.export import write_npz

    root = tmp_path_factory.mktemp("fmnist-onnx")
    fm = fashion_mnist
    start = models.CNN_SAMPLES
    return {
        "train": write_npz(
            root / "train.npz", fm.train_x[start : start + 3000], fm.train_y[start : start + 3000], classes=fm.classes
        ),
        "test": write_npz(root / "test.npz", fm.test_x[:1000], fm.test_y[:1000], classes=fm.classes),
    }


@pytest.fixture(scope="session")
def prepared(fmnist_npz: dict[str, Path]) -> Callable[[str, int], Any]:
    """``prepared(role, samples)``: a PreparedSet from the shared data pipeline (balanced, seed 0) for the CNN's contract."""
    from edgequant.api import v1alpha1 as api
    from edgequant.data.datasets import index_dataset
    from edgequant.data.loader import prepare_set

    contract = api.InputContract.model_validate(CONTRACT)
    cache: dict[tuple[str, int], Any] = {}

    def make(role: str, samples: int) -> Any:
        if (role, samples) not in cache:
            path = fmnist_npz["test" if role == "evaluation" else "train"]
            index = index_dataset(path, layout=api.DatasetLayout.NPZ, uri=path.as_uri())
            cache[role, samples] = prepare_set(index, name=role, contract=contract, samples=samples, seed=0)
        return cache[role, samples]

    return make


def spec_dict(method: str, *, model: Path, contract: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A spec for ``model`` with ``contract`` (default: the CNN's 1x28x28 NCHW gray input scaled 1/255); calibration/training draw from train.npz."""
    spec: dict[str, Any] = {
        "method": method,
        "model": {"uri": model.as_uri(), "input": contract or CONTRACT},
        "output": {"uri": "file:///unused/"},
    }
    if method == "onnx-static":
        spec["calibration"] = {"dataset": {"uri": "file:///unused/train.npz", "layout": "npz"}, "samples": 500}
    if method == "torch-qat":
        spec["training"] = {
            "dataset": {"uri": "file:///unused/train.npz", "layout": "npz"},
            "epochs": 1,
            "learningRate": 1e-4,
            "batchSize": 64,
        }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@pytest.fixture
def quantize_request(prepared: Callable[[str, int], Any], tmp_path: Path) -> Callable[..., Any]:
    """``quantize_request(method, model=path, contract=None, keep_float=(), **spec)`` -> QuantizeRequest with real data for the method."""
    from edgequant.api import v1alpha1 as api
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.base import QuantizeRequest

    def make(
        method: str, *, model: Path, keep_float: tuple[str, ...] = (), workdir: Path | None = None, **extra: Any
    ) -> Any:
        spec = api.QuantizationJobSpec.model_validate(spec_dict(method, model=model, **extra))
        calibration = prepared("calibration", spec.calibration.samples).batches() if spec.calibration else None
        training = prepared("training", 3000).batches(batch_size=64) if spec.training else None
        return QuantizeRequest(
            options=backend_options(spec),
            model_path=model,
            workdir=workdir or tmp_path / "backend",
            calibration=calibration,
            training=training,
            keep_float=list(keep_float),
            log=lambda _m: None,
        )

    return make


@pytest.fixture(scope="session")
def score(prepared: Callable[[str, int], Any]) -> Callable[[Any, Path, Any], float]:
    """``score(backend, path, options)``: top-1 on the 1000 test images through the worker's one evaluator.

    The backend's load checks the model against the options' input contract; the scoring runs reference Q/DQ numerics, so a bound
    stated for the quantization method holds on any CPU.
    """
    from edgequant.backends.onnxruntime.predictor import OrtPredictor
    from edgequant.worker.evaluate import evaluate

    def run(backend: Any, path: Path, options: Any) -> float:
        backend.load(path, options=options)
        result = evaluate(
            predictor=OrtPredictor(path, reference=True), data=prepared("evaluation", 1000).batches(), latency_runs=0
        )
        assert result.top1 is not None and result.samples == 1000
        return result.top1

    return run


def initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
