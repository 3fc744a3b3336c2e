"""One conformance input (`Case`), its expected values from the NumPy reference, and tolerances.

A `Case` holds the inputs as float64 NumPy arrays whose values are already exactly representable
in the case's dtype (``float64``, ``float32``, ``bfloat16`` or ``float16``), so the reference
(computed in float64 on the very same numbers) and the implementation under test see identical
inputs. The arrays are read-only: they are the kit's own copy of the inputs, which no port (and no
property) can change, so a reproducer always rebuilds what was checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import cegppo
import numpy as np
from cegppo._aggregation_modes import AGG_TABLE

from ._conventions import Conventions, active

__all__ = [
    "DTYPES",
    "GRAD_TOL",
    "MARGIN",
    "VALUE_TOL",
    "Case",
    "Expected",
    "Mismatch",
    "check_elements",
    "check_scalar",
    "compare_grad",
    "compare_value",
    "expected",
    "round_to",
    "tol_dtype",
    "weights",
]

DTYPES: tuple[str, ...] = ("float64", "float32", "bfloat16", "float16")
"""Input dtypes the suite draws: every dtype spec S9.5 names (half inputs are computed in float32)."""

# Per-dtype tolerances, separate for values and gradients (the style of jax's test utilities).
# Keys are the *input* dtype. bfloat16 inputs must be computed in float32 (spec S9.5), so their
# tolerances are float32's, and so are float16's. A value passes when |got - want| <= atol + rtol * scale, with scale the
# sum of |per-token terms| (so cancellation in the sum cannot make the check impossibly tight); a
# gradient element passes when |got - want| <= atol * max|want| + rtol * |want|.
VALUE_TOL: dict[str, tuple[float, float]] = {  # (rtol, atol)
    "float64": (1e-10, 1e-300),
    "float32": (2e-5, 1e-30),
    "bfloat16": (2e-5, 1e-30),
    "float16": (2e-5, 1e-30),
}
GRAD_TOL: dict[str, tuple[float, float]] = {  # (rtol, atol relative to max |want|)
    "float64": (1e-10, 1e-13),
    "float32": (2e-5, 1e-6),
    "bfloat16": (2e-5, 1e-6),
    # The gradient with respect to a bfloat16 log_prob is itself bfloat16: one rounding, 2^-9 relative.
    "bfloat16-grad": (5e-3, 1e-6),
    "float16": (2e-5, 1e-6),
    # ... and with respect to a float16 log_prob it is float16: one rounding, 2^-11 relative.
    "float16-grad": (1e-3, 1e-6),
}
# Below the smallest normal number of the compute dtype a gradient is not representable faithfully.
# float16's normal range ends at 6.1e-5, where a float16 gradient becomes subnormal: there its
# rounding error is absolute, at most half the subnormal spacing 2^-24.
_TINY: dict[str, float] = {"float64": float(np.finfo(np.float64).tiny), "float32": float(np.finfo(np.float32).tiny),
                           "bfloat16": float(np.finfo(np.float32).tiny), "bfloat16-grad": float(np.finfo(np.float32).tiny),
                           "float16": float(np.finfo(np.float32).tiny), "float16-grad": 2.0**-24}
MARGIN: dict[str, float] = {"float64": 1e-7, "float32": 1e-3, "bfloat16": 1e-3, "float16": 1e-3}
"""Least distance of a log-ratio from a clip boundary when values or gradients are compared.

