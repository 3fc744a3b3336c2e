"""Torch ports written in real frameworks' conventions: each correct under its declarations, then defective variants.

Each correct port is what careful code in that convention set computes; each variant adds one
real defect (the DEFECT line of its docstring). ports/__init__.py lists them with their
declarations (`CONVENTION_PORTS`) and, per variant, the property and the diagnosis that must
name it (`CONVENTION_DEFECTS`).
"""

from __future__ import annotations

import math

import torch


class _One(torch.autograd.Function):
    """exp(r - sg(r)) evaluated exactly: value 1, derivative 1, also at r = +-inf (spec S9.1)."""

    @staticmethod
    def forward(ctx, r):
        return torch.ones_like(r)

    @staticmethod
    def backward(ctx, g):
        return g


def _verl02(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
            clip_ratio_c, *, upcast=True, select=True, safe=True, eps=1e-8):
    """CE-GPPO as a verl-0.2 fork writes it: masked_mean (sum / (count + 1e-8)), dual clip always on."""
    c = 3.0 if clip_ratio_c is None else clip_ratio_c  # verl's clip_ratio_c default; no way to turn it off
    half = log_prob.dtype in (torch.float16, torch.bfloat16)
    dt = torch.float32 if upcast and half else log_prob.dtype
    valid = response_mask > 0
    mask = response_mask.to(dt)  # verl hands the mask as floats
    zero = torch.zeros((), dtype=dt)
    lp, olp, adv = log_prob.to(dt), old_log_prob.detach().to(dt), advantages.detach().to(dt)
    if select:  # padding may hold NaN: select it away before any arithmetic (spec S9.3)
        lp, olp, adv = (torch.where(valid, x, zero) for x in (lp, olp, adv))
    logr = lp - olp
    low = (adv < 0) & (logr < math.log1p(-eps_low))
    high = (adv > 0) & (logr > math.log1p(eps_high))
    dual = (adv < 0) & (logr > math.log(c))
    inside = ~(low | high | dual)
    if safe:
        delta = torch.exp(torch.where(inside & (adv != 0), logr, zero))
        one = _One.apply(torch.where(low | high, logr, zero))
    else:
        delta = torch.exp(logr)
        one = delta / delta.detach()
    factor = torch.where(low, beta_low * (1 - eps_low) * one,
                         torch.where(high, beta_high * (1 + eps_high) * one,
                                     torch.where(dual, torch.full_like(logr, c), delta)))
    pg_losses = -adv * factor
    if select:
        pg_losses = torch.where(valid, pg_losses, zero)
    return (pg_losses * mask).sum() / (mask.sum() + eps)  # verl 0.2's masked_mean


def verl02_style(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
                 clip_ratio_c):
    """verl-0.2 conventions: divides by count + 1e-8, dual clip always on (c = 3 for None), float mask, (B, T)."""
    if advantages.dim() != 2:
        raise ValueError("advantages must be (B, T), as verl passes them")
    return _verl02(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                   clip_ratio_c)


def verl02_ratio_quotient(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                          beta_high, clip_ratio_c):
    """DEFECT: ratio / ratio.detach() with the ratio exponentiated first: NaN once it over- or underflows."""
    return _verl02(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                   clip_ratio_c, safe=False)


def verl02_mask_multiplied(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                           beta_high, clip_ratio_c):
    """DEFECT: masks by multiplying by the float mask only: NaN padding gives 0 * NaN = NaN."""
    return _verl02(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                   clip_ratio_c, select=False)


def verl02_half_arithmetic(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                           beta_high, clip_ratio_c):
    """DEFECT: computes in the input dtype: float16/bfloat16 in half precision (and 1e-8 underflows in float16)."""
    return _verl02(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                   clip_ratio_c, upcast=False)
