"""Per-token CE-GPPO in PyTorch: regions, objective and gradient weight (docs/spec.md clauses S2-S5).

Elementwise over (B, T); no masking, no reduction. The gradient of `per_token_objective` comes
from autograd and equals the reference's analytic F_t A_t (spec S4).
"""

from __future__ import annotations

from typing import Any

from cegppo import _backend_core as core
from cegppo._config import CEGPPOConfig
from cegppo._objective import TokenRegions

import torch

from ._common import scalar
from ._ops import OPS

__all__ = ["TokenRegions", "grad_weight", "per_token_objective", "token_regions"]


def _inputs(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, cfg: CEGPPOConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked (metadata only) and cast to the compute dtype; (B,) advantages broadcast to (B, T)."""
    lp, olp, adv, _ = core.policy_inputs(OPS, log_prob, old_log_prob, advantages, cfg)
    return lp, olp, adv


def _regions(logr: torch.Tensor, adv: torch.Tensor, cfg: CEGPPOConfig) -> TokenRegions:
    # Compared in log space (spec S9.1): no exp that could overflow. A Python float compared with a
    # tensor is cast to the tensor's dtype, so the bounds round to the compute dtype, as in the
    # reference.
    neg, pos = adv < 0, adv > 0
    clip_low = neg & (logr < cfg.log_lower)
    clip_high = pos & (logr > cfg.log_upper)
    if cfg.log_dual_clip is None:
        dual = torch.zeros_like(clip_low)
    else:
        dual = neg & (logr > cfg.log_dual_clip)
    inside = ~(clip_low | clip_high | dual)
    return TokenRegions(clip_low, clip_high, dual, inside)


class _RatioOverSgRatio(torch.autograd.Function):
    """delta / sg(delta) = exp(logr - sg(logr)), evaluated exactly: value 1, d/dlogr = 1.

    This is the paper's gradient-preserving factor (arXiv 2509.20712 Eq. 8; spec S3, S9.1).
    Written as a custom autograd function (like the JAX backend's custom JVP) instead of
    `exp(logr - logr.detach())` so that it stays 1, with derivative 1, at logr = +-inf: a valid
    clipped token whose old_log_prob is -inf (or whose log_prob is -inf) has logr = +-inf, where
    the subtraction gives inf - inf = NaN. For finite logr both forms are identical, to every
    derivative order (the backward is the identity, itself differentiable).
    """

    @staticmethod
    def forward(logr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.ones_like(logr)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], logr: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return torch.ones_like(logr), in_dims[0]


def _objective(logr: torch.Tensor, adv: torch.Tensor, cfg: CEGPPOConfig) -> torch.Tensor:
    """J_t from the log-ratio, differentiable in `logr` (spec S3, S4, S9.1, S9.2)."""
    r = _regions(logr, adv, cfg)
    clipped = r.clip_low | r.clip_high
    # Select the argument first, then exponentiate (spec S9.2):
    #   inside with A != 0 : exp(logr)                      -> delta
    #   clip_low/clip_high : delta / sg(delta) of logr      -> value exactly 1, gradient 1, also at +-inf
    #   dual_clip, A = 0   : exp(0) (a constant)            -> 1, no gradient, so inf * 0 cannot occur
    zero = scalar(0.0, logr)
    delta_inside = torch.exp(torch.where(r.inside & (adv != 0), logr, zero))
    unit = _RatioOverSgRatio.apply(torch.where(clipped, logr, zero))
    c = 0.0 if cfg.dual_clip is None else cfg.dual_clip
    scale = torch.where(
        r.clip_low,
        scalar(cfg.weight_low, logr) * unit,
        torch.where(
            r.clip_high,
            scalar(cfg.weight_high, logr) * unit,
            torch.where(r.dual_clip, scalar(c, logr), delta_inside),
        ),
    )
    return scale * adv


def token_regions(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, cfg: CEGPPOConfig
) -> TokenRegions:
    """Which region of spec clause S2 each token is in (same contract as `cegppo.token_regions`).

        clip_low : delta < 1 - eps_low and A < 0
        clip_high: delta > 1 + eps_high and A > 0
        dual_clip: c given, A < 0 and delta > c
        inside   : everything else (A = 0 and NaN log-ratios included)

    Args:
        log_prob: (B, T) log pi_theta(a_t | s_t).
        old_log_prob: (B, T) log pi_old(a_t | s_t).
        advantages: (B, T) or (B,).
        cfg: the hyperparameters.

    Returns:
        `cegppo.TokenRegions` of four (B, T) bool tensors that partition the tokens.
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    with torch.no_grad():
        return _regions(lp - olp, adv, cfg)


def per_token_objective(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, cfg: CEGPPOConfig
) -> torch.Tensor:
    """The CE-GPPO objective J_t per token, to be maximised (arXiv 2509.20712 Eq. 8; spec S3).

        J_t = beta_low (1 - eps_low) [delta / sg(delta)] A     clip_low
            = beta_high (1 + eps_high) [delta / sg(delta)] A   clip_high
            = c A                                              dual_clip
            = delta A                                          inside

    with delta = exp(log_prob - old_log_prob), computed in log space; delta / sg(delta) is
    exp(logr - sg(logr)) (value 1, gradient 1, also at logr = +-inf). Autograd gives
    dJ_t / d log_prob_t = F_t A_t
    (spec S4, see `grad_weight`). No masking, no reduction: positions holding NaN or inf give NaN
    or inf here; `policy_loss` sanitises masked positions first.

    Args:
        log_prob, old_log_prob: (B, T) floating-point log-probabilities (old_log_prob is a
            constant: detached, spec S4).
        advantages: (B, T) or (B,) (a constant: detached, spec S4).
        cfg: the hyperparameters.

    Returns:
        (B, T) tensor in the compute dtype (float32 for bf16/fp16/fp32 inputs, float64 for
        float64: spec S9.5).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    return _objective(lp - olp, adv, cfg)


def _grad_weight(logr: torch.Tensor, adv: torch.Tensor, cfg: CEGPPOConfig) -> torch.Tensor:
    r = _regions(logr, adv, cfg)
    delta_inside = torch.exp(torch.where(r.inside, logr, scalar(0.0, logr)))
    return torch.where(
        r.clip_low,
        scalar(cfg.weight_low, logr),
        torch.where(r.clip_high, scalar(cfg.weight_high, logr), torch.where(r.dual_clip, 0.0, delta_inside)),
    )


def grad_weight(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, cfg: CEGPPOConfig
) -> torch.Tensor:
    """F_t, with dJ_t / d log_prob_t = F_t A_t (spec S4; arXiv 2509.20712 Eq. 8-10). Not differentiable.

        F_t = beta_low (1 - eps_low)     clip_low
            = beta_high (1 + eps_high)   clip_high
            = 0                          dual_clip
            = delta                      inside

    Returns:
        (B, T) tensor in the compute dtype; `inf` where delta overflows inside (the true value).
    """
    lp, olp, adv = _inputs(log_prob, old_log_prob, advantages, cfg)
    with torch.no_grad():
        return _grad_weight(lp - olp, adv, cfg)
