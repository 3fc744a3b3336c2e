"""Per-token CE-GPPO: regions, objective and gradient weight (docs/spec.md clauses S2-S5).

Every function here is elementwise over (B, T) and does no masking or reduction; `policy_loss`
(in `_loss.py`) masks and aggregates.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np

from ._arrays import as_float, compute_dtype
from ._config import CEGPPOConfig, check_config
from ._validation import check_policy_shapes

__all__ = ["TokenRegions", "grad_weight", "per_token_objective", "token_regions"]


class TokenRegions(NamedTuple):
    """Boolean (B, T) masks of the four regions of spec clause S2; exactly one is True per token."""

    clip_low: Any
    """delta < 1 - eps_low and A < 0: clipped below, gradient scaled by beta_low (1 - eps_low)."""
    clip_high: Any
    """delta > 1 + eps_high and A > 0: clipped above, gradient scaled by beta_high (1 + eps_high)."""
    dual_clip: Any
    """dual_clip c given, A < 0 and delta > c: loss capped at -c A, no gradient."""
    inside: Any
    """Everything else (A = 0 included): the plain importance-weighted term delta A."""


def _inputs(
    log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    check_config(cfg)
    check_policy_shapes(log_prob, old_log_prob, advantages, None)
    dt = compute_dtype(("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages))
    lp = as_float("log_prob", log_prob, dt)
    olp = as_float("old_log_prob", old_log_prob, dt)
    adv = as_float("advantages", advantages, dt, floating_only=False)
    if adv.ndim == 1:  # per-sequence advantages broadcast over tokens (spec S1)
        adv = np.broadcast_to(adv[:, None], lp.shape)
    return lp, olp, adv


def _regions(logr: np.ndarray, adv: np.ndarray, cfg: CEGPPOConfig) -> TokenRegions:
    # Compared in log space (spec S9.1): logr < log(1 - eps_low) <=> delta < 1 - eps_low, with no
    # exp that could overflow. The bounds round to the compute dtype, as in every framework.
    dt = logr.dtype.type
    neg, pos = adv < 0, adv > 0
    clip_low = neg & (logr < dt(cfg.log_lower))
    clip_high = pos & (logr > dt(cfg.log_upper))
    if cfg.log_dual_clip is None:
        dual = np.zeros_like(clip_low)
    else:
        dual = neg & (logr > dt(cfg.log_dual_clip))
    inside = ~(clip_low | clip_high | dual)
    return TokenRegions(clip_low, clip_high, dual, inside)


def token_regions(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> TokenRegions:
    """Which region of spec clause S2 each token is in.

    Args:
        log_prob: (B, T) log pi_theta(a_t | s_t).
        old_log_prob: (B, T) log pi_old(a_t | s_t), recorded at rollout.
        advantages: (B, T) or (B,) advantages A.
        cfg: the hyperparameters.

    Returns:
        TokenRegions of four (B, T) bool arrays that partition the tokens. A NaN log-ratio falls
        in `inside` (so it shows up in the loss instead of being hidden by a clip).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    return _regions(lp - olp, adv, cfg)


def per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> np.ndarray:
    """The CE-GPPO objective J_t per token, to be maximised (arXiv 2509.20712 Eq. 8; spec S3).

        J_t = beta_low (1 - eps_low) [delta / sg(delta)] A     clip_low
            = beta_high (1 + eps_high) [delta / sg(delta)] A   clip_high
            = c A                                              dual_clip
            = delta A                                          inside

    with delta = exp(log_prob - old_log_prob). The factor delta / sg(delta) has value exactly 1, so
    in value J is a constant times A in the clipped regions; it only matters for the gradient
    (spec S4). No masking and no reduction.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities.
        advantages: (B, T) or (B,).
        cfg: the hyperparameters.

    Returns:
        (B, T) array in the compute dtype (spec S9.5).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    logr = lp - olp
    r = _regions(logr, adv, cfg)
    # Select the argument first, then exponentiate (spec S9.2): exp only sees log-ratios of
    # tokens whose value is delta * A, and A = 0 tokens get exp(0) so 0 * inf cannot occur.
    with np.errstate(over="ignore"):  # delta = inf is the true value where it overflows (spec S5)
        delta_inside = np.exp(np.where(r.inside & (adv != 0), logr, 0))
    c = 0.0 if cfg.dual_clip is None else cfg.dual_clip
    scale = np.select(
        [r.clip_low, r.clip_high, r.dual_clip],
        [cfg.weight_low, cfg.weight_high, c],
        default=delta_inside,
    ).astype(logr.dtype, copy=False)
    return cast(np.ndarray, scale * adv)


def grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: CEGPPOConfig) -> np.ndarray:
    """F_t, with dJ_t / d log_prob_t = F_t A_t (spec S4, derived from Eq. 8-10 of arXiv 2509.20712).

        F_t = beta_low (1 - eps_low)     clip_low
            = beta_high (1 + eps_high)   clip_high
            = 0                          dual_clip
            = delta                      inside

    Returns:
        (B, T) array in the compute dtype; `inf` where delta overflows inside the interval's
        A < 0 side without dual clip (the true value, unbounded: spec S5).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    logr = lp - olp
    r = _regions(logr, adv, cfg)
    with np.errstate(over="ignore"):
        delta_inside = np.exp(np.where(r.inside, logr, 0))
    return np.select(
        [r.clip_low, r.clip_high, r.dual_clip],
        [cfg.weight_low, cfg.weight_high, 0.0],
        default=delta_inside,
    ).astype(logr.dtype, copy=False)
