"""Chapter S11.1: a fused LM-head loss equals the unfused path (values, metrics, gradients).

Run on adapters from `fused_adapter` (``target == "fused"``); the policy-loss properties of the
other chapters do not apply to them, nor these to policy losses. The reference is the float64
unfused composition of `head_expected`; inputs come from `draw_head_case`, which reaches every
region of S2, every aggregation mode, masks with holes and empty rows, global normalizers,
temperature, bias and the entropy bonus.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import Mismatch
from ._fused import (
    FusedAdapter,
    HeadCase,
    HeadResult,
    compare_head_grad,
    compare_head_value,
    draw_head_case,
    head_expected,
    with_garbage,
)
from ._registry import prop

__all__: list[str] = []


def _run(ad: Adapter, case: HeadCase) -> HeadResult:
    assert isinstance(ad, FusedAdapter)
    return ad.run(case)


def _draw(ad: Adapter, data: Any) -> HeadCase:
    return draw_head_case(data, dtypes=ad.dtypes, aggs=ad.aggs)


@prop("S11.1", "fused value equals the unfused path", "fused", target="fused")
def fused_value(ad: Adapter, data: Any) -> None:
    """The loss equals policy_loss(token_log_probs(z)) - entropy_coef * aggregate_loss(entropy(z)), z = (hW^T + b)/tau."""
    case = _draw(ad, data)
    got, want = _run(ad, case), head_expected(case)
    if got.out_dtype != case.dtype:
        raise Mismatch("loss dtype", case, case.dtype, got.out_dtype)
    compare_head_value("loss vs the unfused path", case, got.value, want.value, want.value_scale)


@prop("S11.1", "fused metrics equal the unfused path", "fused", target="fused")
def fused_metrics(ad: Adapter, data: Any) -> None:
    """policy_metrics (S10), entropy_mean and the per-region first-order entropy change (S11) of the unfused path."""
    case = _draw(ad, data)
    got, want = _run(ad, case), head_expected(case)
    missing = sorted(set(want.metrics) - set(got.metrics))
    if missing:
        raise Mismatch("metric keys", case, sorted(want.metrics), sorted(got.metrics),
                       f"missing {missing}")
    for key, value in want.metrics.items():
        compare_head_value(f"metric {key}", case, got.metrics[key], value, want.metric_scales[key])


@prop("S11.1", "fused gradients equal the unfused path", "fused", target="fused")
def fused_gradients(ad: Adapter, data: Any) -> None:
    """d loss / d hidden, d weight and d bias equal the chain rule through the full logits (S4, S11)."""
    case = _draw(ad, data)
    got, want = _run(ad, case), head_expected(case)
    for name, g in want.grads.items():
        if name not in got.grads:
            raise Mismatch(f"d loss / d {name}", case, "a gradient", "none")
        compare_head_grad(f"d loss / d {name} vs the unfused path", case, got.grads[name], g, want.grad_scales[name])


@prop("S11.1", "fused masked garbage changes nothing", "fused", target="fused")
def fused_masked_garbage(ad: Adapter, data: Any) -> None:
    """NaN/inf hidden rows, token id -100 and NaN old log-probs/advantages in masked positions change nothing (S9.3)."""
    case = with_garbage(_draw(ad, data), data)
    got, want = _run(ad, case), head_expected(case)
    compare_head_value("loss with garbage in masked positions", case, got.value, want.value, want.value_scale)
    for key, value in want.metrics.items():
        compare_head_value(f"metric {key} with garbage in masked positions", case, got.metrics.get(key, np.nan),
                           value, want.metric_scales[key])
    for name, g in want.grads.items():
        compare_head_grad(f"d loss / d {name} with garbage in masked positions", case, got.grads[name], g,
                          want.grad_scales[name])


@prop("S11.1", "fused empty batch gives zero", "fused", target="fused")
def fused_empty_batch(ad: Adapter, data: Any) -> None:
    """With every token masked the loss, every metric and every gradient are exactly 0 (S8.4, S9.4)."""
    case = _draw(ad, data)
    case = with_garbage(case.with_(mask=np.zeros_like(case.mask), num_tokens=None, num_seqs=None), data)
    if data.draw(st.booleans(), label="chunk_size 1"):
        case = case.with_(chunk_size=1)
    got = _run(ad, case)
    if got.value != 0.0:
        raise Mismatch("loss of an all-masked batch", case, 0.0, got.value)
    for key, value in got.metrics.items():
        if value != 0.0:
            raise Mismatch(f"metric {key} of an all-masked batch", case, 0.0, value)
    for name, g in got.grads.items():
        if np.any(g != 0.0):
            raise Mismatch(f"d loss / d {name} of an all-masked batch", case, np.zeros_like(g), g)


@prop("S11.1", "fused old_log_prob and advantages are constants", "fused", target="fused")
def fused_constants(ad: Adapter, data: Any) -> None:
    """Passed as differentiable inputs (torch requires_grad, jax traced), old_log_prob and advantages get no or a zero gradient (S4)."""
    assert isinstance(ad, FusedAdapter)
    case = _draw(ad, data)
    for name, got in ad.constant_grads(case).items():
        if got is None:
            continue
        want = np.zeros(np.shape(getattr(case, name)))
        if np.shape(got) != want.shape or not np.all(got == 0):
            raise Mismatch(f"d loss / d {name}", case, want, np.asarray(got),
                           f"{name} is a constant of the loss (spec S4): detach it / lax.stop_gradient it")
