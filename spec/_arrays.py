"""NumPy input coercion for the reference: dtype rules of docs/spec.md clause S9.5."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ._validation import check_input_dtype

__all__ = ["as_bool_mask", "as_float", "compute_dtype"]


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating)


def compute_dtype(*named: tuple[str, Any]) -> np.dtype:
    """The dtype to compute in: the promotion of the floating inputs, at least float32.

    float16 inputs are computed in float32, float64 stays float64 (spec S9.5). Integer or bool
    inputs (advantages) take part as float32.
    """
    dtypes = [np.dtype(np.float32)]
    for name, x in named:
        dt = np.asarray(x).dtype
        if _is_float(dt):
            dtypes.append(dt)
        elif not (np.issubdtype(dt, np.integer) or dt == np.bool_):
            raise TypeError(f"{name} must be a real numeric array, got dtype {dt}")
    return np.result_type(*dtypes)


def as_float(name: str, x: Any, dtype: np.dtype, *, floating_only: bool = True) -> np.ndarray:
    """`x` as an array of `dtype`; log-probs and logits must already be floating-point.

    With ``floating_only=False`` (weights, grad_output, advantages) integer and bool arrays are
    accepted too, but never complex or non-numeric ones: casting those to a real dtype would drop the
    imaginary part (or fail later) instead of naming the argument (spec S9.6).
    """
    arr = np.asarray(x)
    check_input_dtype(name, arr.dtype, floating_only=floating_only)
    return arr.astype(dtype, copy=False)


def as_bool_mask(mask: Any) -> np.ndarray:
    """A mask is bool, or integer 0/1 (nonzero = valid). Float masks are refused: they are often weights."""
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return cast(np.ndarray, arr != 0)
    raise TypeError(f"mask must be a bool (or integer 0/1) array, got dtype {arr.dtype}; use mask.astype(bool)")

