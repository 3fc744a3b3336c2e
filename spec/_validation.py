"""Argument checks shared by the reference and every backend (docs/spec.md clause S9.6).

Only metadata is inspected here (shapes, dtypes as strings, Python scalars), never array values,
so these checks cost nothing and never synchronise a GPU. Data-dependent checks live behind
``validate=True`` in each implementation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._config import CEGPPOConfig

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "check_agg",
    "check_aggregation",
    "check_config",
    "check_estimator",
    "check_group_shape",
    "check_logits_shapes",
    "check_normalizer",
    "check_normalizer_value",
    "check_policy_shapes",
    "check_positive",
    "read_normalizers",
]

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
"""Loss aggregation modes, named as in verl (spec clause S8)."""

ADVANTAGE_ESTIMATORS: tuple[str, ...] = ("grpo", "drgrpo", "rloo")
"""Group-relative advantage estimators (spec clause S12)."""


def check_config(cfg: Any) -> CEGPPOConfig:
    """`cfg` must be a CEGPPOConfig (already validated at construction)."""
    if not isinstance(cfg, CEGPPOConfig):
        raise TypeError(f"cfg must be a cegppo.CEGPPOConfig, got {type(cfg).__name__}")
    return cfg


def check_agg(agg: Any) -> str:
    """`agg` must name one of AGG_MODES."""
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {list(AGG_MODES)}, got {agg!r}")
    return str(agg)


def _shape(name: str, x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}")
    return tuple(int(s) for s in shape)


def check_policy_shapes(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any | None) -> tuple[int, int]:
    """Shapes of the policy-loss inputs: log-probs and mask (B, T); advantages (B, T) or (B,).

    Returns (B, T). Raises ValueError naming the offending argument and its shape.
    """
    lp = _shape("log_prob", log_prob)
    if len(lp) != 2:
        raise ValueError(f"log_prob must have shape (B, T), got shape {lp}")
    olp = _shape("old_log_prob", old_log_prob)
    if olp != lp:
        raise ValueError(f"old_log_prob must have the shape of log_prob {lp}, got shape {olp}")
    adv = _shape("advantages", advantages)
    if adv not in (lp, lp[:1]):
        raise ValueError(f"advantages must have shape {lp} (per token) or {lp[:1]} (per sequence), got shape {adv}")
    if mask is not None:
        m = _shape("mask", mask)
        if m != lp:
            raise ValueError(f"mask must have the shape of log_prob {lp}, got shape {m}")
    return lp[0], lp[1]


def check_logits_shapes(logits: Any, ids: Any | None = None, weight: Any | None = None) -> int:
    """logits (..., V) with V >= 1; ids and weight (...). Returns V."""
    lg = _shape("logits", logits)
    if len(lg) < 1 or lg[-1] < 1:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got shape {lg}")
    for name, arr in (("ids", ids), ("weight", weight)):
        if arr is not None:
            s = _shape(name, arr)
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
    - Any other scalar array (a torch tensor, a jax array, a tracer) is checked for its shape
      only: reading its value would synchronise a device, so that happens in
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
    if isinstance(value, np.ndarray):  # host memory: reading it synchronises nothing
        if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
            raise TypeError(f"{name} must be a real number or a numeric scalar array, got dtype {value.dtype}")
        v = value.reshape(()).item()
        if not (v >= 0 and v <= _FLOAT_MAX):
            raise _bad_normalizer(name, v)


def read_normalizers(agg: str, num_tokens: Any, num_seqs: Any) -> tuple[tuple[str, Any], ...]:
    """The normalizers that aggregation mode `agg` reads, as (name, value) pairs (spec S8.2).

    token-mean reads `num_tokens`, the seq-mean modes read `num_seqs`, token-sum reads neither.
    """
    if agg == "token-mean":
        return (("num_tokens", num_tokens),)
    if agg.startswith("seq-mean"):
        return (("num_seqs", num_seqs),)
    return ()


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


def check_aggregation(agg: Any, num_tokens: Any, num_seqs: Any, norm_length: Any) -> tuple[str, float | None]:
    """Every metadata check of the aggregation arguments (spec S8.2, S9.6); returns (agg, norm_length).

    `agg` one of AGG_MODES; `num_tokens` and `num_seqs` as in `check_normalizer`; `norm_length`
    None or a finite number > 0.
    """
    agg = check_agg(agg)
    check_normalizer("num_tokens", num_tokens)
    check_normalizer("num_seqs", num_seqs)
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


def check_estimator(estimator: Any) -> str:
    """`estimator` must name one of ADVANTAGE_ESTIMATORS."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ADVANTAGE_ESTIMATORS)}, got {estimator!r}")
    return str(estimator)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0 (eps, norm_length, temperature)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
