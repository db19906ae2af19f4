"""onnx-static on a Fashion-MNIST CNN: accuracy bound, the three calibration methods, nodes kept in float, reduce range, fixed batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend
from edgequant.util.cpu import CpuFeatures
from edgequant.util.errors import InvalidInputError
from tests.integration.onnx.conftest import AVX2_ONLY, WITH_VNNI, CnnFiles, initializers

pytestmark = pytest.mark.integration

#: Static INT8 (MinMax) may cost at most one point of top-1 on 1000 test images; Entropy and Percentile two. Scored with
#: reference Q/DQ numerics under both reduce-range decisions (conftest), these hold on any CPU.
MINMAX_MAX_DROP = 0.01
OTHER_MAX_DROP = 0.02
#: The fused int8 kernels with this CPU's own reduce-range choice vs the reference numerics, on 1000 images.
KERNEL_MAX_DRIFT = 0.005


def _ops(path: Path) -> Counter[str]:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of every activation QuantizeLinear, by the tensor it quantizes."""
    import onnx

    model = onnx.load(str(path))
    inits = initializers(path)
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }


@pytest.fixture(scope="module")
def three_methods(
    fmnist_cnn: CnnFiles,
    prepared: Callable[..., Any],
    score: Callable[..., float],
    tmp_path_factory: pytest.TempPathFactory,
    forced_cpu: CpuFeatures,
) -> dict[str, Any]:
    """One backend, the same 500 calibration images, minmax / entropy / percentile: artifact, top-1, notes; plus FP32 top-1."""
    from edgequant.api import v1alpha1 as api
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.base import QuantizeRequest
    from tests.integration.onnx.conftest import spec_dict

    backend = OnnxRuntimeBackend(cpu=forced_cpu)
    workdir = tmp_path_factory.mktemp("static")
    out: dict[str, Any] = {}
    for algorithm in ("minmax", "entropy", "percentile"):
        spec = api.QuantizationJobSpec.model_validate(
            spec_dict("onnx-static", model=fmnist_cnn.onnx, calibration={"algorithm": algorithm, "percentile": 99.99})
        )
        request = QuantizeRequest(
            options=backend_options(spec),
            model_path=fmnist_cnn.onnx,
            workdir=workdir / algorithm,
            calibration=prepared("calibration", 500).batches(),
            log=lambda _m: None,
        )
        artifact = backend.quantize(request)
        out[algorithm] = {"artifact": artifact, "top1": score(backend, artifact.path, request.options), "spec": spec}
    out["fp32"] = score(backend, fmnist_cnn.onnx, backend_options(out["minmax"]["spec"]))
    return out


def test_static_int8_stays_within_one_point_of_fp32(three_methods: dict[str, Any], fmnist_cnn: CnnFiles) -> None:
    fp32 = three_methods["fp32"]
    assert fp32 > 0.8
    minmax = three_methods["minmax"]
    artifact = minmax["artifact"]
    assert fp32 - minmax["top1"] <= MINMAX_MAX_DROP, (fp32, minmax["top1"])
    ops = _ops(artifact.path)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6 and ops["BatchNormalization"] == 0
    assert fmnist_cnn.onnx.stat().st_size / artifact.path.stat().st_size > 2  # a 46 KB model: graph and scales weigh in
    assert artifact.input.dtype == "float32" and artifact.input.shape == (-1, 1, 28, 28)
    assert any("minmax calibration on 500 samples" in n for n in artifact.notes)


def test_this_cpus_own_reduce_range_choice_keeps_the_int8_kernels_at_the_reference(
    fmnist_cnn: CnnFiles,
    quantize_request: Callable[..., Any],
    prepared: Callable[..., Any],
    score: Callable[..., float],
) -> None:
    """What a user gets on this machine: reduceRange auto for its CPU, scored with the fused int8 kernels as deployed.

    Without VNNI, auto turns on 7-bit weights so the u8s8 kernels cannot saturate; with VNNI it keeps 8 bits. Either
    way the kernels agree with the reference Q/DQ numerics to within a few of the 1000 test images.
    """
    from edgequant.worker.evaluate import evaluate

    backend = OnnxRuntimeBackend()
    request = quantize_request("onnx-static", model=fmnist_cnn.onnx)
    artifact = backend.quantize(request)
    deployed = evaluate(
        predictor=backend.load(artifact.path, options=request.options),
        data=prepared("evaluation", 1000).batches(),
        latency_runs=0,
    )
    assert deployed.top1 is not None
    reference = score(backend, artifact.path, request.options)
    assert abs(deployed.top1 - reference) <= KERNEL_MAX_DRIFT, (deployed.top1, reference, artifact.notes)


