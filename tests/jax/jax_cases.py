"""Shared strategies, tolerances and helpers for the cegppo.jax tests (not collected: no test_ prefix).

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
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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

CONFIGS = [
    cegppo.CEGPPOConfig(),
    cegppo.presets.ce_gppo_7b(),
    cegppo.presets.ce_gppo_official(),
    cegppo.presets.ppo(),
    cegppo.presets.dual_clip_ppo(),
    cegppo.presets.dapo(),
    cegppo.presets.gppo(),
    cegppo.CEGPPOConfig(eps_low=0.3, eps_high=0.5, beta_low=0.75, beta_high=2.0, dual_clip=1.5),
]

SHAPE = (5, 7)
"""The (B, T) of every Hypothesis-drawn batch."""


def to_np(x: Any) -> np.ndarray:
    """A float64 (or bool/int) NumPy copy of a JAX array, exactly (bf16 -> float64 is exact)."""
    a = np.asarray(x)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16" else a


def away_from_kinks(logr: np.ndarray, cfg: cegppo.CEGPPOConfig, gap: float = 1e-3) -> np.ndarray:
    """Move log-ratios within `gap` of a region boundary (clip bounds, dual clip) out of that band."""
    out = np.array(logr, dtype=np.float64)
    bounds = [cfg.log_lower, cfg.log_upper] + ([] if cfg.log_dual_clip is None else [cfg.log_dual_clip])
    for b in bounds:
        near = np.abs(out - b) < gap
        out = np.where(near, b + np.where(out >= b, 2 * gap, -2 * gap), out)
    return out


@st.composite
def policy_batches(draw: Any, *, logr_scale: float = 1.0, per_sequence: bool | None = None) -> dict[str, Any]:
    """Float64 NumPy inputs of policy_loss with shape SHAPE: log_prob, logr, advantages, mask (labelled).

    The mask is drawn row by row from full / empty / random rows, so batches with empty rows,
    empty batches and full batches all occur.
    """
    b, t = SHAPE
    finite = {"allow_nan": False, "allow_infinity": False}
    lp = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-8, 0, **finite)), label="log_prob")
    logr = draw(
        hnp.arrays(np.float64, (b, t), elements=st.floats(-2 * logr_scale, 2 * logr_scale, **finite)),
        label="logr",
    )
    seq = draw(st.booleans(), label="per_sequence") if per_sequence is None else per_sequence
    # XLA on CPU treats subnormal floats as 0 (denormals-are-zero), in comparisons too, so a
    # subnormal advantage falls in the A = 0 region there while NumPy sees its sign
    # (docs/backends.md, "Subnormal numbers"). Advantages below float32's smallest normal number
    # (subnormal once cast to float32/bf16) are drawn as 0 instead.
    tiny = float(np.finfo(np.float32).tiny)
    adv_el = st.floats(-3, 3, **finite).map(lambda a: 0.0 if abs(a) < tiny else a)
    adv = draw(
        hnp.arrays(np.float64, (b,) if seq else (b, t), elements=st.one_of(st.just(0.0), adv_el)),
        label="advantages",
    )
    kind = draw(st.lists(st.sampled_from(["full", "empty", "random"]), min_size=b, max_size=b), label="row_kinds")
    rand = draw(hnp.arrays(np.bool_, (b, t)), label="mask_bits")
    mask = np.stack([np.ones(t, bool) if k == "full" else np.zeros(t, bool) if k == "empty" else r for k, r in zip(kind, rand, strict=True)])
    return {"log_prob": lp, "logr": logr, "advantages": adv, "mask": mask}


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
    """Finite entries close, non-finite entries identical (same inf sign, NaN where NaN)."""
    a, b = to_np(a).astype(np.float64), np.asarray(b, np.float64)
    same_nonfinite = np.array_equal(np.isfinite(a), np.isfinite(b)) and np.array_equal(
        a[~np.isfinite(a)], b[~np.isfinite(b)], equal_nan=True
    )
    fin = np.isfinite(a) & np.isfinite(b)
    return bool(same_nonfinite and np.allclose(a[fin], b[fin], rtol=rtol, atol=atol))


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
