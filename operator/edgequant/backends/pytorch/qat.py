"""Quantization-aware fine-tuning with PT2E (torchao.quantization.pt2e), the path current PyTorch recommends.

Why this path (torch 2.13 + torchao 0.18, docs/torch-qat.md):
``torch.ao.quantization``'s eager and FX modes are deprecated and
``quantize_pt2e`` moved to torchao. PT2E works on the exported graph the user
ships (a .pt2 program), needs no model code, and its converted model exports
to ONNX Q/DQ through the dynamo exporter. Eager QAT exports only with the
legacy exporter at opset 13 and keeps float Conv/BN math that ONNX Runtime
never runs in int8.

The quantizer is ``X86InductorQuantizer``'s QAT configuration: uint8
per-tensor activations, int8 symmetric per-channel weights, Conv+BN folded
with simulated quantization while training. It matches what ONNX Runtime's
x86 kernels run. ``reduce_range`` narrows activations to 7 bits for CPUs
without VNNI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.api.worker_contract import THREADS_ENV
from edgequant.backends.base import Batches


def _outputs_are_probabilities(out: Any) -> bool:
    import torch

    return bool(out.min() >= 0 and torch.allclose(out.sum(dim=1), torch.ones(out.shape[0]), atol=1e-3))


def fine_tune(
    *,
    program: Any,
    training: Batches,
    spec: api.Training,
    reduce_range: bool,
    log: Callable[[str], None],
    seed: int = 0,
) -> Any:
    """Insert fake quantization, fine-tune ``spec.epochs`` epochs at ``spec.learning_rate``, convert: a GraphModule with Q/DQ ops."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, min(4, os.cpu_count() or 1))))
    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce_range)
    )
    log("QAT: inserting fake quantization (PT2E, X86InductorQuantizer)")
    prepared = prepare_qat_pt2e(program.module(), quantizer)
    move_exported_model_to_train(prepared)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=spec.learning_rate)
    probabilities: bool | None = None
    for epoch in range(spec.epochs):
        seen = correct = 0
        total_loss = 0.0
        for x, y in training:
            inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
            optimizer.zero_grad()
            out = prepared(inputs)
            if probabilities is None:
                probabilities = _outputs_are_probabilities(out.detach())
            loss = (
                torch.nn.functional.nll_loss(torch.log(out.clamp_min(1e-8)), labels)
                if probabilities
                else torch.nn.functional.cross_entropy(out, labels)
            )
            loss.backward()
            optimizer.step()
            seen += len(labels)
            total_loss += float(loss.detach()) * len(labels)
            correct += int((out.detach().argmax(dim=1) == labels).sum())
        log(
            f"QAT epoch {epoch + 1}/{spec.epochs}: loss {total_loss / max(seen, 1):.4f}, accuracy {correct / max(seen, 1):.4f} on {seen} samples"
        )
    move_exported_model_to_eval(prepared)
    log("QAT: converting fake quantization to quantize/dequantize ops")
    return convert_pt2e(prepared)
