"""Shared set-up of the verl, OpenRLHF and SkyRL loss tests (OpenRLHF and SkyRL each have their own nox session).

`batch` draws log-probs whose ratios fall in every region, and `ppo_offset` is the value difference
between a framework's PPO loss and ours with beta = 0 (spec S6.1), as the verl tests use them.
"""

from __future__ import annotations

import cegppo
import numpy as np
from integration_helpers import need_framework  # noqa: F401  (re-exported for the framework tests)


def batch(torch, seed: int, b: int = 6, t: int = 9, *, spread: float = 1.2, dtype=None):
    """(log_prob, old_log_prob, advantages, mask), ratios in every region: |logr| <= spread < 20, so the
    frameworks' clamp is inert; row 1 is empty (excluded from the seq-mean counts by all)."""
    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=dtype) * 3 - 0.05
    logr = (torch.rand(b, t, generator=g, dtype=dtype) * 2 - 1) * spread
    lp = (old + logr).requires_grad_(True)
    adv = torch.randn(b, t, generator=g, dtype=dtype)
    adv[0, :3] = 0.0  # A = 0 is inside (spec S2)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[1] = False  # an empty row
    mask[2, :] = True
    return lp, old, adv, mask


def grad_of(torch, loss, lp):
    (g,) = torch.autograd.grad(loss, lp)
    return g


def ppo_offset(lp, old, adv, mask, cfg: cegppo.CEGPPOConfig, agg: str, **norm) -> float:
    """A framework's PPO loss minus ours (beta = 0) in value: PPO's clipped-region constants (spec S6.1).

    PPO keeps J = (1 - eps_low) A on clip_low tokens and (1 + eps_high) A on clip_high tokens; with
    beta = 0 CE-GPPO keeps 0 there. Loss = -sum c_t J_t, so PPO - ours = -sum c_t (that J_t).
    """
    a = adv.detach().numpy()
    m = mask.numpy().astype(bool)
    r = cegppo.token_regions(lp.detach().numpy(), old.numpy(), a, cfg)
    c = cegppo.aggregation_weights(m, agg, **norm)
    kept = np.where(r.clip_low, (1 - cfg.eps_low) * a, 0.0) + np.where(r.clip_high, (1 + cfg.eps_high) * a, 0.0)
    return float(-np.sum(c * kept))
