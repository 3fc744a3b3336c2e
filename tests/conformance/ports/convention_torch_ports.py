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


def _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, c, *, clamp=None):
    """-J per token in log space, select then exponentiate (spec S3, S9.1, S9.2); 0 at masked positions."""
    zero = torch.zeros((), dtype=lp.dtype)
    lp, olp, adv = (torch.where(valid, x, zero) for x in (lp, olp, adv))
    logr = lp - olp
    if clamp is not None:
        logr = logr.clamp(-clamp, clamp)
    low = (adv < 0) & (logr < math.log1p(-eps_low))
    high = (adv > 0) & (logr > math.log1p(eps_high))
    dual = (adv < 0) & (logr > math.log(c)) if c is not None else torch.zeros_like(valid)
    inside = ~(low | high | dual)
    delta = torch.exp(torch.where(inside & (adv != 0), logr, zero))
    one = _One.apply(torch.where(low | high, logr, zero))
    factor = torch.where(low, beta_low * (1 - eps_low) * one,
                         torch.where(high, beta_high * (1 + eps_high) * one,
                                     torch.where(dual, torch.full_like(logr, c or 0.0), delta)))
    return torch.where(valid, -adv * factor, zero)


def _inputs(log_prob, old_log_prob, advantages, response_mask, dt):
    valid = response_mask.bool()
    adv = advantages.detach().to(dt)
    if adv.dim() == 1:
        adv = adv[:, None].expand(log_prob.shape)
    return log_prob.to(dt), old_log_prob.detach().to(dt), adv, valid


def _spec_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _openrlhf(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
              clip_ratio_c, loss_agg_mode, *, clamp_counts=True):
    """CE-GPPO in OpenRLHF's PolicyLoss shape: token_level_loss picks masked_mean over all tokens or per row."""
    if advantages.dim() != 2:
        raise ValueError("advantages must be (B, T), as OpenRLHF passes them")
    lp, olp, adv, valid = _inputs(log_prob, old_log_prob, advantages, response_mask, _spec_dtype(log_prob))
    loss = _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)
    n = valid.sum(-1 if loss_agg_mode == "seq-mean-token-mean" else None).to(loss.dtype)
    if clamp_counts:
        n = n.clamp(min=1)
    if loss_agg_mode == "token-mean":
        return loss.sum() / n
    rows = loss.sum(-1) / n
    s = valid.any(-1).sum().to(loss.dtype)
    return rows.sum() / (s.clamp(min=1) if clamp_counts else s)


def openrlhf_style(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
                   clip_ratio_c, loss_agg_mode):
    """OpenRLHF conventions: (B, T) advantages, token_level_loss on or off (token-mean / seq-mean-token-mean)."""
    return _openrlhf(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                     clip_ratio_c, loss_agg_mode)


def openrlhf_unclamped_counts(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                              beta_high, clip_ratio_c, loss_agg_mode):
    """DEFECT: masked_mean divides by mask.sum() as is: 0 / 0 for an all-masked micro-batch."""
    return _openrlhf(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                     clip_ratio_c, loss_agg_mode, clamp_counts=False)


def float32_everywhere(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                       beta_high, clip_ratio_c):
    """Computes in float32 whatever it is given (as tunix and many trainers do); (B,) advantages, as GRPO's."""
    if advantages.dim() != 1:
        raise ValueError("advantages must be (B,): one per sequence")
    lp, olp, adv, valid = _inputs(log_prob, old_log_prob, advantages, response_mask, torch.float32)
    loss = _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)
    return loss.sum() / valid.sum().clamp(min=1)


def float32_clamped_log_ratio(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                              beta_high, clip_ratio_c):
    """DEFECT: clamps the log-ratio to [-20, 20] (verl's safety clamp): clipped tokens beyond lose their gradient."""
    lp, olp, adv, valid = _inputs(log_prob, old_log_prob, advantages, response_mask, torch.float32)
    loss = _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, clip_ratio_c, clamp=20.0)
    return loss.sum() / valid.sum().clamp(min=1)


def _skyrl(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high, *,
           half_arithmetic=False):
    """PPO-shaped CE-GPPO in SkyRL's `regular` conventions: no dual clip, float32 arithmetic, (B, T) advantages."""
    if advantages.dim() != 2:
        raise ValueError("advantages must be (B, T), as SkyRL passes them")
    half = log_prob.dtype in (torch.float16, torch.bfloat16)
    dt = log_prob.dtype if half_arithmetic and half else torch.float32
    lp, olp, adv, valid = _inputs(log_prob, old_log_prob, advantages, response_mask, dt)
    loss = _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, None)
    out = loss.sum() / valid.sum().clamp(min=1)
    return out.to(torch.float64) if log_prob.dtype == torch.float64 else out.float()


