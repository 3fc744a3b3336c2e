"""The softmax head in PyTorch, over the vocabulary in row chunks (docs/spec.md clause S11).

`token_log_probs` and `entropy` are custom autograd Functions: the forward pass upcasts one chunk of
rows at a time to the compute dtype (float32 for bf16/fp16 logits) and keeps only per-row results
(log-sum-exp, entropy); the backward pass recomputes the softmax chunk by chunk and writes into one
gradient buffer allocated in the logits' dtype. So a (N, V = 152k) bf16 logits tensor never needs
a second full-size fp32 copy, in forward or backward: the peak extra memory is one chunk.
"""

from __future__ import annotations

from typing import Any

from cegppo._validation import check_chunk_size, check_id_range, check_logits_shapes

import torch

from ._common import as_float, check_tensor, compute_dtype

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "entropy", "entropy_change_first_order", "token_log_probs"]

DEFAULT_CHUNK_ELEMENTS: int = 1 << 24
"""Default chunk: rows such that rows * V <= 2^24 elements (64 MiB in float32), at least one row."""


def _chunk_rows(chunk_size: int | None, n: int, v: int) -> int:
    rows = check_chunk_size(chunk_size)
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(v, 1)) if rows is None else rows


def _check_logits(logits: Any) -> torch.dtype:
    check_tensor("logits", logits)
    check_logits_shapes(logits)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    return compute_dtype(("logits", logits))


def _check_ids(ids: Any, logits: torch.Tensor, validate: bool) -> None:
    check_tensor("ids", ids)
    check_logits_shapes(logits, ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
    if validate and ids.numel():
        check_id_range("ids", int(ids.min()), int(ids.max()), logits.shape[-1])


def _p_logp(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, p log p) with 0 log 0 = 0, for rows holding -inf logits (banned tokens)."""
    p = torch.exp(logp)
    pos = p > 0
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return p, torch.where(pos, p * torch.where(pos, logp, zero), zero)


class _TokenLogProbs(torch.autograd.Function):
    """log softmax(z)[a] = z_a - logsumexp(z), chunked; backward d/dz_j = g (1[j = a] - pi_j)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, ids: torch.Tensor, rows: int, dt: torch.dtype) -> torch.Tensor:
        n = z.shape[0]
        out = torch.empty(n, dtype=dt, device=z.device)
        lse = torch.empty(n, dtype=dt, device=z.device)
        for i in range(0, n, rows):
            zc = z[i : i + rows].to(dt)
            lse[i : i + rows] = torch.logsumexp(zc, dim=-1)
            out[i : i + rows] = zc.gather(-1, ids[i : i + rows, None])[:, 0] - lse[i : i + rows]
        ctx.save_for_backward(z, ids, lse)
        ctx.rows = rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, ids, lse = ctx.saved_tensors
        rows = ctx.rows
        grad = torch.empty_like(z)
        g = grad_out.to(lse.dtype)
        for i in range(0, z.shape[0], rows):
            sl = slice(i, i + rows)
            p = torch.exp(z[sl].to(lse.dtype) - lse[sl, None])
            gc = p.mul_(-g[sl, None])
            gc.scatter_add_(-1, ids[sl, None], g[sl, None])
            grad[sl] = gc
        return grad, None, None, None


