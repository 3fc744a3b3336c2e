"""Per-token CE-GPPO in JAX: regions, objective and gradient weight (docs/spec.md clauses S2-S5).

Elementwise over (B, T), no masking and no reduction (`policy_loss` masks and aggregates). The
objective is written so that `jax.grad` of it is the analytic gradient of spec S4, with no inf * 0
anywhere in the backward pass (spec S9.1, S9.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cegppo import _backend_core as core
from cegppo._config import CEGPPOConfig
from cegppo._objective import TokenRegions

import jax
import jax.numpy as jnp

from ._ops import OPS

__all__ = ["TokenRegions", "grad_weight", "per_token_objective", "token_regions"]


def _inputs(
    log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Checked (metadata only) and cast to the compute dtype; (B,) advantages broadcast to (B, T)."""
    lp, olp, adv, _ = core.policy_inputs(OPS, log_prob, old_log_prob, advantages, cfg)
    return lp, olp, adv


def _regions(logr: jax.Array, adv: jax.Array, cfg: CEGPPOConfig) -> TokenRegions:
    # Compared in log space (spec S9.1), with the bounds rounded to the compute dtype like the
    # reference: logr < log(1 - eps_low) <=> delta < 1 - eps_low, and no exp that could overflow.
    dt = logr.dtype
    neg, pos = adv < 0, adv > 0
    clip_low = neg & (logr < np.asarray(cfg.log_lower, dt))
    clip_high = pos & (logr > np.asarray(cfg.log_upper, dt))
    if cfg.log_dual_clip is None:
        dual = jnp.zeros_like(clip_low)
    else:
        dual = neg & (logr > np.asarray(cfg.log_dual_clip, dt))
    inside = ~(clip_low | clip_high | dual)
    return TokenRegions(clip_low, clip_high, dual, inside)


@jax.custom_jvp
def _ratio_over_sg_ratio(logr: jax.Array) -> jax.Array:
    """delta / sg(delta) = exp(logr - sg(logr)), evaluated exactly: value 1, d/dlogr = itself (= 1).

    This is the paper's gradient-preserving factor (arXiv 2509.20712 Eq. 8). Written as a custom
    JVP instead of `exp(logr - stop_gradient(logr))` so that it stays 1 (with derivative 1) even at
    logr = +-inf, where the subtraction would give NaN; for finite logr both forms are identical,
    to every derivative order.
    """
    return jnp.ones_like(logr)


@_ratio_over_sg_ratio.defjvp
def _ratio_over_sg_ratio_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (logr,), (dlogr,) = primals, tangents
    one = _ratio_over_sg_ratio(logr)
    return one, one * dlogr


def _objective(logr: jax.Array, adv: jax.Array, r: TokenRegions, cfg: CEGPPOConfig) -> jax.Array:
    dt = logr.dtype
    # Select the argument first, then exponentiate (spec S9.2): exp only ever sees the log-ratio
    # of tokens whose value is delta * A; A = 0 tokens and the other regions get exp(0) = 1, so
    # neither the forward (inf * 0) nor the backward (0 * inf) can produce a NaN that is not the
    # true value. An overflowing delta inside (A < 0, no dual clip) gives J = -inf: the true value.
    delta_inside = jnp.exp(jnp.where(r.inside & (adv != 0), logr, jnp.zeros((), dt)))
    clipped = r.clip_low | r.clip_high
    unit = _ratio_over_sg_ratio(jnp.where(clipped, logr, jnp.zeros((), dt)))
    w_clip = jnp.where(r.clip_low, np.asarray(cfg.weight_low, dt), np.asarray(cfg.weight_high, dt))
    c = np.asarray(0.0 if cfg.dual_clip is None else cfg.dual_clip, dt)
    scale = jnp.where(clipped, w_clip * unit, jnp.where(r.dual_clip, c, delta_inside))
    return scale * adv


def _grad_weight(logr: jax.Array, r: TokenRegions, cfg: CEGPPOConfig) -> jax.Array:
    dt = logr.dtype
    delta_inside = jnp.exp(jnp.where(r.inside, logr, jnp.zeros((), dt)))
    return jnp.where(
        r.clip_low,
        np.asarray(cfg.weight_low, dt),
        jnp.where(r.clip_high, np.asarray(cfg.weight_high, dt), jnp.where(r.dual_clip, jnp.zeros((), dt), delta_inside)),
    )


def token_regions(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> TokenRegions:
    """Which region of spec clause S2 each token is in (arXiv 2509.20712 Eq. 8).

        clip_low   delta < 1 - eps_low  and A < 0
        clip_high  delta > 1 + eps_high and A > 0
        dual_clip  c given, delta > c   and A < 0
        inside     everything else (A = 0 included)

    compared in log space: logr = log_prob - old_log_prob against log(1 - eps_low), log(1 + eps_high), log c.

    Args:
        log_prob: (B, T) log pi_theta(a_t | s_t).
        old_log_prob: (B, T) log pi_old(a_t | s_t), recorded at rollout.
        advantages: (B, T) or (B,) advantages A.
        cfg: the hyperparameters (static: a hashable CEGPPOConfig).

    Returns:
        `cegppo.TokenRegions` (a NamedTuple, hence a pytree) of four (B, T) bool arrays that
        partition the tokens. A NaN log-ratio falls in `inside`.
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    return _regions(lp - olp, adv, cfg)


def per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> jax.Array:
    """The CE-GPPO objective J_t per token, to be maximised (arXiv 2509.20712 Eq. 8; spec S3).

        J_t = beta_low (1 - eps_low) [delta / sg(delta)] A     clip_low
            = beta_high (1 + eps_high) [delta / sg(delta)] A   clip_high
            = c A                                              dual_clip
            = delta A                                          inside

    with delta = exp(log_prob - old_log_prob). `jax.grad` of J with respect to log_prob is F_t A_t
    with F from `grad_weight` (spec S4); old_log_prob and advantages are constants (wrapped in
    `lax.stop_gradient`: their gradient is 0 even when traced). No masking and no reduction.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities.
        advantages: (B, T) or (B,).
        cfg: the hyperparameters.

    Returns:
        (B, T) array in the compute dtype (bf16/fp16 -> float32; float64 stays float64: spec S9.5).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    logr = lp - olp
    return _objective(logr, adv, _regions(logr, adv, cfg), cfg)


def grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> jax.Array:
    """F_t, with dJ_t / d log_prob_t = F_t A_t (spec S4, from Eq. 8-10 of arXiv 2509.20712).

        F_t = beta_low (1 - eps_low)     clip_low
            = beta_high (1 + eps_high)   clip_high
            = 0                          dual_clip
            = delta                      inside

    Returns:
        (B, T) array in the compute dtype; `inf` where delta overflows inside the interval's
        A < 0 side without dual clip (the true, unbounded value: spec S5).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    logr = lp - olp
    return _grad_weight(logr, _regions(logr, adv, cfg), cfg)
