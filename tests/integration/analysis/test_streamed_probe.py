"""The ONNX layer analysis streams: batches sized to the memory budget, peak memory flat in the number of samples.

The memory test runs the analysis in child processes on a conv net at 224x224 built here (random but fixed
weights: only the tensor sizes matter), resets the peak-RSS mark (/proc/self/clear_refs) after setup and reads
VmHWM after the probe, for N and 4N probe samples. Holding every intermediate tensor (what the analysis did
before it streamed) would grow the peak by 3N x the bytes per sample; streaming must grow it by far less.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.util.memory import PROBE_SHARE

pytestmark = pytest.mark.integration

SIDE = 224
#: (name, output channels, stride) of each Conv+Relu; a MaxPool halves the side after conv2.
CONVS = (("conv1", 16, 1), ("conv2", 16, 1), ("conv3", 32, 1))
CLASSES = 10


def build_wide_cnn(path: Path) -> Path:
    """conv1-relu-conv2-relu-pool-conv3-relu-gap-flatten-fc at 224x224 (NCHW), seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits, nodes = [], []
    x, channels = "input", 3
    for i, (name, out, stride) in enumerate(CONVS, 1):
        w = (rng.standard_normal((out, channels, 3, 3)) * np.sqrt(2.0 / (9 * channels))).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"{name}.w"),
            numpy_helper.from_array(rng.standard_normal(out).astype(np.float32) * 0.1, f"{name}.b"),
        ]
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [f"{name}_out"],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"relu{i}_out"], name=f"relu{i}"))
        x, channels = f"relu{i}_out", out
        if name == "conv2":
            nodes.append(
                helper.make_node("MaxPool", [x], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2])
            )
            x = "pool_out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap_out"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap_out"], ["flat_out"], name="flat", axis=1))
    inits += [
        numpy_helper.from_array(rng.standard_normal((channels, CLASSES)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc.b"),
    ]
    nodes.append(helper.make_node("Gemm", ["flat_out", "fc.w", "fc.b"], ["logits"], name="fc"))
    graph = helper.make_graph(
        nodes,
        "wide_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def exposed_bytes_per_sample() -> int:
    """Both models' compared activations for one sample, from the architecture above: the float32 input, every
    Relu output (the Q/DQ quantizer folds each Relu into its Conv, so conv outputs have no quantized twin), the
    pool, the pooled and flattened vectors and the logits; twice (float and Q/DQ model)."""
    c1, c2, c3 = (c for _n, c, _s in CONVS)
    half = SIDE // 2
    elements = 3 * SIDE**2 + (c1 + c2) * SIDE**2 + c2 * half**2 + c3 * half**2 + 2 * c3 + CLASSES
    return 2 * 4 * elements


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from edgequant.analysis.layer_tools import layer_tool_for
    from edgequant.api import v1alpha1 as api
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.base import Batches, QuantizeRequest
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    model, workdir, samples, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def images(count, seed):
        rng = np.random.default_rng(seed)
        for start in range(0, count, 4):  # generated lazily: the inputs themselves do not grow with the count
            yield rng.random((min(4, count - start), 3, 224, 224), dtype=np.float32)

    spec = api.QuantizationJobSpec.model_validate({
        "model": {"uri": "file:///m.onnx", "input": {"shape": [3, 224, 224], "layout": "NCHW", "colorOrder": "RGB"}},
        "method": "onnx-static", "calibration": {"dataset": {"uri": "file:///cal/"}}, "output": {"uri": "file:///out/"},
    })
    calibration = Batches(make_iter=lambda: ((x, np.zeros(len(x), np.int64)) for x in images(8, 0)), count=8, batch_size=4)
    request = QuantizeRequest(options=backend_options(spec), model_path=model, workdir=workdir, calibration=calibration)
    tool = layer_tool_for(request, OnnxRuntimeBackend())
    tool.model_keeping_float([])

    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark: what follows is the probe alone
    before = status("VmRSS")
    probes = tool.probe(images(samples, 1), max_samples=samples, memory_budget=budget)
    print(json.dumps({"before": before, "peak": status("VmHWM"), "batch": tool.last_batch_size, "layers": len(probes)}))
    """
)


def probe_peak(model: Path, workdir: Path, samples: int, budget: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(workdir), str(samples), str(budget)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root / "operator"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_peak_memory_of_the_analysis_does_not_grow_with_the_number_of_samples(tmp_path: Path) -> None:
    model = build_wide_cnn(tmp_path / "wide.onnx")
    per_sample = exposed_bytes_per_sample()
    batch = 2
    budget = int((batch + 0.5) * per_sample / PROBE_SHARE)  # the sizing rule gives `batch` samples per run
    n = 8
    small = probe_peak(model, tmp_path / "small", n, budget)
    large = probe_peak(model, tmp_path / "large", 4 * n, budget)
    assert small["batch"] == large["batch"] == batch and small["layers"] == large["layers"] == 6
    growth = (large["peak"] - large["before"]) - (small["peak"] - small["before"])
    holding_everything = 3 * n * per_sample  # what keeping every intermediate of the 3N extra samples would add
    assert growth < holding_everything / 8, (growth, holding_everything, small, large)
    # and the probe's own peak (sessions, models, a batch) is well below what the 4N samples' tensors would take
    assert large["peak"] - large["before"] < 4 * n * per_sample / 2, large
