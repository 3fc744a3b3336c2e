"""NumPy ports with the standard signature (values only: the kit skips gradient properties).

Used by the CLI tests, which must run in every venv (the numpy one has neither torch nor jax).
"""

from __future__ import annotations

import threading

import numpy as np

RELEASE_HANG = threading.Event()
"""Set by a test to let `hangs` return (the kit leaves a hung call running in a daemon thread)."""


def correct(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
            clip_ratio_c):
    """CE-GPPO token-mean in NumPy, written independently of cegppo: select, then exponentiate."""
    dt = np.float64 if np.asarray(log_prob).dtype == np.float64 else np.float32
    m = np.asarray(response_mask).astype(bool)
    lp = np.where(m, log_prob, 0).astype(dt)
    olp = np.where(m, old_log_prob, 0).astype(dt)
    adv = np.asarray(advantages, dtype=dt)
    if adv.ndim == 1:
        adv = np.broadcast_to(adv[:, None], lp.shape)
    adv = np.where(m, adv, 0).astype(dt)
    logr = lp - olp
    clip_low = (adv < 0) & (logr < np.log1p(-eps_low))
    clip_high = (adv > 0) & (logr > np.log1p(eps_high))
    dual = (adv < 0) & (logr > np.log(clip_ratio_c)) if clip_ratio_c is not None else np.zeros_like(m)
    inside = ~(clip_low | clip_high | dual)
    delta = np.exp(np.where(inside & (adv != 0), logr, 0))
    scale = np.select([clip_low, clip_high, dual],
                      [beta_low * (1 - eps_low), beta_high * (1 + eps_high), clip_ratio_c or 0.0], default=delta)
    j = scale.astype(dt) * adv
    return -np.sum(np.where(m, j, 0)) / dt(max(int(m.sum()), 1))


def mean_over_padding(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: divides by B * T (padding counted) instead of the number of valid tokens."""
    m = np.asarray(response_mask).astype(bool)
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw) * max(int(m.sum()), 1) / m.size


def raises(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: raises on every input (the kit reports the exception as a failure)."""
    raise RuntimeError("this port is not implemented")


def mutates_mask_after_loss(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: computes the loss right, then reuses the caller's mask as a scratch buffer (writes into it)."""
    loss = correct(log_prob, old_log_prob, advantages, response_mask, **kw)
    np.logical_and(response_mask, False, out=response_mask)
    return loss


def token_advantages_only(log_prob, old_log_prob, advantages, response_mask, **kw):
    """Correct, but takes per-token (B, T) advantages only, as verl's losses do: declare advantages="token"."""
    if np.shape(advantages) != np.shape(log_prob):
        raise ValueError(f"advantages must have the shape of log_prob {np.shape(log_prob)}, got {np.shape(advantages)}")
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)


def hangs(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: never returns (a deadlock); waits for `RELEASE_HANG` so that a test can end it afterwards."""
    RELEASE_HANG.wait(600)
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)
