"""Torch ports with the standard signature: `correct` and one broken port per bug class.

Every port: port(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high,
beta_low, beta_high, clip_ratio_c) -> token-mean loss (0-d tensor). The broken ones are `correct`
with one realistic mistake each (see the BUG line of each docstring).
"""

from __future__ import annotations

import math

import torch

from ._variant import variant


def _prep(log_prob, old_log_prob, advantages, response_mask, dt=None, detach=True):
    if dt is None:
        dt = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    m = response_mask.bool()
    if detach:  # old_log_prob and advantages are constants of the loss (spec S4)
        old_log_prob, advantages = old_log_prob.detach(), advantages.detach()
    lp = torch.where(m, log_prob.to(dt), torch.zeros((), dtype=dt))
    olp = torch.where(m, old_log_prob.to(dt), torch.zeros((), dtype=dt))
    adv = advantages.to(dt)
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(lp)
    adv = torch.where(m, adv, torch.zeros((), dtype=dt))
    return lp, olp, adv, m


def _k(x, like):
    return torch.full((), x, dtype=like.dtype)


class _One(torch.autograd.Function):
    """exp(x - sg(x)) evaluated exactly: 1 with derivative 1, also at x = +-inf (x - x.detach() is NaN there)."""

    @staticmethod
    def forward(ctx, x):
        return torch.ones_like(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _correct(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
             clip_ratio_c, detach=True):
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask, detach=detach)
    logr = lp - olp
    ratio = torch.exp(logr.detach())  # for the region tests only; never differentiated
    clip_low = (adv < 0) & (ratio < 1 - eps_low)
    clip_high = (adv > 0) & (ratio > 1 + eps_high)
    dual = (adv < 0) & (ratio > clip_ratio_c) if clip_ratio_c is not None else torch.zeros_like(m)
    inside = ~(clip_low | clip_high | dual)
    clipped = clip_low | clip_high
    zero = _k(0.0, logr)
    delta = torch.exp(torch.where(inside & (adv != 0), logr, zero))
    factor = torch.where(clipped, _One.apply(torch.where(clipped, logr, zero)), delta)
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    j = scale * factor * adv
    n = m.sum().clamp(min=1)
    return -torch.where(m, j, zero).sum() / n


correct = variant(
    _correct, "correct",
    "CE-GPPO token-mean, written independently of cegppo.torch; regions compared in ratio space.",
)


constants_not_detached = variant(
    _correct, "constants_not_detached",
    "BUG: old_log_prob and advantages are not detached: a caller passing requires_grad values gets gradients in them.",
    detach=False,
)


def wrong_region_sign(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                      beta_high, clip_ratio_c):
    """BUG: clip_high ignores the sign of A (A < 0 tokens above the interval get the clip_high weight)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low = (adv < 0) & (logr < math.log1p(-eps_low))
    clip_high = (adv != 0) & (logr > math.log1p(eps_high))
    dual = (adv < 0) & (logr > math.log(clip_ratio_c)) & ~clip_high if clip_ratio_c else torch.zeros_like(m)
    return _finish(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def _finish(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, c,
            w_low=None, w_high=None):
    terms = _terms(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, c, w_low, w_high)
    return terms.sum() / m.sum().clamp(min=1)


def _terms(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, c,
           w_low=None, w_high=None):
    """Per-token losses -J_t, 0 at masked positions."""
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    arg = torch.where(inside & (adv != 0), logr, torch.where(clip_low | clip_high, logr - logr.detach(), zero))
    w_low = beta_low * (1 - eps_low) if w_low is None else w_low
    w_high = beta_high * (1 + eps_high) if w_high is None else w_high
    scale = torch.where(clip_low, _k(w_low, logr), torch.where(clip_high, _k(w_high, logr),
                        torch.where(dual, _k(c or 0.0, logr), _k(1.0, logr))))
    j = scale * torch.exp(arg) * adv
    return -torch.where(m, j, zero)


def _regions(logr, adv, m, eps_low, eps_high, c):
    clip_low = (adv < 0) & (logr < math.log1p(-eps_low))
    clip_high = (adv > 0) & (logr > math.log1p(eps_high))
    dual = (adv < 0) & (logr > math.log(c)) if c is not None else torch.zeros_like(m)
    return clip_low, clip_high, dual


def swapped_betas(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                  beta_high, clip_ratio_c):
    """BUG: beta_low and beta_high swapped (beta_high scales clip_low tokens and vice versa)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_low, eps_high, beta_high, beta_low, clip_ratio_c)


def swapped_eps(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                beta_high, clip_ratio_c):
    """BUG: eps_low and eps_high swapped (interval [1 - eps_high, 1 + eps_low])."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_high, eps_low, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_high, eps_low, beta_low, beta_high, clip_ratio_c)


def no_stop_gradient(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                     beta_high, clip_ratio_c):
    """BUG: delta / delta without detach: clipped tokens lose their gradient (PPO, not CE-GPPO)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    arg = torch.where(inside & (adv != 0), logr, torch.where(clip_low | clip_high, logr, zero))
    delta = torch.exp(arg)
    one = delta / delta  # value 1, but gradient 0: the stop-gradient is missing
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    j = torch.where(clip_low | clip_high, scale * one, torch.where(inside, delta, scale)) * adv
    return -torch.where(m, j, zero).sum() / m.sum().clamp(min=1)


