"""Overflow of delta is the true value, not a warning (docs/spec.md S5, S9.2).

An inside token with A < 0 and no dual clip has F_t = delta, unbounded: exp overflows to inf,
which is what S5 specifies. The reference must return it without a RuntimeWarning (a training
loop that turns warnings into errors would stop). Added when mutation testing (`nox -s mutation`,
docs/design.md) showed that dropping `np.errstate(over="ignore")` in `grad_weight` went unnoticed.
"""

from __future__ import annotations

import warnings

import cegppo
import numpy as np

CFG = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.2, beta_low=0.5, beta_high=1.0, dual_clip=None)


def test_S5_overflowing_delta_is_inf_without_a_warning() -> None:
    lp = np.array([[800.0, 0.1]])  # exp(800) overflows float64; both tokens inside (A < 0)
    adv = np.array([[-1.0, -1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = cegppo.grad_weight(lp, np.zeros_like(lp), adv, CFG)
        j = cegppo.per_token_objective(lp, np.zeros_like(lp), adv, CFG)
    assert np.isposinf(f[0, 0]) and f[0, 1] == np.exp(0.1)
    assert np.isneginf(j[0, 0]) and j[0, 1] == -np.exp(0.1)
