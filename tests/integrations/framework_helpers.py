"""Shared set-up of the OpenRLHF and SkyRL tests: each framework has its own extra and nox session.

`need_framework(module, extra)` imports a framework's top-level package or skips with how to install
it. The session of that framework (``nox -s openrlhf``, ``nox -s skyrl``) sets
``CEGPPO_REQUIRE=<extra>`` with CEGPPO_STRICT=1: there a missing package is an error, as in
`integration_helpers.need`. Every other session (``integrations`` also collects this folder) skips
these tests with the reason, because their frameworks are installed only by their own sessions.
`batch` draws log-probs whose ratios fall in every region, and `ppo_offset` is the value difference
between a framework's PPO loss and ours with beta = 0 (spec S6.1), as the verl tests use them.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import cegppo
import numpy as np
import pytest


def need_framework(module: str, extra: str) -> ModuleType:
    """Import `module`, or skip the calling test module with how to install it (an error in `extra`'s session)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        required = {x.strip() for x in os.environ.get("CEGPPO_REQUIRE", "").split(",")}
        if os.environ.get("CEGPPO_STRICT") and extra in required:
            raise
        hint = f"nox -s {extra} (it installs the pinned loss layer; see docs/integrations.md)"
        pytest.skip(f"{module} is not installed ({exc}); install it with: {hint}", allow_module_level=True)
        raise  # unreachable: pytest.skip raises


def batch(torch, seed: int, b: int = 6, t: int = 9, *, spread: float = 1.2, dtype=None):
    """(log_prob, old_log_prob, advantages, mask): |logr| <= spread < 20, so the frameworks' clamp is inert."""
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