def misplaced_stop_gradient(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                            beta_high, clip_ratio_c):
    """BUG: sg on the wrong side: sg(delta) / delta, so clipped tokens get the gradient with the wrong sign."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    arg = torch.where(inside & (adv != 0), logr, torch.where(clip_low | clip_high, logr.detach() - logr, zero))
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    j = scale * torch.exp(arg) * adv
    return -torch.where(m, j, zero).sum() / m.sum().clamp(min=1)


def mean_over_padding(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                      beta_high, clip_ratio_c):
    """BUG: normalizes by B * T (masked positions counted) instead of the number of valid tokens."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    loss_sum = _finish(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c) * m.sum().clamp(min=1)
    return loss_sum / m.numel()


def seq_mean_instead_of_token_mean(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high,
                                   beta_low, beta_high, clip_ratio_c):
    """BUG: mean over sequences of per-sequence token means (GRPO's seq-mean-token-mean), not token-mean."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    arg = torch.where(inside & (adv != 0), logr, torch.where(clip_low | clip_high, logr - logr.detach(), zero))
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    per_tok = torch.where(m, -scale * torch.exp(arg) * adv, zero)
    n_i = m.sum(-1)
    rows = per_tok.sum(-1) / n_i.clamp(min=1)
    return rows.sum() / (n_i > 0).sum().clamp(min=1)


def mask_after_arithmetic(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                          beta_high, clip_ratio_c):
    """BUG: masks by multiplying after the arithmetic: NaN/inf at padded positions leak (0 * NaN = NaN)."""
    dt = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    mf = response_mask.to(dt)
    logr = log_prob.to(dt) - old_log_prob.to(dt)
    adv = advantages.to(dt)
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logr)
    m = response_mask.bool()
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    arg = torch.where(inside & (adv != 0), logr, torch.where(clip_low | clip_high, logr - logr.detach(), zero))
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    per_tok = -scale * torch.exp(arg) * adv
    return (per_tok * mf).sum() / mf.sum().clamp(min=1)


def unsafe_exp_where(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                     beta_high, clip_ratio_c):
    """BUG: exponentiates before selecting: where(inside, exp(logr) A, ...) has a NaN gradient when exp overflows."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    delta = torch.exp(logr)  # every token, taken branch or not
    one = torch.exp(logr - logr.detach())
    j = torch.where(inside, delta * adv,
                    torch.where(clip_low, beta_low * (1 - eps_low) * one * adv,
                                torch.where(clip_high, beta_high * (1 + eps_high) * one * adv,
                                            (clip_ratio_c or 0.0) * adv)))
    return -torch.where(m, j, zero).sum() / m.sum().clamp(min=1)


