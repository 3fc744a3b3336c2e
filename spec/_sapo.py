"""SAPO: soft adaptive policy optimization (docs/spec.md clause S14.3).

SAPO (Gao et al. 2025, arXiv 2511.20347, Sec. 3) replaces the hard clip by a smooth gate of the
token ratio, with a temperature chosen by the sign of the advantage:

    J_t = f_t(delta_t) A_t,   f_t(x) = (4 / tau_t) sigmoid(tau_t (x - 1)),
    tau_t = tau_pos if A_t > 0 else tau_neg

so F_t = 4 sigmoid(z_t) sigmoid(-z_t) delta_t with z_t = tau_t (delta_t - 1). At delta = 1 the
weight is 1 for every temperature: an on-policy token gets the plain policy gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ._config import ConfigMethods, check_positive_real, store_floats
from ._family_inputs import family_inputs
from ._objective import TokenRegions

__all__ = ["SAPOConfig", "sapo_grad_weight", "sapo_per_token_objective", "sapo_token_regions"]


@dataclass(frozen=True)
class SAPOConfig(ConfigMethods):
    """Temperatures of SAPO's soft gate (arXiv 2511.20347, Sec. 3).

    A larger temperature makes the gate's weight decay faster as the ratio leaves 1. The paper
    recommends tau_neg > tau_pos, because negative-advantage updates raise the logits of many
    unsampled tokens and destabilise training sooner; the defaults 1.0 / 1.05 are the paper's, and
    verl's and TRL's. tau_neg <= tau_pos is allowed (a recommendation, not a constraint). Paper
    aggregation: seq-mean-token-mean (spec S14.3).
    """

    tau_pos: float = 1.0
    """Gate temperature for tokens with A > 0. Must be > 0."""
    tau_neg: float = 1.05
    """Gate temperature for tokens with A <= 0 (A = 0 tokens get no gradient either way). Must be > 0."""

    def __post_init__(self) -> None:
        store_floats(self, **{name: check_positive_real(name, getattr(self, name)) for name in ("tau_pos", "tau_neg")})


def _check_sapo_config(cfg: Any) -> SAPOConfig:
    if not isinstance(cfg, SAPOConfig):
        raise TypeError(f"cfg must be a cegppo.SAPOConfig, got {type(cfg).__name__}")
    return cfg


def _gate_inputs(
    log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(logr, A, tau, z) with z = tau (delta - 1); z = +inf where delta overflows (its true limit)."""
    cfg = _check_sapo_config(cfg)
    lp, olp, adv, _ = family_inputs(log_prob, old_log_prob, advantages)
    logr = lp - olp
    dt = logr.dtype.type
    tau = np.where(adv > 0, dt(cfg.tau_pos), dt(cfg.tau_neg))
    with np.errstate(over="ignore"):
        z = tau * np.expm1(logr)  # delta - 1 without cancellation near delta = 1
    return logr, adv, tau, z


def sapo_per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> np.ndarray:
    """The SAPO objective J_t per token, to be maximised (arXiv 2511.20347, Sec. 3; spec S14.3).

        J_t = (4 / tau_t) sigmoid(tau_t (delta_t - 1)) A_t,   tau_t = tau_pos if A_t > 0 else tau_neg

    with delta = exp(log_prob - old_log_prob). The gate lies in (0, 4 / tau_t) for every ratio, so
    the value is finite for every log-ratio, +-inf included. No masking and no reduction.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities.
        advantages: (B, T) or (B,).
        cfg: a `SAPOConfig`.

    Returns:
        (B, T) array in the compute dtype (spec S9.5).
    """
    _, adv, tau, z = _gate_inputs(log_prob, old_log_prob, advantages, cfg)
    # sigmoid(z) from exp(-|z|), which cannot overflow (spec S9.2: no untaken branch overflows).
    e = np.exp(-np.abs(z))
    sigmoid = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return cast(np.ndarray, (4 / tau) * sigmoid * adv)


def sapo_grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> np.ndarray:
    """F_t = 4 sigmoid(z_t) sigmoid(-z_t) delta_t, z_t = tau_t (delta_t - 1) (spec S14.3).

    The derivative of J_t with respect to log_prob_t is F_t A_t. F is smooth in the log-ratio (no
    region boundaries), F = 1 at delta = 1, and 0 < F_t <= min(delta_t, 1 + C / tau_t) with
    C = max_x x sech^2(x / 2) ~ 0.8955 (spec S14.3). It is formed as
    4 exp(logr - |z|) / (1 + exp(-|z|))^2, so a ratio that overflows gives F = 0, its limit, not
    0 * inf; logr = +inf gives 0 as well.

    Returns:
        (B, T) array in the compute dtype.
    """
    logr, _, _, z = _gate_inputs(log_prob, old_log_prob, advantages, cfg)
    abs_z = np.abs(z)
    e = np.exp(-abs_z)
    # logr = +inf has |z| = +inf: the exponent is inf - inf, whose limit (the weight's) is -inf.
    with np.errstate(invalid="ignore"):
        exponent = np.where(logr == np.inf, -np.inf, logr - abs_z)
    return cast(np.ndarray, 4 * np.exp(exponent) / (1 + e) ** 2)


def sapo_token_regions(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> TokenRegions:
    """SAPO's regions (spec S10, S14.3): none is hard, so every token is `inside`.

    The soft gate shows in the metrics through F_t instead (`grad_weight_abs_mean`, the mean gate
    weight of the tokens that get a gradient).
    """
    _check_sapo_config(cfg)
    lp, _, _, _ = family_inputs(log_prob, old_log_prob, advantages)
    none = np.zeros(lp.shape, dtype=bool)
    return TokenRegions(none, none, none, ~none)
