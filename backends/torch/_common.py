"""Input coercion for cegppo.torch: the dtype rules of docs/spec.md clause S9.5, checked on metadata only.

Nothing here reads tensor values, so nothing here synchronises a GPU (spec S9.6).
"""

from __future__ import annotations

from typing import Any

from cegppo._validation import check_input_dtype

import torch

__all__ = ["as_bool_mask", "as_float", "check_tensor", "compute_dtype", "scalar"]


def check_tensor(name: str, x: Any) -> torch.Tensor:
    """`x` must be a torch.Tensor (TypeError naming the argument otherwise)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def compute_dtype(*named: tuple[str, torch.Tensor]) -> torch.dtype:
    """The dtype to compute in: the promotion of the floating inputs, at least float32 (spec S9.5).

    bfloat16/float16 inputs are computed in float32; float64 stays float64. Integer or bool inputs
    (advantages) take part as float32. Complex inputs are refused.
    """
    dt = torch.float32
    for name, x in named:
        check_tensor(name, x)
        if x.dtype.is_floating_point:
            dt = torch.promote_types(dt, x.dtype)
        elif x.dtype.is_complex:
            raise TypeError(f"{name} must be a real numeric tensor, got dtype {x.dtype}")
    return dt


def as_float(name: str, x: torch.Tensor, dtype: torch.dtype, *, floating_only: bool = True) -> torch.Tensor:
    """`x` in `dtype` (no copy when it already is); log-probs and logits must be floating-point."""
    check_tensor(name, x)
    check_input_dtype(name, x.dtype, floating_only=floating_only)
    return x.to(dtype)


def as_bool_mask(mask: Any) -> torch.Tensor:
    """A mask is bool, or integer 0/1 (nonzero = valid). Float masks are refused: they are often weights."""
    check_tensor("mask", mask)
    if mask.dtype == torch.bool:
        return mask
    if not (mask.dtype.is_floating_point or mask.dtype.is_complex):
        return mask != 0
    raise TypeError(f"mask must be a bool (or integer 0/1) tensor, got dtype {mask.dtype}; use mask.bool()")


def scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor of `like`'s dtype and device.

    Used instead of Python floats in `torch.where`, where two Python scalars would come out in the
    default dtype (float32) and silently demote a float64 computation (spec S9.5).
    """
    return torch.full((), value, dtype=like.dtype, device=like.device)