def float32_always(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                   beta_high, clip_ratio_c):
    """BUG: dtype slip: computes in float32 whatever the input dtype (float64 inputs lose precision)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask, dt=torch.float32)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def bf16_arithmetic(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                    beta_high, clip_ratio_c):
    """BUG: dtype slip: bfloat16 inputs are computed in bfloat16 (no upcast to float32)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask, dt=log_prob.dtype)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def dual_clip_any_sign(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                       beta_high, clip_ratio_c):
    """BUG: dual clip applied whatever the sign of A (A > 0 tokens above c lose their gradient)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, _ = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    dual = (adv != 0) & (logr > math.log(clip_ratio_c)) if clip_ratio_c is not None else torch.zeros_like(m)
    clip_high = clip_high & ~dual
    return _finish(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def dual_clip_on_log_ratio(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                           beta_high, clip_ratio_c):
    """BUG: dual clip compares the log-ratio with c instead of log c (logr > c)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, _ = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    dual = (adv < 0) & (logr > clip_ratio_c) if clip_ratio_c is not None else torch.zeros_like(m)
    return _finish(logr, adv, m, clip_low, clip_high, dual, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def clamped_log_ratio(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                      beta_high, clip_ratio_c):
    """BUG: clamps the log-ratio to [-20, 20] as verl does: clipped tokens beyond lose their gradient."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = torch.clamp(lp - olp, -20.0, 20.0)
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def per_sequence_broadcast(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                           beta_high, clip_ratio_c):
    """BUG: (B,) advantages broadcast along the wrong axis (advantages[None, :]): raises or mixes rows."""
    dt = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    adv = advantages.to(dt)
    if adv.dim() == 1:
        adv = adv[None, :].expand(log_prob.shape)
    return correct(log_prob, old_log_prob, adv, response_mask, eps_low=eps_low, eps_high=eps_high,
                   beta_low=beta_low, beta_high=beta_high, clip_ratio_c=clip_ratio_c)


def naive_quotient(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                   beta_high, clip_ratio_c):
    """BUG: delta / sg(delta) as a quotient of ratios: 0 / 0 = NaN where delta underflows (logr < -103 in fp32)."""
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    clip_low, clip_high, dual = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    inside = ~(clip_low | clip_high | dual)
    zero = _k(0.0, logr)
    delta = torch.exp(torch.where(inside & (adv != 0) | clip_low | clip_high, logr, zero))
    one = delta / delta.detach()
    scale = torch.where(clip_low, _k(beta_low * (1 - eps_low), logr),
                        torch.where(clip_high, _k(beta_high * (1 + eps_high), logr),
                                    torch.where(dual, _k(clip_ratio_c or 0.0, logr), _k(1.0, logr))))
    j = torch.where(clip_low | clip_high, scale * one, torch.where(dual, scale, delta)) * adv
    return -torch.where(m, j, zero).sum() / m.sum().clamp(min=1)


def wrong_loss_sign(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: returns the objective J instead of the loss -J (gradient ascent on the loss)."""
    return -correct(log_prob, old_log_prob, advantages, response_mask, **kw)



# -- bugs that show only at kernel scale, in float16, or on the caller's tensors ------------------------
BLOCK = 64
FAST_PATH_TOKENS = 1 << 19
CHUNK = 1 << 16


def block_tail_dropped(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: a kernel grid of T // 64 blocks (floor, not ceil) when T > 64: tokens past the last full block are lost."""
    t = log_prob.shape[-1]
    if t <= BLOCK:  # one block covers the row: the short sequences every unit test uses are right
        return correct(log_prob, old_log_prob, advantages, response_mask, **kw)
    keep = (t // BLOCK) * BLOCK
    m = response_mask.bool().clone()
    m[:, keep:] = False
    return correct(log_prob, old_log_prob, advantages, m, **kw)


def large_batch_fast_path(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                          beta_high, clip_ratio_c):
    """BUG: above 2^19 tokens a chunked path averages per-chunk token means (wrong when chunks differ in valid tokens)."""
    kw = dict(eps_low=eps_low, eps_high=eps_high, beta_low=beta_low, beta_high=beta_high, clip_ratio_c=clip_ratio_c)
    if log_prob.numel() <= FAST_PATH_TOKENS:
        return correct(log_prob, old_log_prob, advantages, response_mask, **kw)
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    terms = _terms(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c).reshape(-1)
    pad = (-terms.numel()) % CHUNK
    sums = torch.nn.functional.pad(terms, (0, pad)).view(-1, CHUNK).sum(1)
    counts = torch.nn.functional.pad(m.reshape(-1).to(terms.dtype), (0, pad)).view(-1, CHUNK).sum(1)
    return (sums / counts.clamp(min=1)).mean()


def token_advantages_only(log_prob, old_log_prob, advantages, response_mask, **kw):
    """Correct, but takes per-token (B, T) advantages only, as verl's losses do: declare advantages="token"."""
    if advantages.shape != log_prob.shape:
        raise ValueError(f"advantages must have the shape of log_prob {tuple(log_prob.shape)}, "
                         f"got {tuple(advantages.shape)}")
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)


def sequence_advantages_only(log_prob, old_log_prob, advantages, response_mask, **kw):
    """Correct, but takes per-sequence (B,) advantages only (GRPO-style): declare advantages="sequence"."""
    if advantages.dim() != 1:
        raise ValueError(f"advantages must be (B,), got shape {tuple(advantages.shape)}")
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)


def fp16_arithmetic(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
                    beta_high, clip_ratio_c):
    """BUG: upcasts bfloat16 but not float16: float16 inputs are computed in float16."""
    dt = torch.float16 if log_prob.dtype == torch.float16 else None
    lp, olp, adv, m = _prep(log_prob, old_log_prob, advantages, response_mask, dt=dt)
    logr = lp - olp
    r = _regions(logr, adv, m, eps_low, eps_high, clip_ratio_c)
    return _finish(logr, adv, m, *r, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)


def zeroes_padding_in_place(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: cleans the padding of the caller's old_log_prob and advantages in place (masked_fill_)."""
    pad = ~response_mask.bool()
    old_log_prob.masked_fill_(pad, 0.0)
    if advantages.dim() == 2:
        advantages.masked_fill_(pad, 0.0)
    return correct(log_prob, old_log_prob, advantages, response_mask, **kw)


def contiguity_assumed(log_prob, old_log_prob, advantages, response_mask, **kw):
    """BUG: reads its inputs as a kernel written for contiguous row-major memory does: views are read wrong."""

    def as_contiguous_memory(x):
        strides = tuple(int(math.prod(x.shape[i + 1:])) for i in range(x.dim()))
        return torch.as_strided(x, x.shape, strides)

    return correct(*(as_contiguous_memory(x) for x in (log_prob, old_log_prob, advantages, response_mask)), **kw)