The objective jumps at the boundaries (unless beta = 1), so a token within rounding error of one
may be classified either way by a correct implementation (log space vs ratio space compare)."""


def round_to(x: Any, dtype: str) -> np.ndarray:
    """`x` rounded to `dtype` and returned as float64 (exactly the numbers a port receives).

    bfloat16 is rounded to nearest-even by hand so that the core needs no ml_dtypes.
    """
    a = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return a.copy()
    if dtype == "float16":
        with np.errstate(over="ignore", invalid="ignore"):  # beyond 65504 is inf, as in any float16
            return a.astype(np.float16).astype(np.float64)
    f = a.astype(np.float32)
    if dtype == "float32":
        return f.astype(np.float64)
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        u = f.view(np.uint32).astype(np.uint64)
        rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        out = rounded.astype(np.uint32).view(np.float32)
    out = np.where(np.isnan(f), f, out)  # keep NaN a NaN (rounding could carry into inf)
    return out.astype(np.float64)


_ARRAYS: tuple[str, ...] = ("log_prob", "old_log_prob", "advantages", "mask")
LAYOUTS: tuple[str, ...] = ("contiguous", "sliced", "transposed", "expanded")
"""Memory layouts of the inputs: contiguous; a slice of a wider padded buffer (verl hands
``log_probs[:, -response_length:]``, a view with a storage offset and a row stride above T); a
transposed buffer (column-major strides, as after a ``.t()`` of a time-major batch); per-token
advantages that are one value per row, handed as a stride-0 view of one column
(``adv[:, None].expand(B, T)``, as GRPO code broadcasts its (B,) advantages), the rest contiguous."""


@dataclass(frozen=True, eq=False)
class Case:
    """Inputs of one call of a policy loss.

    Shapes: log_prob, old_log_prob, mask (B, T); advantages (B, T) or (B,). Arrays are float64
    holding values representable in `dtype`; `mask` is bool. They are made read-only copies.
    `cfg` is the config of any member of the family (`CEGPPOConfig`, `CISPOConfig`, `CISPOCapConfig`,
    `SAPOConfig`, `GSPOConfig`, spec S14.1): its type selects the reference.

    `recipe` is a Python expression that rebuilds the arrays (``cc.scale_case(...)`` for the large
    cases of the scale properties, whose arrays are too big to print in a reproducer); a copy
    made with `with_` that changes an array drops it.
    """

    log_prob: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    mask: np.ndarray
    cfg: Any
    dtype: str = "float32"
    agg: str = "token-mean"
    num_tokens: float | None = None
    num_seqs: float | None = None
    note: str = field(default="", compare=False)
    recipe: str = field(default="", compare=False)
    layout: str = field(default="contiguous", compare=False)
    """How a torch adapter hands the arrays (`LAYOUTS`): as contiguous tensors, or as the views frameworks
    hand (a slice of a wider buffer, a transposed one), to reach kernels that assume contiguity."""
    conventions: Conventions = field(default_factory=active)
    """What the port declared (`_conventions`): the reference and the tolerances follow it. A case built
    while a property runs takes the port's (the active ones), so no strategy needs to be told."""

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            arr = np.array(getattr(self, name), copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.log_prob.shape[0]), int(self.log_prob.shape[1]))

    def with_(self, **changes: Any) -> Case:
        """A copy with some fields replaced (an array changed drops the `recipe`)."""
        if any(name in changes for name in _ARRAYS) and "recipe" not in changes:
            changes["recipe"] = ""
        return replace(self, **changes)

    @property
    def adv_form(self) -> str:
        """``token`` for (B, T) advantages, ``sequence`` for (B,)."""
        return "sequence" if self.advantages.ndim == 1 else "token"

    def adv_2d(self) -> np.ndarray:
        """Advantages as (B, T)."""
        a = self.advantages
        return np.broadcast_to(a[:, None], self.shape).copy() if a.ndim == 1 else a

    @property
    def is_port_call(self) -> bool:
        """Whether a port can evaluate this case: a mode it declared, global normalizers only if declared."""
        conv = self.conventions
        return self.agg in conv.agg and (self.num_tokens is None or conv.global_normalizers)


def tol_dtype(case: Case, dtype: str | None = None) -> str:
    """The tolerance key for `case` (or `dtype`): float64 inputs of a port declared to compute in
    float32 are held to float32's tolerances (their arithmetic is float32's)."""
    key = dtype or case.dtype
    if key == "float64" and case.conventions.compute_dtype == "float32":
        return "float32"
    return key


