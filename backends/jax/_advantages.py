"""Group-relative advantages in JAX over G samples per prompt (docs/spec.md clause S12).

`rewards` is (P * G,), the G samples of each prompt contiguous: [p0s0, ..., p0s(G-1), p1s0, ...].
The result has the same shape: one advantage per sequence, which `policy_loss` broadcasts over
that sequence's tokens. Pure array code: works under `jit` and `vmap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cegppo._advantages import GRPO_EPS
from cegppo._estimators import run_estimator
from cegppo._validation import check_group_shape, check_positive

import jax
import jax.numpy as jnp

from ._common import check_array, default_float

__all__ = ["GRPO_EPS", "drgrpo_advantages", "group_advantages", "grpo_advantages", "rloo_advantages"]


def _groups(rewards: Any, group_size: int) -> jax.Array:
    check_array("rewards", rewards)
    dt = np.dtype(rewards.dtype)
    is_float = jnp.issubdtype(dt, jnp.floating)
    if not (is_float or jnp.issubdtype(dt, jnp.integer) or dt == np.bool_):
        raise TypeError(f"rewards must be a real numeric array, got dtype {dt}")
    check_group_shape(tuple(rewards.shape), group_size)
    # Floating rewards: at least float32 (bf16 -> float32). Integer/bool rewards: the default
    # float (float64 with jax_enable_x64, as in the reference; else float32).
    out = jnp.result_type(dt, jnp.float32) if is_float else default_float()
    return jnp.asarray(rewards).astype(out).reshape(-1, group_size)


def _flat_equal_to_zero(adv: jax.Array, r: jax.Array) -> jax.Array:
    # A group whose rewards are all equal carries no signal: its advantage is exactly 0
    # (spec S12.4), not the rounding noise of (r - mean(r)) / (std + eps).
    flat = jnp.all(r == r[:, :1], axis=-1, keepdims=True)
    return jnp.where(flat, jnp.zeros((), r.dtype), adv).reshape(-1).astype(r.dtype)


def grpo_advantages(rewards: Any, group_size: int, eps: float = GRPO_EPS) -> jax.Array:
    """GRPO (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2): A_i = (r_i - mean(r)) / (std(r) + eps).

    std is the sample standard deviation (ddof = 1), as in verl and TRL. Shape (P * G,).
    """
    eps = check_positive("eps", eps)
    r = _groups(rewards, group_size)
    centred = r - jnp.mean(r, axis=-1, keepdims=True)
    return _flat_equal_to_zero(centred / (jnp.std(r, axis=-1, ddof=1, keepdims=True) + eps), r)


def drgrpo_advantages(rewards: Any, group_size: int) -> jax.Array:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, Eq. 3): A_i = r_i - mean(r), no std division."""
    r = _groups(rewards, group_size)
    return _flat_equal_to_zero(r - jnp.mean(r, axis=-1, keepdims=True), r)


def rloo_advantages(rewards: Any, group_size: int) -> jax.Array:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6): A_i = r_i - mean_{j != i} r_j.

    Equal to G / (G - 1) * (r_i - mean(r)).
    """
    r = _groups(rewards, group_size)
    g = r.shape[-1]
    loo_mean = (jnp.sum(r, axis=-1, keepdims=True) - r) / (g - 1)
    return _flat_equal_to_zero(r - loo_mean, r)


def group_advantages(rewards: Any, group_size: int, estimator: str = "grpo", *, eps: float = GRPO_EPS) -> jax.Array:
    """Dispatch to `grpo_advantages`, `drgrpo_advantages` or `rloo_advantages` by name (spec S12)."""
    return run_estimator(estimator, rewards, group_size, eps, grpo=grpo_advantages, drgrpo=drgrpo_advantages,
                         rloo=rloo_advantages)