def skyrl_style(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
                clip_ratio_c):
    """SkyRL's `regular` conventions: no dual clip (clip_ratio_c is ignored), float32 arithmetic whatever the
    input (SkyRL exponentiates the log-ratio in float32), the loss of float64 inputs handed back as float64."""
    del clip_ratio_c  # no dual clip: declared as dual_clip="absent"
    return _skyrl(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high)


def skyrl_half_arithmetic(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                          beta_high, clip_ratio_c):
    """DEFECT: the float32 ratio is cast back to the input's dtype, so bfloat16 inputs are computed in bfloat16."""
    del clip_ratio_c
    return _skyrl(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                  half_arithmetic=True)


def skyrl_ratio_in_input_dtype(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                               beta_high, clip_ratio_c):
    """DEFECT: the ratio is exponentiated in float32 at every position, then cast back to the input's dtype and
    masked by multiplication (SkyRL's safe_exp_delta): a float16 ratio beyond exp(11.09) is inf, and a masked
    inf times 0 makes the gradient NaN even when the value is right."""
    del clip_ratio_c
    valid = response_mask.bool()
    adv = advantages.detach().float()
    ratio = torch.exp((log_prob - old_log_prob.detach()).float()).to(log_prob.dtype).float()
    low = (adv < 0) & (ratio < 1 - eps_low)
    high = (adv > 0) & (ratio > 1 + eps_high)
    one = ratio / ratio.detach()
    factor = torch.where(low, beta_low * (1 - eps_low) * one,
                         torch.where(high, beta_high * (1 + eps_high) * one, ratio))
    loss = (-adv * factor * valid).sum() / valid.sum().clamp(min=1)
    return loss.to(torch.float64) if log_prob.dtype == torch.float64 else loss


def _seq_mean(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
              clip_ratio_c, *, empty_rows_safe=True):
    lp, olp, adv, valid = _inputs(log_prob, old_log_prob, advantages, response_mask, _spec_dtype(log_prob))
    loss = _per_token_loss(lp, olp, adv, valid, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)
    n_i = valid.sum(-1).to(loss.dtype)
    if not empty_rows_safe:  # GRPO's per-row mean as often written: every row is a sequence
        return (loss.sum(-1) / n_i).mean()
    nonempty = n_i > 0
    rows = torch.where(nonempty, loss.sum(-1) / n_i.clamp(min=1), torch.zeros((), dtype=loss.dtype))
    return rows.sum() / nonempty.sum().clamp(min=1)


def seq_mean_token_mean(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                        beta_high, clip_ratio_c, loss_agg_mode):
    """GRPO's seq-mean-token-mean only: the mean over non-empty rows of each row's token mean."""
    if loss_agg_mode != "seq-mean-token-mean":
        raise ValueError(f"only seq-mean-token-mean, got {loss_agg_mode!r}")
    return _seq_mean(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                     clip_ratio_c)


def seq_mean_per_row_counts(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                            beta_high, clip_ratio_c, loss_agg_mode):
    """DEFECT: divides each row by its count and averages over every row: an empty row is 0 / 0."""
    return _seq_mean(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                     clip_ratio_c, empty_rows_safe=False)


def every_mode(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
               clip_ratio_c, loss_agg_mode, num_tokens, num_seqs):
    """verl's five modes with global normalizers, as cegppo.torch computes them (the project's backend as a port)."""
    import cegppo
    import cegppo.torch as cgt

    cfg = cegppo.CEGPPOConfig(eps_low=eps_low, eps_high=eps_high, beta_low=beta_low, beta_high=beta_high,
                              dual_clip=clip_ratio_c)
    return cgt.policy_loss(log_prob, old_log_prob, advantages, response_mask, cfg, loss_agg_mode, num_tokens, num_seqs)


def drgrpo_longest_row(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                       beta_high, clip_ratio_c, loss_agg_mode, num_tokens, num_seqs):
    """DEFECT: seq-mean-token-sum-norm divides by the longest response of the batch, not the constant L = T."""
    loss = every_mode(log_prob, old_log_prob, advantages, response_mask, eps_low=eps_low, eps_high=eps_high,
                      beta_low=beta_low, beta_high=beta_high, clip_ratio_c=clip_ratio_c, loss_agg_mode=loss_agg_mode,
                      num_tokens=num_tokens, num_seqs=num_seqs)
    if loss_agg_mode != "seq-mean-token-sum-norm":
        return loss
    longest = response_mask.bool().sum(-1).max().clamp(min=1).to(loss.dtype)
    return loss * log_prob.shape[-1] / longest
