"""Exhaustive ordering and flagging, the fast ranking's noise attribution, and ranking agreement."""

from __future__ import annotations

import numpy as np
import pytest

from edgequant.analysis.sensitivity import (
    FAST_FLAG_SQNR_DB,
    LayerProbe,
    ProbedOp,
    agreement,
    attribute_increments,
    combine,
    exhaustive_sensitivity,
    fast_sensitivity,
    rank_probes,
    spearman,
)
from edgequant.analysis.tensor_error import TensorError, noise_to_signal


def _err(sqnr_db: float) -> TensorError:
    return TensorError(sqnr_db=sqnr_db, mse=noise_to_signal(sqnr_db), cosine=1.0, max_abs=0.0)


def test_exhaustive_sorts_flags_and_counts_runs() -> None:
    alone = {"conv1": 0.899, "conv2": 0.80, "fc1": 0.893, "logits": 0.90}
    calls: list[str] = []

    def accuracy_with_only(layer: str) -> float:
        calls.append(layer)
        return alone[layer]

    report = exhaustive_sensitivity(
        layers=list(alone), reference_accuracy=0.90, accuracy_with_only=accuracy_with_only, threshold=0.005
    )
    assert calls == list(alone)
    assert [e.layer for e in report.layers] == ["conv2", "fc1", "conv1", "logits"]
    assert [e.rank for e in report.layers] == [1, 2, 3, 4]
    assert report.flagged == ["conv2", "fc1"]
    assert report.layers[0].accuracy_delta == pytest.approx(0.10)
    assert report.quantize_runs == 4 and report.mode.value == "exhaustive"


def test_exhaustive_ties_keep_model_order_and_empty_is_an_error() -> None:
    report = exhaustive_sensitivity(
        layers=["a", "b", "c"], reference_accuracy=0.5, accuracy_with_only=lambda _l: 0.5, threshold=0.0
    )
    assert [e.layer for e in report.layers] == ["a", "b", "c"] and report.flagged == []
    with pytest.raises(ValueError, match="no quantizable layers"):
        exhaustive_sensitivity(layers=[], reference_accuracy=0.5, accuracy_with_only=lambda _l: 0.5, threshold=0.0)


def _chain() -> list[ProbedOp]:
    # input -> quantize -> conv1 -> pool (own layer) -> conv2 -> shape op (no layer) -> fc -> logits
    return [
        ProbedOp(layer=None, inputs=("input",), output="q_in"),
        ProbedOp(layer="conv1", inputs=("q_in",), output="t1"),
        ProbedOp(layer="pool", inputs=("t1",), output="t2"),
        ProbedOp(layer="conv2", inputs=("t2",), output="t3"),
        ProbedOp(layer=None, inputs=("t3",), output="t3r"),
        ProbedOp(layer="fc", inputs=("t3r",), output="t4"),
        ProbedOp(layer="logits", inputs=("t4",), output="t5"),
    ]


def _ranked(probes: list[LayerProbe]) -> list:
    return rank_probes(probes)


def test_increments_blame_the_layer_that_adds_the_noise_not_those_after_it() -> None:
    # Cumulative errors: conv2 injects most, everything downstream inherits it (lower SQNR than conv2 itself).
    errors = {"t1": _err(45), "t2": _err(45), "t3": _err(18), "t4": _err(17.5), "t5": _err(17.0)}
    probes = attribute_increments(ops=_chain(), errors=errors)
    assert [p.layer for p in probes] == ["conv1", "pool", "conv2", "fc", "logits"]  # graph order
    layers = _ranked(probes)
    assert layers[0].layer == "conv2"
    assert layers[0].sqnr_db == 18 and layers[0].flagged
    # pool adds nothing on top of conv1: ranked last with the ceiling.
    assert layers[-1].layer == "pool" and layers[-1].injected_sqnr_db == pytest.approx(200.0)
    # a raw cumulative reading would have put logits first:
    assert min(errors, key=lambda t: errors[t].sqnr_db) == "t5"
    # the unprobed reshape passes conv2's noise on to fc, so fc is not blamed for it
    fc = next(e for e in layers if e.layer == "fc")
    assert fc.injected_sqnr_db > 25 and not fc.flagged