def weights(case: Case) -> np.ndarray:
    """The aggregation coefficients c_t of `case` (spec S8.1), each count divisor + the declared epsilon.

    Without an epsilon they are `cegppo.aggregation_weights`. With one, every count the mode divides
    by (N, n_i, S) is divided by as count + eps (verl's old masked_mean); L (seq-mean-token-sum-norm)
    is a length, not a count, and N or S passed by the caller are taken as given, + eps.
    """
    eps = case.conventions.normalizer_eps
    if eps == 0.0:
        return np.asarray(cegppo.aggregation_weights(case.mask, case.agg, num_tokens=case.num_tokens,
                                                     num_seqs=case.num_seqs, dtype=np.float64))
    mode = AGG_TABLE[case.agg]
    m = case.mask
    c = m.astype(np.float64)
    if mode.per_row_mean:
        c = c / (c.sum(axis=-1, keepdims=True) + eps)
    if mode.normalizer == "num_tokens":
        den = float(m.sum() if case.num_tokens is None else case.num_tokens) + eps
    elif mode.normalizer == "num_seqs":
        den = float(m.any(axis=-1).sum() if case.num_seqs is None else case.num_seqs) + eps
    else:
        return c
    if mode.by_length:
        den *= m.shape[-1]
    return c / den


@dataclass(frozen=True)
class Expected:
    """Reference loss, gradient d loss / d log_prob and the scale of the loss's terms (all float64)."""

    value: float
    grad: np.ndarray
    scale: float