def test_the_three_calibration_methods_give_different_scales(three_methods: dict[str, Any]) -> None:
    scales = {
        name: _activation_scales(three_methods[name]["artifact"].path) for name in ("minmax", "entropy", "percentile")
    }
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    tensors = sorted(scales["minmax"])
    vectors = {name: tuple(round(s[t], 9) for t in tensors) for name, s in scales.items()}
    assert len(set(vectors.values())) == 3, vectors
    # Percentile clips the top 0.01 %: no activation range can be wider than MinMax's.
    assert all(scales["percentile"][t] <= scales["minmax"][t] + 1e-9 for t in tensors)
    assert any(scales["percentile"][t] < scales["minmax"][t] * 0.99 for t in tensors)
    for name in ("entropy", "percentile"):
        assert three_methods["fp32"] - three_methods[name]["top1"] <= OTHER_MAX_DROP, (
            name,
            three_methods[name]["top1"],
        )
    assert any("percentile 99.99 calibration" in n for n in three_methods["percentile"]["artifact"].notes)


def test_nodes_kept_in_float_have_no_qdq(
    fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any], score: Callable[..., float], forced_cpu: CpuFeatures
) -> None:
    import onnx

    backend = OnnxRuntimeBackend(cpu=forced_cpu)
    layers = backend.quantizable_layers(quantize_request("onnx-static", model=fmnist_cnn.onnx))
    assert len(layers) == 3  # conv, conv, gemm (BatchNorm folded by pre-processing)
    first, rest = layers[0], layers[1:]
    request = quantize_request("onnx-static", model=fmnist_cnn.onnx, keep_float=(first,))
    artifact = backend.quantize(request)
    graph = onnx.load(str(artifact.path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    nodes = {n.name: n for n in graph.node}
    kept = nodes[first]
    assert all(producer.get(i) != "DequantizeLinear" for i in kept.input), list(kept.input)
    assert {i.name for i in graph.initializer} >= set(kept.input[1:])  # float weights and bias, as in the source
    for name in rest:
        assert producer[nodes[name].input[1]] == "DequantizeLinear"
    assert artifact.path.name.startswith("fmnist-cnn.qdq-int8-float1-")
    assert f"kept in float: {first}" in artifact.notes
    assert score(backend, artifact.path, request.options) > 0.8


def test_unknown_node_to_keep_lists_the_quantizable_nodes(
    fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any]
) -> None:
    backend = OnnxRuntimeBackend(cpu=WITH_VNNI)
    with pytest.raises(InvalidInputError) as caught:
        backend.quantize(quantize_request("onnx-static", model=fmnist_cnn.onnx, keep_float=("conv1",)))
    message = str(caught.value)
    assert "spec.mixedPrecision.pinnedLayers" in message and "'conv1'" in message
    assert all(
        name in message for name in backend.quantizable_layers(quantize_request("onnx-static", model=fmnist_cnn.onnx))
    )


def test_reduce_range_follows_the_cpu(fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any]) -> None:
    def weights(cpu: Any, **extra: Any) -> tuple[int, list[str]]:
        artifact = OnnxRuntimeBackend(cpu=cpu).quantize(quantize_request("onnx-static", model=fmnist_cnn.onnx, **extra))
        int8 = [a for a in initializers(artifact.path).values() if a.dtype == np.int8 and a.ndim == 4]
        return max(int(np.abs(a.astype(np.int32)).max()) for a in int8), artifact.notes

    widest, notes = weights(AVX2_ONLY)
    assert widest <= 64  # 7-bit weights
    assert any(n.startswith("reduce_range on: CPU x86_64 (test x86 without VNNI): AVX2 lacks VNNI") for n in notes)
    widest, notes = weights(WITH_VNNI)
    assert widest == 127
    assert any("reduce_range off" in n and "AVX512-VNNI" in n for n in notes)
    widest, notes = weights(AVX2_ONLY, onnx={"reduceRange": "never"})
    assert widest == 127 and any(n.startswith("warning: reduce_range off (spec.onnx.reduceRange never)") for n in notes)


def test_fixed_batch_model_calibrates_and_scores_in_chunks(
    fmnist_cnn: CnnFiles,
    quantize_request: Callable[..., Any],
    score: Callable[..., float],
    tmp_path: Path,
    forced_cpu: CpuFeatures,
) -> None:
    import onnx

    model = onnx.load(str(fmnist_cnn.onnx))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    del model.graph.value_info[:]
    fixed = tmp_path / "fixed-batch.onnx"
    onnx.save(model, str(fixed))
    backend = OnnxRuntimeBackend(cpu=forced_cpu)
    request = quantize_request("onnx-static", model=fixed)
    artifact = backend.quantize(request)
    assert artifact.input.shape == (1, 1, 28, 28)
    dynamic = backend.quantize(quantize_request("onnx-static", model=fmnist_cnn.onnx, workdir=tmp_path / "dynamic"))
    assert abs(score(backend, artifact.path, request.options) - score(backend, dynamic.path, request.options)) <= 0.003