def test_increments_take_the_worst_input_of_a_join_and_sum_ops_of_one_layer() -> None:
    ops = [
        ProbedOp(layer="a", inputs=("x",), output="ta"),
        ProbedOp(layer="b", inputs=("x",), output="tb"),
        ProbedOp(layer="add", inputs=("ta", "tb"), output="tc"),
        ProbedOp(layer="head", inputs=("tc",), output="td1"),
        ProbedOp(layer="head", inputs=("td1",), output="td2"),
    ]
    errors = {"ta": _err(40), "tb": _err(25), "tc": _err(24.9), "td1": _err(22), "td2": _err(20)}
    layers = {e.layer: e for e in _ranked(attribute_increments(ops=ops, errors=errors))}
    # add receives tb's noise (the worse input) and adds almost nothing
    assert layers["add"].injected_sqnr_db > 40
    # head's two ops together add 10^-2 - 10^-2.49
    expected = -10 * np.log10(noise_to_signal(20) - noise_to_signal(24.9))
    assert layers["head"].injected_sqnr_db == pytest.approx(expected)
    # its reported output error is that of its last op
    assert layers["head"].sqnr_db == 20


def test_local_probes_rank_by_own_noise_even_behind_a_noisy_layer() -> None:
    # Behind conv2's 0.4 dB garbage no increment is visible, but a local probe still sees conv3's own error.
    probes = [
        LayerProbe(layer="conv2", own_noise=noise_to_signal(0.4), output=_err(0.4)),
        LayerProbe(layer="conv3", own_noise=noise_to_signal(4.0), output=_err(0.3)),
        LayerProbe(layer="fc", own_noise=noise_to_signal(35.0), output=_err(0.3)),
    ]
    ranked = _ranked(probes)
    assert [e.layer for e in ranked] == ["conv2", "conv3", "fc"]
    assert [e.flagged for e in ranked] == [True, True, False]
    assert ranked[1].injected_sqnr_db == pytest.approx(4.0) and ranked[1].sqnr_db == pytest.approx(0.3)


def test_fast_report_and_empty_probe() -> None:
    report = fast_sensitivity(
        probes=attribute_increments(ops=_chain(), errors={"t3": _err(10)}), threshold=0.005, seconds=0.1
    )
    assert [e.layer for e in report.layers] == ["conv2"] and report.fast_flag_sqnr_db == FAST_FLAG_SQNR_DB
    with pytest.raises(ValueError, match="nothing to rank"):
        fast_sensitivity(probes=[], threshold=0.005, seconds=0.0)


def test_agreement_overlap_and_spearman() -> None:
    ex = ["a", "b", "c", "d", "e", "f", "g"]
    assert agreement(fast=ex, exhaustive=ex).top_k_overlap == 5
    assert agreement(fast=ex, exhaustive=ex).spearman == pytest.approx(1.0)
    swapped = ["a", "b", "c", "d", "f", "e", "g"]
    res = agreement(fast=swapped, exhaustive=ex, k=5)
    assert res.top_k_overlap == 4 and res.fast_top == ["a", "b", "c", "d", "f"]
    assert spearman(list(reversed(ex)), ex) == pytest.approx(-1.0)
    # fewer layers than k: k shrinks; layers missing from one ranking are ignored
    small = agreement(fast=["x", "a", "b"], exhaustive=["b", "a"], k=5)
    assert small.k == 2 and small.top_k_overlap == 2 and small.spearman == pytest.approx(-1.0)


def test_combine_attaches_fast_and_agreement() -> None:
    ex = exhaustive_sensitivity(
        layers=["conv1", "pool", "conv2", "fc", "logits"],
        reference_accuracy=0.9,
        accuracy_with_only={"conv1": 0.89, "pool": 0.9, "conv2": 0.7, "fc": 0.88, "logits": 0.895}.__getitem__,
        threshold=0.005,
    )
    errors = {"t1": _err(30), "t2": _err(30), "t3": _err(15), "t4": _err(14.9), "t5": _err(14.8)}
    fast = fast_sensitivity(probes=attribute_increments(ops=_chain(), errors=errors), threshold=0.005, seconds=0.5)
    both = combine(exhaustive=ex, fast=fast)
    assert both.mode.value == "exhaustive" and both.layers == ex.layers
    assert both.fast[0].layer == "conv2" and both.agreement is not None
    assert both.agreement.exhaustive_top[0] == both.agreement.fast_top[0] == "conv2"
    wire = both.to_wire()
    assert wire["agreement"]["topKOverlap"] == both.agreement.top_k_overlap
    assert combine(exhaustive=ex, fast=None) is ex
