"""Argument checks shared by the reference and every backend (docs/spec.md clause S9.6).

Only metadata is inspected here (shapes, dtypes as strings, Python scalars), never array values,
so these checks cost nothing and never synchronise a GPU. Data-dependent checks live behind
``validate=True`` in each implementation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._aggregation_modes import AGG_MODES, AGG_TABLE

__all__ = [
    "array_shape",
    "check_agg",
    "check_aggregation",
    "check_aggregation_shapes",
    "check_chunk_size",
    "check_group_shape",
    "check_id_range",
    "check_input_dtype",
    "check_logits_shapes",
    "check_normalizer",
    "check_normalizer_value",
    "check_policy_shapes",
    "check_positive",
    "check_real",
    "dtype_kind",
    "require_finite",
]


def check_real(name: str, value: Any) -> float:
    """A finite real Python number (int or float, never bool), returned as float.

    `bool` is an int subclass, but ``eps_low=True`` or ``entropy_coef=True`` is a bug, not 1.0.
    NumPy's float64 is a float subclass and passes; other NumPy scalars do not (the rule of the
    config fields, S1, which every other scalar argument follows).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    real = float(value)
    if not math.isfinite(real):
        raise ValueError(f"{name} must be finite, got {real!r}")
    return real


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0 (eps, norm_length, temperature)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_agg(agg: Any) -> str:
    """`agg` must name one of AGG_MODES."""
    if not isinstance(agg, str) or agg not in AGG_TABLE:
        raise ValueError(f"agg must be one of {list(AGG_MODES)}, got {agg!r}")
    return agg


def check_input_dtype(name: str, dtype: Any, *, floating_only: bool) -> None:
    """An input's dtype (spec S9.5, S9.6), for every backend: log-probs and logits (``floating_only``)
    must be floating-point; advantages, weights and grad_output may also be integer or bool (a count,
    a sign), never complex or non-numeric, which a cast to a real dtype would silently truncate."""
    kind = dtype_kind(dtype)
    if kind == "float":
        return
    if floating_only:
        raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
    if kind not in ("int", "bool"):
        raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}")


def dtype_kind(dtype: Any) -> str:
    """"bool", "int", "float", "complex" or "other" for a NumPy, JAX (bfloat16 too) or torch dtype.

    Reads the dtype object only (metadata), without importing any framework.
    """
    if hasattr(dtype, "is_floating_point"):  # a torch.dtype
        if dtype.is_floating_point:
            return "float"
        if dtype.is_complex:
            return "complex"
        name = str(dtype).rpartition(".")[2]
        if name == "bool":
            return "bool"
        return "int" if name.startswith(("int", "uint")) else "other"
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "bool"
    if np.issubdtype(dt, np.integer):
        return "int"
    if np.issubdtype(dt, np.floating) or dt.name.startswith(("bfloat", "float")):  # ml_dtypes: kind "V"
        return "float"
    if np.issubdtype(dt, np.complexfloating):
        return "complex"
    return "other"


