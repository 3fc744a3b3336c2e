"""Group-relative advantages over G samples per prompt (docs/spec.md clause S12).

`rewards` is (P * G,), the G samples of each prompt contiguous: [p0s0, ..., p0s(G-1), p1s0, ...].
The result has the same shape: one scalar advantage per sequence, which `policy_loss` broadcasts
over that sequence's tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._estimators import run_estimator
from ._validation import check_group_shape, check_positive

__all__ = ["GRPO_EPS", "drgrpo_advantages", "group_advantages", "grpo_advantages", "rloo_advantages"]

GRPO_EPS: float = 1e-6
"""Added to the group std in GRPO's denominator (as verl and TRL do) so a tiny spread cannot blow up."""


def _groups(rewards: Any, group_size: int) -> np.ndarray:
    r = np.asarray(rewards)
    if not (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer) or r.dtype == np.bool_):
        raise TypeError(f"rewards must be a real numeric array, got dtype {r.dtype}")
    check_group_shape(r.shape, group_size)
    r = r.astype(np.result_type(r.dtype, np.float32), copy=False) if r.dtype.kind == "f" else r.astype(np.float64)
    return r.reshape(-1, group_size)


def _flat_equal_to_zero(adv: np.ndarray, r: np.ndarray) -> np.ndarray:
    # A group whose rewards are all equal carries no signal: its advantage is exactly 0 (spec
    # S12.4), not the rounding noise of (r - mean(r)) / (std + eps).
    flat = np.all(r == r[:, :1], axis=-1, keepdims=True)
    return np.where(flat, 0, adv).reshape(-1).astype(r.dtype, copy=False)


def grpo_advantages(rewards: Any, group_size: int, eps: float = GRPO_EPS) -> np.ndarray:
    """GRPO (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2): A_i = (r_i - mean(r)) / (std(r) + eps).

    std is the sample standard deviation (Bessel's correction, ddof = 1), as in verl and TRL.
    """
    eps = check_positive("eps", eps)
    r = _groups(rewards, group_size)
    centred = r - r.mean(axis=-1, keepdims=True)
    return _flat_equal_to_zero(centred / (r.std(axis=-1, ddof=1, keepdims=True) + eps), r)


def drgrpo_advantages(rewards: Any, group_size: int) -> np.ndarray:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, Eq. 3): A_i = r_i - mean(r), no std division."""
    r = _groups(rewards, group_size)
    return _flat_equal_to_zero(r - r.mean(axis=-1, keepdims=True), r)


def rloo_advantages(rewards: Any, group_size: int) -> np.ndarray:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6): A_i = r_i - mean_{j != i} r_j.

    Equal to G / (G - 1) * (r_i - mean(r)).
    """
    r = _groups(rewards, group_size)
    g = r.shape[-1]
    loo_mean = (r.sum(axis=-1, keepdims=True) - r) / (g - 1)
    return _flat_equal_to_zero(r - loo_mean, r)


def group_advantages(rewards: Any, group_size: int, estimator: str = "grpo", *, eps: float = GRPO_EPS) -> np.ndarray:
    """Dispatch to `grpo_advantages`, `drgrpo_advantages` or `rloo_advantages` by name."""
    return run_estimator(estimator, rewards, group_size, eps, grpo=grpo_advantages, drgrpo=drgrpo_advantages,
                         rloo=rloo_advantages)
