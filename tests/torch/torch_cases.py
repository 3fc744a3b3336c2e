"""Tolerances and helpers for the cegppo.torch tests (not collected: no test_ prefix); the
framework-neutral strategies (CONFIGS, policy_batches ...) come from tests/common/backend_cases.py.

Tolerances (docs/backends.md "Dtype rules and tolerances"): values and gradients are compared with
the NumPy reference evaluated on the same (dtype-rounded) inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from backend_cases import CONFIGS, away_from_kinks

# (rtol, atol) per dtype: values and gradients (the reference runs in the same compute dtype).
_F32 = (1e-5, 1e-5)
TOL: dict[torch.dtype, dict[str, tuple[float, float]]] = {
    torch.float64: {"value": (1e-10, 1e-10), "grad": (1e-10, 1e-10)},
    torch.float32: {"value": _F32, "grad": _F32},
    # bf16/fp16 inputs: computed in float32 on the rounded inputs, so the value is float32-accurate;
    # the gradient is returned in the input dtype, so it carries that dtype's rounding (2^-8 for
    # bf16, 2^-11 for fp16, relative) on top of float32's error (its atol: g (1 - p) cancels to 0 in
    # float32 when p rounds to 1, e.g. logits [20, 6], where float64 keeps 1.7e-6).
    torch.bfloat16: {"value": _F32, "grad": (2**-8, _F32[1])},
    torch.float16: {"value": _F32, "grad": (2**-11, _F32[1])},
}

def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64 if t.dtype.is_floating_point else t.dtype).numpy()


__all__ = ["CONFIGS", "TOL", "away_from_kinks", "to_np"]
