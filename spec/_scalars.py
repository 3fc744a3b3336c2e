"""Checks of Python scalar arguments, shared by the config, the reference and every backend (spec S1, S9.6).

Kept apart from `_validation` because `_config` needs them and `_validation` needs `_config`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_positive", "check_real"]


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
