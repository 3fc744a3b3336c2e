"""Tolerances and helpers for the cegppo.jax tests (not collected: no test_ prefix); the
framework-neutral strategies come from tests/common/backend_cases.py.

Tolerances (docs/backends.md, "JAX"): values and gradients are compared with the NumPy reference
evaluated on the same dtype-rounded inputs, in the same compute dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from backend_cases import CONFIGS, away_from_kinks

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


def to_np(x: Any) -> np.ndarray:
    """A float64 (or bool/int) NumPy copy of a JAX array, exactly (bf16 -> float64 is exact)."""
    a = np.asarray(x)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16" else a


__all__ = ["CONFIGS", "TOL", "away_from_kinks", "to_np"]
