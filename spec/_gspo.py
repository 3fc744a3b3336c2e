"""GSPO: group sequence policy optimization, in its token form (docs/spec.md clause S14.4).

GSPO (Zheng et al. 2025, arXiv 2507.18071) clips one importance ratio per sequence, the
geometric mean of the token ratios over the row's valid tokens,

    s_i = exp( (1 / n_i) sum_{t valid} log delta_{i,t} ),

with PPO's min rule (its Eq. 5, clip ranges 3e-4 / 4e-4). The token form (the paper's GSPO-token,
Sec. 4.3; verl's ``gspo``) gives each token the ratio s_{i,t} = sg(s_i) pi_t / sg(pi_t): value
s_i, derivative s_i with respect to its own log-prob only, so that per-token advantages are
possible and, with one advantage per sequence and seq-mean-token-mean, value and gradient equal the
sequence objective's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ._config import ClipInterval, check_clip_widths, store_floats
from ._family_inputs import family_inputs
from ._objective import TokenRegions

__all__ = [
    "GSPOConfig",
    "gspo_grad_weight",
    "gspo_per_token_objective",
    "gspo_sequence_log_ratio",
    "gspo_token_regions",
]


@dataclass(frozen=True)
class GSPOConfig(ClipInterval):
    """Sequence-level clip widths of GSPO (arXiv 2507.18071, Eq. 5).

    The clip interval on the sequence ratio s is [1 - eps_low, 1 + eps_high]. s is a geometric mean
    per token, so it moves far less than a token ratio: the paper's ranges are 3e-4 and 4e-4, the
    defaults. Paper aggregation: seq-mean-token-mean (spec S14.4).
    """

    eps_low: float = 3e-4
    """Lower clip width on s: the interval starts at 1 - eps_low. Must lie in (0, 1)."""
    eps_high: float = 4e-4
    """Upper clip width on s: the interval ends at 1 + eps_high. Must be > 0."""

    def __post_init__(self) -> None:
        eps_low, eps_high = check_clip_widths(self.eps_low, self.eps_high)
        store_floats(self, eps_low=eps_low, eps_high=eps_high)


def _check_gspo_config(cfg: Any) -> GSPOConfig:
    if not isinstance(cfg, GSPOConfig):
        raise TypeError(f"cfg must be a cegppo.GSPOConfig, got {type(cfg).__name__}")
    return cfg


def _row_log_ratio(logr: np.ndarray, m: np.ndarray) -> np.ndarray:
    """log s_i broadcast to (B, T): the mean of the row's valid log-ratios (0 for a row with none).

    `logr` must already be 0 at masked positions (`family_inputs` selects them away), so padding
    garbage never enters the mean (spec S9.3).
    """
    n = m.sum(axis=-1, keepdims=True)
    mean = logr.sum(axis=-1, keepdims=True) / np.where(n > 0, n, 1).astype(logr.dtype)
    return np.broadcast_to(mean, logr.shape)


def gspo_sequence_log_ratio(log_prob: Any, old_log_prob: Any, mask: Any) -> np.ndarray:
    """log s_i = (1 / n_i) sum_{t: m_t} (log_prob_t - old_log_prob_t), shape (B,) (arXiv 2507.18071; spec S14.4).

    n_i is the row's number of valid tokens; a row with none gets log s = 0 (s = 1: it carries no
    token, so no loss and no gradient). Masked positions may hold anything.
    """
    lp, olp, _, m = family_inputs(log_prob, old_log_prob, np.zeros(np.shape(log_prob)[:1]), mask)
    assert m is not None
    return _row_log_ratio(lp - olp, m)[:, 0].copy()


def _clipped(log_s: np.ndarray, adv: np.ndarray, cfg: GSPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """(clip_low, clip_high) masks: PPO's clipped cases on the sequence ratio, compared in log space (spec S9.1)."""
    dt = log_s.dtype.type
    return (adv < 0) & (log_s < dt(cfg.log_lower)), (adv > 0) & (log_s > dt(cfg.log_upper))


def _prepared(
    log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(log s broadcast to (B, T), A, clip_low, clip_high)."""
    cfg = _check_gspo_config(cfg)
    lp, olp, adv, m = family_inputs(log_prob, old_log_prob, advantages, mask)
    assert m is not None
    log_s = _row_log_ratio(lp - olp, m)
    low, high = _clipped(log_s, adv, cfg)
    return log_s, adv, low, high


def gspo_per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> np.ndarray:
    """The GSPO-token objective J_t, to be maximised (arXiv 2507.18071, Eq. 5 and Sec. 4.3; spec S14.4).

        J_t = min( s_t A_t, clip(s_t, 1 - eps_low, 1 + eps_high) A_t ),   s_t = sg(s_i) pi_t / sg(pi_t)

    In value s_t = s_i, the row's sequence ratio (`gspo_sequence_log_ratio`), so J_t is
    (1 - eps_low) A_t for A_t < 0 below the interval, (1 + eps_high) A_t for A_t > 0 above it, and
    s_i A_t otherwise. The mask is needed for s_i; masked positions get 0. No clamp of log s
    (verl's clamp at 10 is a convention, spec S14.5), and no reduction.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities.
        advantages: (B, T) or (B,).
        mask: (B, T) bool (or integer 0/1): the valid tokens that s_i averages over.
        cfg: a `GSPOConfig`.

    Returns:
        (B, T) array in the compute dtype (spec S9.5).
    """
    log_s, adv, low, high = _prepared(log_prob, old_log_prob, advantages, mask, cfg)
    dt = log_s.dtype.type
    unclipped = ~(low | high) & (adv != 0)
    # Select, then exponentiate (spec S9.2): only tokens whose value is s A see exp(log s).
    with np.errstate(over="ignore"):  # s = inf is the true value where it overflows
        s = np.exp(np.where(unclipped, log_s, 0))
    scale = np.select([low, high], [dt(1 - cfg.eps_low), dt(1 + cfg.eps_high)], default=s)
    return cast(np.ndarray, scale * adv)


def gspo_grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> np.ndarray:
    """F_t = s_i where the unclipped term is active, 0 where the clip is (spec S14.4).

        dJ_t / d log_prob_t = F_t A_t,   F_t = 0 if (A_t < 0, s_i < 1 - eps_low) or (A_t > 0, s_i > 1 + eps_high)
                                              = s_i otherwise

    The stop-gradient of the token form routes J_t's derivative to token t's own log-prob only.
    Like PPO (spec S5), F_t = s_i is unbounded for A_t < 0 above the interval.

    Returns:
        (B, T) array in the compute dtype.
    """
    log_s, _, low, high = _prepared(log_prob, old_log_prob, advantages, mask, cfg)
    with np.errstate(over="ignore"):
        s = np.exp(np.where(low | high, 0, log_s))
    return np.where(low | high, 0, s).astype(log_s.dtype, copy=False)


def gspo_token_regions(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> TokenRegions:
    """PPO's regions evaluated on the sequence ratio s_i, per token (spec S10, S14.4).

        clip_low  = A_t < 0 and s_i < 1 - eps_low,   clip_high = A_t > 0 and s_i > 1 + eps_high,
        dual_clip = none,                            inside    = everything else

    compared in log space (spec S9.1), exactly where `gspo_grad_weight` is 0. Every token of a row
    shares s_i, so a row's tokens of one advantage sign share a region.
    """
    _, _, low, high = _prepared(log_prob, old_log_prob, advantages, mask, cfg)
    return TokenRegions(low, high, np.zeros_like(low), ~(low | high))
