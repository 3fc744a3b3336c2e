"""A NumPy port of CISPO with its keywords (spec S14.2), for the command line's --objective (values only)."""

from __future__ import annotations

import numpy as np


def cispo(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """CISPO, token-mean: -clip(delta, 1 - eps_low, 1 + eps_high) A log_prob over the valid tokens."""
    dt = np.float64 if log_prob.dtype == np.float64 else np.float32
    m = response_mask.astype(bool)
    lp = np.where(m, log_prob.astype(dt), 0)
    olp = np.where(m, old_log_prob.astype(dt), 0)
    adv = advantages.astype(dt)
    adv = np.where(m, adv[:, None] if adv.ndim == 1 else adv, 0)
    w = np.clip(np.exp(lp - olp), max(1 - eps_low, 0), 1 + eps_high).astype(dt)
    j = np.where(adv != 0, w * adv * np.where(adv != 0, lp, 0), 0)
    return -j.sum(dtype=dt) / dt(max(int(m.sum()), 1))
