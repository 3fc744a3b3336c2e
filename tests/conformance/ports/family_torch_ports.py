"""Torch ports of CISPO, SAPO and GSPO (spec S14) with each member's keywords: a correct one per member and
broken ones, each with one realistic bug (see the BUG line of its docstring).

Written independently of cegppo.torch: ratio-space clipping, a custom autograd function for SAPO's gate,
PPO's min rule on GSPO's sequence ratio. Every port returns its member's paper aggregation (token-mean
for CISPO, seq-mean-token-mean for SAPO and GSPO), computes half inputs in float32 and keeps float64.
"""

from __future__ import annotations

import math

import torch


def _prep(log_prob, old_log_prob, advantages, response_mask):
    """(log_prob, old_log_prob, advantages) in the compute dtype, 0 at masked positions; the mask as bool."""
    dt = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    m = response_mask.bool()
    old_log_prob, advantages = old_log_prob.detach(), advantages.detach()  # constants of the loss (S4)
    zero = torch.zeros((), dtype=dt)
    lp = torch.where(m, log_prob.to(dt), zero)
    olp = torch.where(m, old_log_prob.to(dt), zero)
    adv = advantages.to(dt)
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(lp)
    return lp, olp, torch.where(m, adv, zero), m


def _k(x, like):
    return torch.full((), x, dtype=like.dtype)


def _token_mean(terms, m):
    return terms.sum() / m.sum().clamp(min=1)


def _seq_mean_token_mean(terms, m):
    rows = m.any(-1)
    per_row = terms.sum(-1) / m.sum(-1).clamp(min=1)
    return (per_row * rows).sum() / rows.sum().clamp(min=1)


class _One(torch.autograd.Function):
    """exp(x - sg(x)) evaluated exactly: 1 with derivative 1, also at x = +-inf."""

    @staticmethod
    def forward(ctx, x):
        return torch.ones_like(x)

    @staticmethod
    def backward(ctx, g):
        return g


# -- CISPO (S14.2) ---------------------------------------------------------------------------------------
def _cispo(log_prob, old_log_prob, advantages, response_mask, lower, upper, *, detach_w=True, by_sign=False):
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    ratio = torch.exp(logr if not detach_w else logr.detach())
    w = ratio.clamp(min=lower, max=upper)
    if by_sign:  # PPO's regions: only A < 0 below and A > 0 above the interval are clipped
        w = torch.where(((adv < 0) & (ratio < lower)) | ((adv > 0) & (ratio > upper)), w, ratio)
    nonzero = adv != 0
    j = torch.where(nonzero, w * adv * torch.where(nonzero, lp, _k(0.0, lp)), _k(0.0, lp))
    return -_token_mean(torch.where(m, j, _k(0.0, lp)), m)


def cispo_correct(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """CISPO, token-mean: -sg(clip(delta, 1 - eps_low, 1 + eps_high)) A log_prob."""
    return _cispo(log_prob, old_log_prob, advantages, response_mask, max(1 - eps_low, 0.0), 1 + eps_high)


def cispo_cap_correct(log_prob, old_log_prob, advantages, response_mask, *, cap):
    """CISPO's cap form (TRL), token-mean: -sg(min(delta, cap)) A log_prob."""
    return _cispo(log_prob, old_log_prob, advantages, response_mask, 0.0, cap)


def cispo_weight_not_detached(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """BUG: the weight w = clip(delta) is not detached: its derivative adds w' A log_prob to the gradient."""
    return _cispo(log_prob, old_log_prob, advantages, response_mask, max(1 - eps_low, 0.0), 1 + eps_high,
                  detach_w=False)


def cispo_clips_by_sign(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """BUG: clips like PPO, by the sign of A: A > 0 below and A < 0 above the interval keep delta."""
    return _cispo(log_prob, old_log_prob, advantages, response_mask, max(1 - eps_low, 0.0), 1 + eps_high,
                  by_sign=True)


# -- SAPO (S14.3) ----------------------------------------------------------------------------------------
class _SapoGate(torch.autograd.Function):
    """(4 / tau) sigmoid(tau (delta - 1)) A, whose derivative in logr is F A = 4 sigma(z) sigma(-z) delta A."""

    @staticmethod
    def forward(ctx, logr, adv, tau):
        z = tau * torch.expm1(logr)
        az = z.abs()
        exponent = torch.where(torch.isposinf(logr), torch.full_like(logr, -math.inf), logr - az)
        f = 4 * torch.exp(exponent) / (1 + torch.exp(-az)) ** 2
        ctx.save_for_backward(f * adv)
        return (4 / tau) * torch.sigmoid(z) * adv

    @staticmethod
    def backward(ctx, g):
        (fa,) = ctx.saved_tensors
        return g * fa, None, None


def _sapo(log_prob, old_log_prob, advantages, response_mask, tau_pos, tau_neg):
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    tau = torch.where(adv > 0, _k(tau_pos, lp), _k(tau_neg, lp))
    j = _SapoGate.apply(lp - olp, adv, tau)
    return -_seq_mean_token_mean(torch.where(m, j, _k(0.0, lp)), m)


def sapo_correct(log_prob, old_log_prob, advantages, response_mask, *, tau_pos, tau_neg):
    """SAPO, seq-mean-token-mean: -(4 / tau) sigmoid(tau (delta - 1)) A, tau = tau_pos if A > 0 else tau_neg."""
    return _sapo(log_prob, old_log_prob, advantages, response_mask, tau_pos, tau_neg)


def sapo_taus_swapped(log_prob, old_log_prob, advantages, response_mask, *, tau_pos, tau_neg):
    """BUG: tau_pos and tau_neg swapped (the positive-advantage temperature used for A <= 0)."""
    return _sapo(log_prob, old_log_prob, advantages, response_mask, tau_neg, tau_pos)


# -- GSPO (S14.4) ----------------------------------------------------------------------------------------
def _gspo(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, *, padded_mean=False,
          sequence_gradient=False):
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    count = torch.full_like(logr[:, :1], logr.shape[-1]) if padded_mean else m.sum(-1, keepdim=True).clamp(min=1)
    log_s = logr.sum(-1, keepdim=True) / count
    if not sequence_gradient:
        log_s = log_s.detach()
    low = (adv < 0) & (log_s < math.log1p(-eps_low))
    high = (adv > 0) & (log_s > math.log1p(eps_high))
    unclipped = ~(low | high) & (adv != 0)
    zero = _k(0.0, logr)
    s = torch.exp(torch.where(unclipped, log_s, zero))  # select, then exponentiate
    token_ratio = s if sequence_gradient else s * _One.apply(torch.where(unclipped, logr, zero))
    j = torch.where(low, (1 - eps_low) * adv, torch.where(high, (1 + eps_high) * adv, token_ratio * adv))
    return -_seq_mean_token_mean(torch.where(m, j, zero), m)


def gspo_correct(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """GSPO's token form, seq-mean-token-mean: min(s_t A, clip(s_t) A), s_t = sg(s_i) delta / sg(delta)."""
    return _gspo(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high)


def gspo_mean_over_padding(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """BUG: s_i averages over all T positions, padding included (divides by T, not by the row's valid count)."""
    return _gspo(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, padded_mean=True)


def gspo_no_stop_gradient(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high):
    """BUG: s_i is differentiated as a whole (no stop-gradient): token t's gradient mixes the row's advantages."""
    return _gspo(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, sequence_gradient=True)
