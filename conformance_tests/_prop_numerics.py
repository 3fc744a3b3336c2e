"""Chapter S9: numerics (spec S9.1 log space, S9.2 select-then-exponentiate, S9.3 masked garbage,
S9.5 dtypes) plus two properties of any implementation: compiled == eager, and determinism.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import Mismatch, compare_grad, compare_value, expected, round_to
from ._prop_objective import draw_general
from ._registry import prop
from ._strategies import draw_case

__all__: list[str] = []

GARBAGE: tuple[float, ...] = (float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0)


@prop("S9.1", "finite at extreme log-ratios", "numerics")
def extreme_log_ratios(ad: Adapter, data: Any) -> None:
    """|logr| up to 1e4 and +-inf (a -inf old_log_prob or log_prob): loss and gradient stay finite and equal the reference wherever the true value is representable."""
    case = draw_general(ad, data, extremes=True)
    got = ad.run(case)
    want = expected(case)
    if not np.isfinite(got.value):
        raise Mismatch("loss finite", case, want.value, got.value, "the true loss is representable")
    compare_value("loss", case, got.value, want.value, want.scale)
    if ad.has_grad:
        compare_grad("d loss / d log_prob", case, got.grad_or_fail(case), want.grad)


@prop("S9.3", "masked garbage changes nothing", "numerics")
def masked_garbage(ad: Adapter, data: Any) -> None:
    """NaN, +-inf or huge values at masked positions change neither the loss nor any gradient."""
    case = draw_case(data, dtypes=ad.dtypes, aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    holes = ~case.mask
    junk = st.sampled_from(GARBAGE)
    n = int(holes.sum())
    fields = data.draw(st.sets(st.sampled_from(["log_prob", "old_log_prob", "advantages"]), min_size=1),
                       label="inputs that get garbage")
    changes: dict[str, np.ndarray] = {}
    for name in sorted(fields):
        arr = getattr(case, name)
        if arr.shape != case.shape:  # per-sequence advantages have no masked positions
            continue
        vals = data.draw(st.lists(junk, min_size=n, max_size=n), label=f"garbage in {name}")
        new = arr.copy()
        new[holes] = round_to(np.array(vals, dtype=np.float64), case.dtype)
        changes[name] = new
    dirty = case.with_(**changes)
    clean_r, dirty_r = ad.run(case), ad.run(dirty)
    scale = expected(case).scale
    compare_value("loss with garbage at masked positions vs without", dirty, dirty_r.value, clean_r.value, scale)
    if ad.has_grad:
        compare_grad("gradient with garbage at masked positions vs without", dirty, dirty_r.grad_or_fail(dirty), clean_r.grad_or_fail(dirty))


def _declares_float32(ad: Adapter) -> str | None:
    if ad.conventions.compute_dtype == "float32":
        return "compute_dtype='float32' declared: float64 inputs are computed in float32"
    return None


@prop("S9.5", "float64 inputs are computed in float64", "numerics",
      skip=lambda ad: None if "float64" in ad.dtypes else "float64 not available", declared=_declares_float32)
def float64_kept(ad: Adapter, data: Any) -> None:
    """float64 inputs give a float64 loss equal to the reference to float64 precision (no float32 slip)."""
    case = draw_case(data, dtypes=("float64",), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    got = ad.run(case)
    want = expected(case)
    if got.out_dtype != "float64":
        raise Mismatch("dtype of the loss", case, "float64", got.out_dtype)
    compare_value("loss (float64)", case, got.value, want.value, want.scale, dtype="float64")
    if ad.has_grad:
        compare_grad("d loss / d log_prob (float64)", case, got.grad_or_fail(case), want.grad, dtype="float64")


def _half_in_float32(ad: Adapter, data: Any, half: str) -> None:
    """`half` inputs give the loss of float32 arithmetic on the same numbers; the gradient comes back in
    `half`: one rounding (2^-8 relative for bfloat16; 2^-11 for float16, absolute below 6.1e-5, and an
    infinity of its sign beyond float16's largest number, 65504)."""
    case = draw_case(data, dtypes=(half,), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    got = ad.run(case)
    want = expected(case)
    compare_value(f"loss ({half} inputs, float32 arithmetic)", case, got.value, want.value, want.scale)
    if ad.has_grad:
        rounded = round_to(want.grad, half)
        grad = np.where(np.isinf(rounded), rounded, want.grad)
        compare_grad(f"d loss / d log_prob ({half} inputs)", case, got.grad_or_fail(case), grad, dtype=f"{half}-grad")


@prop("S9.5", "bfloat16 inputs are computed in float32", "numerics",
      skip=lambda ad: None if "bfloat16" in ad.dtypes else "bfloat16 not available")
def bf16_in_float32(ad: Adapter, data: Any) -> None:
    """bfloat16 inputs give the loss of float32 arithmetic on the same numbers (the gradient is bfloat16-rounded)."""
    _half_in_float32(ad, data, "bfloat16")


@prop("S9.5", "float16 inputs are computed in float32", "numerics",
      skip=lambda ad: None if "float16" in ad.dtypes else "float16 not available")
def fp16_in_float32(ad: Adapter, data: Any) -> None:
    """float16 inputs give the loss of float32 arithmetic on the same numbers (the gradient is float16-rounded)."""
    _half_in_float32(ad, data, "float16")


@prop("S9", "compiled agrees with eager", "numerics", skip=lambda ad: ad.compile_skip, max_examples=6)
def compiled_matches_eager(ad: Adapter, data: Any) -> None:
    """torch.compile / jax.jit gives the eager loss and gradient (same dtype tolerance)."""
    case = draw_general(ad, data)
    eager = ad.run(case, eager=True)
    comp = ad.run(case, compiled=True)
    scale = expected(case).scale
    compare_value("compiled loss vs eager", case, comp.value, eager.value, scale)
    if ad.has_grad:
        compare_grad("compiled gradient vs eager", case, comp.grad_or_fail(case), eager.grad_or_fail(case))


@prop("S9", "deterministic", "numerics")
def deterministic(ad: Adapter, data: Any) -> None:
    """Two calls on the same inputs return bit-identical loss and gradient."""
    case = draw_general(ad, data, extremes=True)
    a, b = ad.run(case), ad.run(case)
    if not (a.value == b.value or (np.isnan(a.value) and np.isnan(b.value))):
        raise Mismatch("loss of a second identical call", case, a.value, b.value)
    if a.grad is not None and not np.array_equal(a.grad, b.grad_or_fail(case), equal_nan=True):
        raise Mismatch("gradient of a second identical call", case, a.grad, b.grad)