def expected(case: Case) -> Expected:
    """The NumPy reference in float64 on the case's numbers: cegppo.family_policy_loss and
    cegppo.family_policy_loss_grad, which are cegppo.policy_loss and policy_loss_grad for a CEGPPOConfig
    (spec S14.1), and the member's own row for the other configs.

    Under a declared normalizer epsilon the same per-token terms are aggregated with `weights`.
    """
    if case.conventions.normalizer_eps:
        return _expected_with_weights(case)
    args = (case.log_prob, case.old_log_prob, case.advantages, case.mask, case.cfg, case.agg)
    value = float(cegppo.family_policy_loss(*args, num_tokens=case.num_tokens, num_seqs=case.num_seqs))
    grad = np.asarray(cegppo.family_policy_loss_grad(*args, num_tokens=case.num_tokens, num_seqs=case.num_seqs),
                      dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        j = _masked_objective(case)
        c = cegppo.aggregation_weights(case.mask, case.agg, num_tokens=case.num_tokens,
                                       num_seqs=case.num_seqs, dtype=np.float64)
        scale = float(np.sum(np.where(case.mask, np.abs(c * j), 0.0)))
    return Expected(value, grad, scale)


def _expected_with_weights(case: Case) -> Expected:
    """`expected` with the coefficients of `weights`: loss = sum c_t (-J_t), gradient -c_t F_t A_t (spec S3, S4, S14.1)."""
    m = case.mask
    with np.errstate(over="ignore", invalid="ignore"):
        lp, olp, adv = _masked_inputs(case)
        j = cegppo.family_per_token_objective(lp, olp, adv, m, case.cfg)
        f = cegppo.family_grad_weight(lp, olp, adv, m, case.cfg)
        fa = np.where(adv == 0, 0.0, f * np.where(adv == 0, 1.0, adv))
    c = weights(case)
    value = float(np.sum(np.where(m, c * -j, 0.0)))
    grad = np.where(m, -c * fa, 0.0)
    scale = float(np.sum(np.where(m, np.abs(c * j), 0.0)))
    return Expected(value, grad, scale)


def _masked_inputs(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_prob, old_log_prob, advantages as (B, T)) with masked positions replaced by 0 (spec S9.3)."""
    m = case.mask
    return np.where(m, case.log_prob, 0.0), np.where(m, case.old_log_prob, 0.0), np.where(m, case.adv_2d(), 0.0)


def _masked_objective(case: Case) -> np.ndarray:
    """The per-token objective J (spec S3, S14.1) of the case's valid tokens, 0 elsewhere."""
    return cegppo.family_per_token_objective(*_masked_inputs(case), case.mask, case.cfg)


class Mismatch(AssertionError):
    """A property does not hold: what was compared, on which call, what was expected and what came back."""

    def __init__(self, what: str, case: Any, want: Any, got: Any, detail: str = "") -> None:
        # case: the failing input, a `Case` (policy losses) or a `HeadCase` (fused heads), or None
        self.what, self.case, self.want, self.got, self.detail = what, case, want, got, detail
        super().__init__(f"{what}: expected {_short(want)}, got {_short(got)}" + (f" ({detail})" if detail else ""))


def _short(x: Any) -> str:
    if isinstance(x, np.ndarray):
        with np.printoptions(precision=9, threshold=64, linewidth=100):
            return np.array2string(x, separator=", ")
    if isinstance(x, float):
        return repr(x)
    return str(x)


def check_scalar(what: str, case: Any, got: float, want: float, tol: float) -> None:
    """Raise Mismatch unless `got` is finite and within `tol` of `want` (a `Case` or a `HeadCase`)."""
    if not math.isfinite(got) or abs(got - want) > tol:
        raise Mismatch(what, case, want, got, f"|difference| {abs(got - want):.3g} > tolerance {tol:.3g}")


def check_elements(what: str, case: Any, got: np.ndarray, want: np.ndarray, bound: Any) -> None:
    """Raise Mismatch unless `got` has `want`'s shape and each element is finite and within `bound` (an array
    or a number) of `want`'s; an infinite element of `want` must come back as the same infinity."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        raise Mismatch(what, case, want, got, f"gradient shape {got.shape} != {want.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.isfinite(got) & (np.abs(got - want) <= bound)
        ok |= np.isinf(want) & (got == want)  # a gradient that overflows its dtype (float16), as expected
    if not np.all(ok):
        bad = tuple(int(i) for i in np.argwhere(~ok)[0])
        raise Mismatch(what, case, want, got, f"first bad element {bad}: expected {want[bad]!r}, got {got[bad]!r}")


def value_tolerance(case: Case, want: float, scale: float, dtype: str | None = None) -> float:
    """atol + rtol * max(scale, |want|), (rtol, atol) from VALUE_TOL for the case's dtype (or `dtype`)."""
    rtol, atol = VALUE_TOL[tol_dtype(case, dtype)]
    return atol + rtol * max(scale, abs(want))


def grad_bound(case: Case, want: np.ndarray, dtype: str | None = None) -> np.ndarray:
    """atol * max|want| + rtol * |want| per element, (rtol, atol) from GRAD_TOL, plus the dtype's smallest normal."""
    key = tol_dtype(case, dtype)
    rtol, atol = GRAD_TOL[key]
    finite = want[np.isfinite(want)]
    gmax = float(np.max(np.abs(finite))) if finite.size else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        return atol * gmax + rtol * np.abs(want) + _TINY[key]


def compare_value(what: str, case: Case, got: float, want: float, scale: float, *, dtype: str | None = None) -> None:
    """Raise Mismatch unless |got - want| <= atol + rtol * scale (VALUE_TOL of the dtype); NaN must meet NaN."""
    if math.isnan(want):
        if math.isnan(got):
            return
        raise Mismatch(what, case, want, got)
    check_scalar(what, case, got, want, value_tolerance(case, want, scale, dtype))


def compare_grad(what: str, case: Case, got: np.ndarray, want: np.ndarray, *, dtype: str | None = None) -> None:
    """Raise Mismatch unless every element is within GRAD_TOL of the reference gradient (an infinite
    reference element must come back as the same infinity)."""
    check_elements(what, case, got, want, grad_bound(case, want, dtype))