class _Entropy(torch.autograd.Function):
    """H = -sum_j pi_j log pi_j, chunked; backward d H / d z_j = -g pi_j (log pi_j + H)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, rows: int, dt: torch.dtype) -> torch.Tensor:
        n = z.shape[0]
        h = torch.empty(n, dtype=dt, device=z.device)
        for i in range(0, n, rows):
            logp = torch.log_softmax(z[i : i + rows].to(dt), dim=-1)
            h[i : i + rows] = -_p_logp(logp)[1].sum(dim=-1)
        ctx.save_for_backward(z, h)
        ctx.rows = rows
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, h = ctx.saved_tensors
        rows = ctx.rows
        grad = torch.empty_like(z)
        g = grad_out.to(h.dtype)
        for i in range(0, z.shape[0], rows):
            sl = slice(i, i + rows)
            p, plogp = _p_logp(torch.log_softmax(z[sl].to(h.dtype), dim=-1))
            grad[sl] = (plogp + p * h[sl, None]).mul_(-g[sl, None])
        return grad, None, None


def token_log_probs(
    logits: torch.Tensor, ids: torch.Tensor, *, chunk_size: int | None = None, validate: bool = False
) -> torch.Tensor:
    """log pi(a | s) = z_a - logsumexp(z) for each position (spec S11), chunked over rows.

    Gradient (custom backward, recomputed per chunk): d log pi_a / d z_j = 1[j = a] - pi_j, equal
    to `cegppo.token_log_probs_grad`. The gradient w.r.t. `logits` is allocated once, in the
    logits' dtype; the compute dtype is float32 for bf16/fp16/fp32 logits and float64 for float64.

    Args:
        logits: (..., V) floating-point logits z.
        ids: (...) integer token ids a in [0, V).
        chunk_size: rows per chunk (default: 2^24 // V rows, i.e. <= 64 MiB of float32 per chunk).
        validate: check that ids lie in [0, V) (one host sync).

    Returns:
        (...) log-probs in the compute dtype.
    """
    dt = _check_logits(logits)
    _check_ids(ids, logits, validate)
    v = logits.shape[-1]
    lead = tuple(logits.shape[:-1])
    z = logits.reshape(-1, v)
    rows = _chunk_rows(chunk_size, z.shape[0], v)
    out = _TokenLogProbs.apply(z, ids.reshape(-1).to(torch.int64), rows, dt)
    return out.reshape(lead)


def entropy(logits: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Shannon entropy of softmax(z) in nats: H = -sum_j pi_j log pi_j (spec S11), chunked over rows.

    Gradient (custom backward, recomputed per chunk): d H / d z_j = -pi_j (log pi_j + H), equal to
    `cegppo.entropy_grad`; -inf logits (banned tokens) contribute 0 log 0 = 0.

    Args:
        logits: (..., V) floating-point logits.
        chunk_size: rows per chunk (default: 2^24 // V rows).

    Returns:
        (...) entropies in the compute dtype.
    """
    dt = _check_logits(logits)
    v = logits.shape[-1]
    lead = tuple(logits.shape[:-1])
    z = logits.reshape(-1, v)
    rows = _chunk_rows(chunk_size, z.shape[0], v)
    return _Entropy.apply(z, rows, dt).reshape(lead)


def entropy_change_first_order(
    logits: torch.Tensor,
    ids: torch.Tensor,
    weight: torch.Tensor,
    *,
    chunk_size: int | None = None,
    validate: bool = False,
) -> torch.Tensor:
    """First-order entropy change when token a's logits take the step dz = weight (e_a - pi).

        dH = weight * ( -pi_a (log pi_a + H) + sum_j pi_j^2 (log pi_j + H) )

    arXiv 2509.20712 Eq. 7 per token (after Cui et al., arXiv 2505.22617); spec S11. `weight` is
    eta * w with w the token's objective weight (for CE-GPPO w = c_t F_t A_t). A diagnostic: computed
    without gradient, chunked over rows like `entropy`.

    Args:
        logits: (..., V) logits.
        ids: (...) sampled token ids.
        weight: (...) step size along (e_a - pi).
        chunk_size: rows per chunk (default: 2^24 // V rows).
        validate: check that ids lie in [0, V) (one host sync).

    Returns:
        (...) first-order entropy change per position, in the compute dtype.
    """
    dt = _check_logits(logits)
    _check_ids(ids, logits, validate)
    check_tensor("weight", weight)
    check_logits_shapes(logits, None, weight)
    w = as_float("weight", weight, dt, floating_only=False).reshape(-1)
    v = logits.shape[-1]
    lead = tuple(logits.shape[:-1])
    z = logits.reshape(-1, v)
    a = ids.reshape(-1).to(torch.int64)
    rows = _chunk_rows(chunk_size, z.shape[0], v)
    out = torch.empty(z.shape[0], dtype=dt, device=z.device)
    with torch.no_grad():
        for i in range(0, z.shape[0], rows):
            sl = slice(i, i + rows)
            p, plogp = _p_logp(torch.log_softmax(z[sl].to(dt), dim=-1))
            h = -plogp.sum(dim=-1, keepdim=True)
            s = plogp + p * h  # s_j = pi_j (log pi_j + H); the entropy gradient is -s
            s_a = s.gather(-1, a[sl, None])[:, 0]
            out[sl] = w[sl] * (-s_a + (p * s).sum(dim=-1))
    return out.reshape(lead)
