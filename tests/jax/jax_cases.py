"""Tolerances and helpers for the cegppo.jax tests (not collected: no test_ prefix); the
framework-neutral strategies come from tests/common/backend_cases.py.

Shapes are fixed (a few (B, T) per strategy) and the variety comes from the mask and the values:
JAX compiles every primitive (and every jitted function) once per shape, so drawing shapes would
spend the test budget on compilation.

Tolerances (docs/backends.md, "JAX"): values and gradients are compared with the NumPy reference
evaluated on the same dtype-rounded inputs, in the same compute dtype. A float32 sum of n terms
carries a rounding error proportional to sum |terms|, so value tolerances are relative to that
scale (`loss_scale`), not to the (possibly cancelling) result.
"""

from __future__ import annotations

from typing import Any

import cegppo
import jax.numpy as jnp
import numpy as np
from backend_cases import CONFIGS, away_from_kinks
from backend_cases import isclose_or_same_nonfinite as shared_isclose
from backend_cases import policy_batches as shared_batches

# (rtol, atol) per dtype name: values and gradients (the reference runs in the same compute dtype).
TOL: dict[str, dict[str, tuple[float, float]]] = {
    "float64": {"value": (1e-10, 1e-10), "grad": (1e-10, 1e-12)},
    "float32": {"value": (1e-5, 1e-5), "grad": (1e-5, 1e-7)},
    # bf16/fp16 inputs: computed in float32 on the rounded inputs, so the value is float32-accurate;
    # the gradient is returned in the input dtype, so it also carries that dtype's rounding
    # (2^-8 relative for bf16, 2^-11 for fp16).
    "bfloat16": {"value": (1e-5, 1e-5), "grad": (2**-8, 1e-7)},
    "float16": {"value": (1e-5, 1e-5), "grad": (2**-11, 1e-7)},
}

# The reference's compute dtype for inputs rounded to each JAX dtype.
NP_COMPUTE = {"float64": np.float64, "float32": np.float32, "bfloat16": np.float32, "float16": np.float32}

SHAPE = (5, 7)
"""The (B, T) of every Hypothesis-drawn batch."""


def to_np(x: Any) -> np.ndarray:
    """A float64 (or bool/int) NumPy copy of a JAX array, exactly (bf16 -> float64 is exact)."""
    a = np.asarray(x)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16" else a


def policy_batches(*, logr_scale: float = 1.0, per_sequence: bool | None = None) -> Any:
    """`backend_cases.policy_batches` at the fixed SHAPE, subnormal advantages drawn as 0 (XLA flushes them)."""
    return shared_batches(logr_scale=logr_scale, per_sequence=per_sequence, shape=SHAPE, no_subnormal_advantages=True)


def make_inputs(case: dict, dtype: str, cfg: cegppo.CEGPPOConfig, *, kinks: bool = False):
    """JAX arrays in `dtype` and the matching NumPy reference inputs (same rounded values, reference compute dtype)."""
    logr = case["logr"] if kinks else away_from_kinks(case["logr"], cfg)
    jdt = jnp.dtype(dtype)
    lp = jnp.asarray(case["log_prob"]).astype(jdt)
    olp = jnp.asarray(case["log_prob"] - logr).astype(jdt)
    adv = jnp.asarray(case["advantages"]).astype(jdt)
    mask = jnp.asarray(case["mask"])
    npdt = NP_COMPUTE[dtype]
    ref = (to_np(lp).astype(npdt), to_np(olp).astype(npdt), to_np(adv).astype(npdt), case["mask"])
    return (lp, olp, adv, mask), ref


def loss_scale(rlp, rolp, radv, rmask, cfg, agg, **norms) -> float:
    """sum_t |c_t l_t| in float64: the scale of the rounding error of the aggregated loss."""
    c = cegppo.aggregation_weights(rmask, agg, **norms)
    per_token = cegppo.per_token_objective(*(np.asarray(x, np.float64) for x in (rlp, rolp, radv)), cfg)
    return float(np.sum(np.abs(np.where(rmask, c * per_token, 0))))


def isclose_or_same_nonfinite(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Finite entries close, non-finite entries identical (`a` may be a JAX array)."""
    return shared_isclose(to_np(a), b, rtol, atol)


__all__ = [
    "CONFIGS",
    "NP_COMPUTE",
    "SHAPE",
    "TOL",
    "away_from_kinks",
    "isclose_or_same_nonfinite",
    "loss_scale",
    "make_inputs",
    "policy_batches",
    "to_np",
]
