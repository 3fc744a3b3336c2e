"""CISPO: clipped importance-sampling-weight policy optimization (docs/spec.md clause S14.2).

MiniMax-M1 (arXiv 2506.13585, Sec. 3.1) keeps every token's gradient and clips the importance
weight that multiplies it instead of the update:

    J_t = sg(w_t) A_t log pi_theta(a_t | s_t),   w_t = clip(delta_t, lower, upper)

so F_t = w_t (dJ_t / d log_prob_t = F_t A_t). Two parametrisations of the clip interval are in use:
the paper's two-sided ``[1 - eps_low, 1 + eps_high]`` (`CISPOConfig`, as verl's ``cispo``) and
TRL's absolute cap ``w = min(delta, cap)`` (`CISPOCapConfig`, TRL ``loss_type="cispo"``). Both
are the same function of the interval ``[lower, upper]``, which is all this module reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ._config import ConfigMethods, check_positive_real, store_floats
from ._family_inputs import family_inputs
from ._objective import TokenRegions

__all__ = [
    "CISPOCapConfig",
    "CISPOConfig",
    "cispo_grad_weight",
    "cispo_per_token_objective",
    "cispo_token_regions",
]


@dataclass(frozen=True)
class CISPOConfig(ConfigMethods):
    """Two-sided CISPO (arXiv 2506.13585, Sec. 3.1): the weight is clip(delta, 1 - eps_low, 1 + eps_high).

    The paper sets ``eps_low`` "to a large value" so that the weight has no lower bound and tunes
    ``eps_high`` only: any ``eps_low >= 1`` does that here (the lower bound 1 - eps_low <= 0 is
    never reached by a ratio). The defaults are verl 0.9.1's (its ``cispo`` loss reads the actor's
    ``clip_ratio_low`` / ``clip_ratio_high``, 0.2 each). Paper aggregation: token-mean (spec S14.2).
    """

    eps_low: float = 0.2
    """Lower clip width: the weight is at least 1 - eps_low. Must be > 0; >= 1 means no lower bound."""
    eps_high: float = 0.2
    """Upper clip width: the weight is at most 1 + eps_high. Must be > 0."""

    def __post_init__(self) -> None:
        store_floats(self, **{name: check_positive_real(name, getattr(self, name)) for name in ("eps_low", "eps_high")})

    @property
    def lower(self) -> float:
        """Lower end of the weight interval, max(1 - eps_low, 0)."""
        return max(1.0 - self.eps_low, 0.0)

    @property
    def upper(self) -> float:
        """Upper end of the weight interval, 1 + eps_high."""
        return 1.0 + self.eps_high


@dataclass(frozen=True)
class CISPOCapConfig(ConfigMethods):
    """CISPO with an absolute cap, as TRL's ``loss_type="cispo"``: the weight is min(delta, cap).

    The cap is the ScaleRL recipe's epsilon_max (arXiv 2510.13786), passed to TRL as
    ``epsilon_high``; TRL recommends 5.0, the default here. There is no lower bound. Equal to
    ``CISPOConfig(eps_low=1, eps_high=cap - 1)`` when cap > 1; a cap <= 1 is allowed (it scales
    every on-policy token's weight down to the cap) because TRL accepts it. Paper aggregation:
    token-mean (spec S14.2).
    """

    cap: float = 5.0
    """Absolute upper bound of the weight. Must be > 0."""

    def __post_init__(self) -> None:
        store_floats(self, cap=check_positive_real("cap", self.cap))

    @property
    def lower(self) -> float:
        """Lower end of the weight interval: 0 (none)."""
        return 0.0

    @property
    def upper(self) -> float:
        """Upper end of the weight interval: the cap."""
        return self.cap


def _check_cispo_config(cfg: Any) -> CISPOConfig | CISPOCapConfig:
    if not isinstance(cfg, (CISPOConfig, CISPOCapConfig)):
        raise TypeError(f"cfg must be a cegppo.CISPOConfig or cegppo.CISPOCapConfig, got {type(cfg).__name__}")
    return cfg


def clipped_weight(logr: np.ndarray, cfg: CISPOConfig | CISPOCapConfig) -> np.ndarray:
    """w = clip(exp(logr), lower, upper) in the dtype of `logr`.

    The weight is continuous at both ends of the interval, so the side a ratio within rounding of
    an end falls on changes w by at most that rounding; clipping in ratio space keeps the ends
    exact (w = 1 + eps_high, not exp(log1p(eps_high))). An overflowing ratio is inf before the clip
    and `upper` after it; a NaN log-ratio stays NaN.
    """
    dt = logr.dtype.type
    with np.errstate(over="ignore"):
        ratio = np.exp(logr)
    return cast(np.ndarray, np.clip(ratio, dt(cfg.lower), dt(cfg.upper)))


def cispo_per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> np.ndarray:
    """The CISPO objective J_t per token, to be maximised (arXiv 2506.13585, Sec. 3.1; spec S14.2).

        J_t = sg(w_t) A_t log_prob_t,   w_t = clip(delta_t, lower, upper)

    with delta = exp(log_prob - old_log_prob) and [lower, upper] = [max(1 - eps_low, 0), 1 + eps_high]
    (`CISPOConfig`) or [0, cap] (`CISPOCapConfig`). This is the paper's value, and verl's and TRL's:
    it is the log-likelihood, not a ratio, that carries the gradient (spec S14.2 names the ratio
    surrogate sg(w) A delta / sg(delta), equal in gradient, as a convention). A_t = 0 gives exactly 0,
    also where log_prob_t = -inf. No masking and no reduction.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities.
        advantages: (B, T) or (B,).
        cfg: a `CISPOConfig` or `CISPOCapConfig`.

    Returns:
        (B, T) array in the compute dtype (spec S9.5).
    """
    cfg = _check_cispo_config(cfg)
    lp, olp, adv, _ = family_inputs(log_prob, old_log_prob, advantages)
    w = clipped_weight(lp - olp, cfg)
    nonzero = adv != 0
    return np.where(nonzero, w * adv * np.where(nonzero, lp, 0), 0).astype(lp.dtype, copy=False)


def cispo_grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> np.ndarray:
    """F_t = w_t = clip(delta_t, lower, upper), with dJ_t / d log_prob_t = F_t A_t (spec S14.2).

    Every token keeps a gradient, bounded by lower <= F_t <= upper; unlike CE-GPPO (spec S4) the
    bound does not depend on the sign of A_t. `advantages` only fixes the shape (spec S1).

    Returns:
        (B, T) array in the compute dtype.
    """
    cfg = _check_cispo_config(cfg)
    lp, olp, _, _ = family_inputs(log_prob, old_log_prob, advantages)
    return clipped_weight(lp - olp, cfg).astype(lp.dtype, copy=False)


def cispo_token_regions(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> TokenRegions:
    """Where CISPO's weight is clipped, as the regions of spec S2 (spec S10, S14.2), whatever the sign of A.

        clip_low  = delta_t < lower,   clip_high = delta_t > upper,   dual_clip = none,
        inside    = everything else

    Decided on the ratio, exactly where `clipped_weight` clips (so F_t = lower or upper there).
    `CISPOCapConfig` has lower = 0, which no ratio is below: it has no clip_low tokens. A NaN
    log-ratio falls in `inside`.
    """
    cfg = _check_cispo_config(cfg)
    lp, olp, _, _ = family_inputs(log_prob, old_log_prob, advantages)
    dt = lp.dtype.type
    with np.errstate(over="ignore"):
        ratio = np.exp(lp - olp)
    low, high = ratio < dt(cfg.lower), ratio > dt(cfg.upper)
    return TokenRegions(low, high, np.zeros_like(low), ~(low | high))
