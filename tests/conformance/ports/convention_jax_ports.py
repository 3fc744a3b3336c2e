"""A JAX port in tunix's conventions (float32 whatever it is given, (B, T) advantages), and a defective variant.

See ports.CONVENTION_PORTS / CONVENTION_DEFECTS for the declarations and the diagnosis each must get.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._variant import variant


@jax.custom_jvp
def _one(r):
    """exp(r - sg(r)) evaluated exactly: value 1, derivative 1, also at r = +-inf (spec S9.1)."""
    return jnp.ones_like(r)


@_one.defjvp
def _one_jvp(primals, tangents):
    return _one(primals[0]), tangents[0]


def _tunix(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high, c, *,
           restore=True):
    if advantages.ndim != 2:
        raise ValueError("advantages must be (B, T)")
    valid = response_mask.astype(bool)
    lp = jnp.where(valid, log_prob.astype(jnp.float32), 0.0)  # float32 whatever the input dtype
    olp = jnp.where(valid, jax.lax.stop_gradient(old_log_prob).astype(jnp.float32), 0.0)
    adv = jnp.where(valid, jax.lax.stop_gradient(advantages).astype(jnp.float32), 0.0)
    logr = lp - olp
    low = (adv < 0) & (logr < math.log1p(-eps_low))
    high = (adv > 0) & (logr > math.log1p(eps_high))
    dual = (adv < 0) & (logr > math.log(c)) if c is not None else jnp.zeros_like(valid)
    inside = ~(low | high | dual)
    delta = jnp.exp(jnp.where(inside & (adv != 0), logr, 0.0))
    clipped = jnp.where(low | high, logr, 0.0)
    one = _one(clipped) if restore else jnp.ones_like(clipped)
    factor = jnp.where(low, beta_low * (1 - eps_low) * one,
                       jnp.where(high, beta_high * (1 + eps_high) * one, jnp.where(dual, c or 0.0, delta)))
    loss = jnp.where(valid, -adv * factor, 0.0)
    return loss.sum() / jnp.maximum(valid.sum(), 1)


tunix_style = variant(
    _tunix, "tunix_style",
    "tunix conventions: float32 arithmetic for every input dtype, (B, T) advantages.",
)


tunix_ppo_clip = variant(
    _tunix, "tunix_ppo_clip",
    "DEFECT: the clipped terms are constants (PPO's clip): the restored gradient of clipped tokens is 0.",
    restore=False,
)
