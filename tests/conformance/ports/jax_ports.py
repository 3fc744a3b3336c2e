"""JAX ports with the standard signature: `correct` and a few broken ones (see `ports.JAX_BROKEN`).

port(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
clip_ratio_c) -> token-mean loss (0-d jax.Array); the kit differentiates it with jax.value_and_grad.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._variant import variant


@jax.custom_jvp
def _one(x):
    """exp(x - sg(x)) evaluated exactly: 1 with derivative 1, also at x = +-inf (x - sg(x) is NaN there)."""
    return jnp.ones_like(x)


@_one.defjvp
def _one_jvp(primals, tangents):
    return _one(primals[0]), tangents[0]


def _prep(log_prob, old_log_prob, advantages, response_mask, sg_inputs=True):
    dt = jnp.float64 if log_prob.dtype == jnp.float64 else jnp.float32  # bf16/fp16 computed in fp32
    if sg_inputs:  # old_log_prob and advantages are constants of the loss (spec S4)
        old_log_prob, advantages = jax.lax.stop_gradient(old_log_prob), jax.lax.stop_gradient(advantages)
    m = response_mask.astype(bool)
    lp = jnp.where(m, log_prob.astype(dt), 0)
    olp = jnp.where(m, old_log_prob.astype(dt), 0)
    adv = advantages.astype(dt)
    if adv.ndim == 1:
        adv = jnp.broadcast_to(adv[:, None], lp.shape)
    return lp, olp, jnp.where(m, adv, 0), m


def _regions(logr, adv, eps_low, eps_high, c, any_sign_dual=False):
    clip_low = (adv < 0) & (logr < math.log1p(-eps_low))
    clip_high = (adv > 0) & (logr > math.log1p(eps_high))
    if c is None:
        dual = jnp.zeros_like(clip_low)
    else:
        dual = ((adv != 0) if any_sign_dual else (adv < 0)) & (logr > math.log(c))
        clip_high = clip_high & ~dual
    return clip_low, clip_high, dual


def _loss(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high, c, *,
          sg=True, exp_first=False, any_sign_dual=False, padding_mean=False, sg_inputs=True):
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask, sg_inputs)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, eps_low, eps_high, c, any_sign_dual)
    inside = ~(clip_low | clip_high | dual)
    clipped = clip_low | clip_high
    one = _one(jnp.where(clipped, logr, 0.0)) if sg else jnp.ones_like(logr)
    if exp_first:  # exponentiate every token, select afterwards
        delta = jnp.exp(logr)
        factor = jnp.where(inside, delta, jnp.where(clipped, one, 1.0))
    else:
        factor = jnp.where(clipped, one, jnp.exp(jnp.where(inside & (adv != 0), logr, 0.0)))
    scale = jnp.where(clip_low, beta_low * (1 - eps_low),
                      jnp.where(clip_high, beta_high * (1 + eps_high), jnp.where(dual, c or 0.0, 1.0)))
    j = jnp.where(m, scale.astype(logr.dtype) * factor * adv, 0)
    n = m.size if padding_mean else jnp.maximum(m.sum(), 1)
    return -j.sum() / n


correct = variant(
    _loss, "correct",
    "CE-GPPO token-mean in JAX, written independently of cegppo.jax.",
)


missing_stop_gradient = variant(
    _loss, "missing_stop_gradient",
    "BUG: the clipped factor is a constant 1 (no delta / sg(delta)): clipped tokens get no gradient (PPO).",
    sg=False,
)


unsafe_exp_where = variant(
    _loss, "unsafe_exp_where",
    "BUG: exp(logr) of every token before the where: inf * 0 = NaN in the backward pass.",
    exp_first=True,
)


mean_over_padding = variant(
    _loss, "mean_over_padding",
    "BUG: divides by B * T (padding counted) instead of the number of valid tokens.",
    padding_mean=True,
)


dual_clip_any_sign = variant(
    _loss, "dual_clip_any_sign",
    "BUG: dual clip applied whatever the sign of A (A > 0 tokens above c lose their gradient).",
    any_sign_dual=True,
)


constants_not_stopped = variant(
    _loss, "constants_not_stopped",
    "BUG: no lax.stop_gradient on old_log_prob and advantages: a caller tracing them gets gradients in them.",
    sg_inputs=False,
)


def block_tail_dropped(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                       beta_high, clip_ratio_c):
    """BUG: a kernel grid of T // 64 blocks when T > 64: tokens past the last full block are lost."""
    t = log_prob.shape[-1]
    if t > 64:
        response_mask = response_mask.astype(bool) & (jnp.arange(t) < (t // 64) * 64)[None, :]
    return _loss(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                 clip_ratio_c)


def token_advantages_only(log_prob, old_log_prob, advantages, response_mask, **kw):
    """Correct, but takes per-token (B, T) advantages only, as verl's losses do: declare advantages="token"."""
    if advantages.shape != log_prob.shape:
        raise ValueError(f"advantages must have the shape of log_prob {log_prob.shape}, got {advantages.shape}")
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)