def array_shape(name: str, x: Any) -> tuple[int, ...]:
    """The shape of an array or tensor as ints; TypeError naming `name` when `x` has none."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}")
    return tuple(int(s) for s in shape)


def check_policy_shapes(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any | None) -> tuple[int, int]:
    """Shapes of the policy-loss inputs: log-probs and mask (B, T); advantages (B, T) or (B,).

    Returns (B, T). Raises ValueError naming the offending argument and its shape.
    """
    lp = array_shape("log_prob", log_prob)
    if len(lp) != 2:
        raise ValueError(f"log_prob must have shape (B, T), got shape {lp}")
    olp = array_shape("old_log_prob", old_log_prob)
    if olp != lp:
        raise ValueError(f"old_log_prob must have the shape of log_prob {lp}, got shape {olp}")
    adv = array_shape("advantages", advantages)
    if adv not in (lp, lp[:1]):
        raise ValueError(f"advantages must have shape {lp} (per token) or {lp[:1]} (per sequence), got shape {adv}")
    if mask is not None:
        m = array_shape("mask", mask)
        if m != lp:
            raise ValueError(f"mask must have the shape of log_prob {lp}, got shape {m}")
    return lp[0], lp[1]


def check_aggregation_shapes(mask: Any, per_token_loss: Any | None = None) -> tuple[int, int]:
    """Shapes of the aggregation inputs (spec S8, S9.6): mask (B, T) and, when given, a per-token loss
    of the mask's shape (checked first: a loss that does not match is named, whatever the mask).

    Returns (B, T). Every implementation's `aggregate_loss`, `aggregation_weights` and
    `local_counts` call this one rule.
    """
    m = array_shape("mask", mask)
    if per_token_loss is not None:
        loss = array_shape("per_token_loss", per_token_loss)
        if loss != m:
            raise ValueError(f"per_token_loss must have the shape of mask {m}, got shape {loss}")
    if len(m) != 2:
        raise ValueError(f"mask must have shape (B, T), got shape {m}")
    return m[0], m[1]


def check_logits_shapes(logits: Any, ids: Any | None = None, weight: Any | None = None) -> int:
    """logits (..., V) with V >= 1; ids and weight (...). Returns V."""
    lg = array_shape("logits", logits)
    if len(lg) < 1 or lg[-1] < 1:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got shape {lg}")
    for name, arr in (("ids", ids), ("weight", weight)):
        if arr is not None:
            s = array_shape(name, arr)
            if s != lg[:-1]:
                raise ValueError(f"{name} must have shape {lg[:-1]} (logits without the vocab axis), got shape {s}")
    return lg[-1]


_FLOAT_MAX = 1.7976931348623157e308


def _bad_normalizer(name: str, value: Any) -> ValueError:
    return ValueError(
        f"{name} must be a finite number >= 0 (0 only for a micro-batch with no valid token), got {value!r}"
    )


def check_normalizer(name: str, value: Any) -> None:
    """A global normalizer (spec S8.2): None, a host number, or a scalar array/tensor (metadata only).

    - Python and NumPy numbers (``np.float32(nan)`` included) and NumPy arrays live in host
      memory, so their value is checked here, always: it must be finite and >= 0, else
      ValueError naming the argument. Whether a 0 is legitimate depends on the mask (spec S8.2:
      only for a micro-batch with no valid token): see `check_normalizer_value`.
    - Any other scalar array (a torch tensor, a jax array, a tracer) is checked for its shape and
      dtype (integer or floating) only: reading its value would synchronise a device, so that happens in
      `check_normalizer_value`, with ``validate=True`` (spec S9.6).

    Written with comparisons only (no `math.isfinite`), so that `torch.compile` can trace it when
    Dynamo turns a Python int into a symbolic one. The backends call this same function.
    """
    if value is None:
        return
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a scalar array, got bool")
    if isinstance(value, (int, float, numbers.Real)):  # numbers.Real: NumPy scalars too
        v: Any = value.item() if isinstance(value, np.generic) else value  # np.float32 vs 1.8e308: no cast warning
        if not (v >= 0 and v <= _FLOAT_MAX):  # NaN fails `>= 0`; +inf fails `<= max`
            raise _bad_normalizer(name, value)
        return
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be a number or a scalar array, got {type(value).__name__}")
    if tuple(shape) not in ((), (1,)):
        raise ValueError(f"{name} must be a scalar, got shape {tuple(shape)}")
    if dtype_kind(value.dtype) not in ("int", "float"):  # bool and complex counts are bugs
        raise TypeError(f"{name} must be a real number or a numeric scalar array, got dtype {value.dtype}")
    if isinstance(value, np.ndarray):  # host memory: reading it synchronises nothing
        v = value.reshape(()).item()
        if not (v >= 0 and v <= _FLOAT_MAX):
            raise _bad_normalizer(name, v)


def check_normalizer_value(name: str, value: float, local_count: int) -> None:
    """The value rule for a normalizer the mode reads (spec S8.2), given this batch's local count.

    A normalizer must be finite and >= 0, and it may be 0 only when this (micro-)batch has no valid
    token (`local_count` = its valid tokens for `num_tokens`, its non-empty rows for `num_seqs`):
    then the numerator is 0 too and the loss is defined as 0 (spec S8.4). Anything else raises
    ValueError naming the argument. The reference applies this always; the backends with
    ``validate=True`` (the values may live on a device), and otherwise make the loss NaN on the
    device instead of replacing the normalizer (see their `_denominator`).
    """
    if not (value >= 0 and value <= _FLOAT_MAX):
        raise _bad_normalizer(name, value)
    if value == 0 and local_count > 0:
        raise ValueError(
            f"{name} is 0 but this batch has {local_count} valid "
            f"{'tokens' if name == 'num_tokens' else 'sequences'}: a normalizer may be 0 only for a "
            "micro-batch with no valid token (pass the global count over all micro-batches and ranks)"
        )


def check_aggregation(
    agg: Any,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: Any,
    *,
    array_type: Callable[[str, Any], Any] | None = None,
) -> tuple[str, float | None]:
    """Every metadata check of the aggregation arguments (spec S8.2, S9.6); returns (agg, norm_length).

    `agg` one of AGG_MODES; `num_tokens` and `num_seqs` as in `check_normalizer`; `norm_length`
    None or a finite number > 0. `array_type` is a backend's own check that an argument is one
    of its array types (TypeError otherwise), applied first to normalizers that are arrays.
    """
    agg = check_agg(agg)
    for name, value in (("num_tokens", num_tokens), ("num_seqs", num_seqs)):
        if array_type is not None and hasattr(value, "dtype") and not isinstance(value, np.generic):
            array_type(name, value)
        check_normalizer(name, value)
    return agg, (None if norm_length is None else check_positive("norm_length", norm_length))


def check_group_shape(rewards_shape: Sequence[int], group_size: Any) -> int:
    """rewards (N,) with N a positive multiple of group_size >= 2. Returns the number of groups."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a baseline needs two samples), got {group_size}")
    if len(rewards_shape) != 1:
        raise ValueError(f"rewards must have shape (num_prompts * group_size,), got shape {tuple(rewards_shape)}")
    n = int(rewards_shape[0])
    if n == 0 or n % group_size:
        raise ValueError(f"rewards length {n} must be a positive multiple of group_size={group_size}")
    return n // group_size


def check_chunk_size(chunk_size: Any) -> int | None:
    """Rows per chunk of the chunked softmax head and of the fused head: None or an int >= 1 (spec S11)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int or None, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (rows per chunk), got {chunk_size}")
    return chunk_size


def check_id_range(name: str, lo: int, hi: int, v: int, *, valid_only: bool = False) -> None:
    """Token ids, given their least and greatest value, must lie in [0, V) (spec S11).

    The caller reads `lo` and `hi` (over the valid positions only when `valid_only`): the reference
    always, a backend for host (NumPy) ids always and for device ids with ``validate=True``.
    """
    if lo < 0 or hi >= v:
        where = " at valid (mask = True) positions" if valid_only else " (the vocabulary)"
        raise ValueError(f"{name} must lie in [0, {v}){where}, got values in [{lo}, {hi}]")


def require_finite(name: str, all_finite: bool) -> None:
    """`validate=True`: `all_finite` says whether `name` is finite at every valid (mask = True)
    position, as the caller's framework computed it (spec S9.6); ValueError naming it if not."""
    if not all_finite:
        raise ValueError(f"{name} holds non-finite values at valid (mask = True) positions")
