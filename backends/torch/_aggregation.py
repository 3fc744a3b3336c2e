"""Loss aggregation over valid tokens, global normalizers and their all-reduce (docs/spec.md clause S8).

Every mode is linear in the per-token losses, loss = sum_t c_t l_t, with the coefficients of
`cegppo.aggregation_weights`. `aggregate_loss` computes the same sums without materialising c.
"""

from __future__ import annotations

from typing import Any

from cegppo._validation import (
    AGG_TABLE,
    agg_length,
    check_aggregation,
    check_aggregation_shapes,
    check_input_dtype,
    check_normalizer_value,
    read_normalizers,
    require_finite,
)

import torch

from ._common import as_bool_mask, check_tensor

__all__ = ["aggregate_loss", "aggregation_weights", "global_counts", "local_counts"]


def local_counts(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid tokens, sequences with at least one valid token) of a (B, T) mask, as int64 0-d tensors.

    No host sync: the counts stay on the mask's device.
    """
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    return m.sum(dtype=torch.int64), m.any(dim=-1).sum(dtype=torch.int64)


def global_counts(mask: torch.Tensor, group: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The global normalizers (num_tokens, num_seqs) of a data-parallel batch (spec S8.3).

    Sums `local_counts(mask)` over the ranks of `group` with ONE `torch.distributed.all_reduce`
    (both counts stacked in one int64 tensor on the mask's device). When torch.distributed is not
    available or not initialised, returns the local counts. Call it once per optimiser step with
    the mask of every micro-batch of this rank concatenated (or sum the local counts of the
    micro-batches first), then pass the result to every `policy_loss` call of the step:

        num_tokens, num_seqs = cg.global_counts(torch.cat(masks))
        for mb in micro_batches:
            loss = cg.policy_loss(..., num_tokens=num_tokens, num_seqs=num_seqs)
            (loss * dist.get_world_size()).backward()   # DDP/FSDP average gradients: see below

    Gradient-averaging factor: DDP and FSDP (FSDP1 and FSDP2's default) *average* gradients over
    the W ranks of the data-parallel group. With global normalizers the per-rank losses *sum* to
    the full-batch loss, so the summed gradient is the full-batch gradient and the averaged one is
    1/W of it. Multiply the local loss by W = world size of the data-parallel group before
    `backward()` (or, equivalently, divide the normalizers by W) to get exactly the full-batch
    gradient. For logging, the full-batch loss is the all-reduce SUM of the unscaled local losses.

    Args:
        mask: (B, T) bool or integer mask of this rank.
        group: the process group (default: the world).

    Returns:
        (num_tokens, num_seqs): int64 0-d tensors on the mask's device.
    """
    check_tensor("mask", mask)
    tokens, seqs = local_counts(mask)
    counts = torch.stack([tokens, seqs])
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    return counts[0], counts[1]


def _denominator(value: Any, local: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A normalizer the mode reads (default: this batch's count `local`) as a divisor (spec S8.2).

    On the device, without reading anything back (no host sync):

        den > 0                               -> den
        den = 0 and this batch has no token   -> 1   (the numerator is 0 too: loss 0, spec S8.4)
        anything else (0 with valid tokens, negative, NaN)  -> NaN, so the loss is NaN

    Never silently 1: a bad normalizer poisons the loss instead. Python and NumPy values were
    already checked (finite, >= 0) by `cegppo._validation.check_normalizer`; `policy_loss(...,
    validate=True)` raises ValueError for the device cases too (`_validate_normalizers`).
    """
    loc = local.to(dtype)
    if value is None:
        den = loc
    elif isinstance(value, torch.Tensor):
        # stays on its own device (a 0-d CPU tensor mixes with CUDA ones; moving it would sync)
        den = value.reshape(()).to(dtype)
    else:  # a Python/NumPy number or a scalar NumPy array (host memory), checked finite and >= 0
        v = float(value.reshape(())) if hasattr(value, "reshape") else float(value)
        if v > 0:
            return torch.full((), v, dtype=dtype, device=loc.device)
        den = torch.zeros((), dtype=dtype, device=loc.device)
    one = torch.ones_like(den)
    nan = torch.full_like(den, float("nan"))
    return torch.where(den > 0, den, torch.where((den == 0) & (loc == 0), one, nan))


def _validate_normalizers(agg: str, m: torch.Tensor, num_tokens: Any, num_seqs: Any) -> None:
    """validate=True: the value rule of spec S8.2 on the normalizers `agg` reads (host syncs)."""
    for name, value in read_normalizers(agg, num_tokens, num_seqs):
        if value is None:
            continue
        local = m.sum() if name == "num_tokens" else m.any(dim=-1).sum()
        v = float(value.reshape(())) if hasattr(value, "reshape") else float(value)
        check_normalizer_value(name, v, int(local))


def _divisor(m: torch.Tensor, agg: str, num_tokens: Any, num_seqs: Any, norm_length: float | None,
             dtype: torch.dtype) -> torch.Tensor | None:
    """N, S or S L: what mode `agg` divides by after any per-row mean (`AGG_TABLE`), None for token-sum."""
    mode = AGG_TABLE[agg]
    if mode.normalizer is None:
        return None
    if mode.normalizer == "num_tokens":
        den = _denominator(num_tokens, m.sum(), dtype)
    else:
        den = _denominator(num_seqs, m.any(dim=-1).sum(), dtype)
    return den * agg_length(norm_length, m.shape[-1]) if mode.by_length else den


def _row_counts(m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """n_i, the valid tokens of each row, with 1 for an empty row (whose sum is 0 anyway)."""
    per_row = m.sum(dim=-1).to(dtype)
    return torch.where(per_row > 0, per_row, torch.ones_like(per_row))


def _aggregate(
    masked_loss: torch.Tensor,
    m: torch.Tensor,
    agg: str,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: float | None,
) -> torch.Tensor:
    """sum_t c_t l_t for a loss already zeroed at masked positions (no checks): sums first and
    divides once, the c of `aggregation_weights` never materialised."""
    dt = masked_loss.dtype
    if AGG_TABLE[agg].per_row_mean:  # each row's mean over its valid tokens, summed over rows
        total = (masked_loss.sum(dim=-1) / _row_counts(m, dt)).sum()
    else:
        total = masked_loss.sum()
    den = _divisor(m, agg, num_tokens, num_seqs, norm_length, dt)
    return total if den is None else total / den


def _validate(agg: str, m: torch.Tensor, num_tokens: Any, num_seqs: Any, named: tuple[tuple[str, torch.Tensor], ...]) -> None:
    """validate=True (host syncs): the named tensors finite at valid positions, and the normalizers (S8.2)."""
    for name, x in named:
        require_finite(name, bool(torch.isfinite(x.detach())[m].all()))
    _validate_normalizers(agg, m, num_tokens, num_seqs)


def aggregation_weights(
    mask: torch.Tensor,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    dtype: torch.dtype = torch.float32,
    validate: bool = False,
) -> torch.Tensor:
    """The coefficients c (B, T) with loss = sum(c * l) for aggregation mode `agg` (spec S8).

        token-mean               c_t = m_t / N
        token-sum                c_t = m_t
        seq-mean-token-mean      c_t = m_t / (n_i S)      (rows with n_i = 0 get 0)
        seq-mean-token-sum       c_t = m_t / S
        seq-mean-token-sum-norm  c_t = m_t / (S L)        (Dr.GRPO, arXiv 2503.20783, Eq. 4)

    N = num_tokens (default: valid tokens of `mask`), S = num_seqs (default: rows with a valid
    token), n_i = valid tokens of row i, L = norm_length (default T). Same contract as
    `cegppo.aggregation_weights`; `dtype` defaults to float32 here (the reference's to float64).
    `validate=True` checks the normalizers' values (spec S8.2) as `policy_loss` does (host syncs).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    if validate:
        _validate_normalizers(agg, m, num_tokens, num_seqs)
    c = m.to(dtype)
    if AGG_TABLE[agg].per_row_mean:
        c = c / _row_counts(m, dtype)[:, None]
    den = _divisor(m, agg, num_tokens, num_seqs, norm_length, dtype)
    return c if den is None else c / den


def aggregate_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    validate: bool = False,
) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss over the valid tokens of `mask` (spec S8), differentiably.

    Masked positions of `per_token_loss` may hold anything, NaN and inf included: they are selected
    away with `torch.where` before any arithmetic, so they reach neither the value nor the gradient
    (spec S9.3). Computed in at least float32. Returns a 0-d tensor. `validate=True` also checks,
    as `policy_loss` does, that the valid positions are finite and the normalizers (S8.2) (host syncs).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length)
    check_tensor("per_token_loss", per_token_loss)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m, per_token_loss)
    check_input_dtype("per_token_loss", per_token_loss.dtype, floating_only=False)
    if validate:
        _validate(agg, m, num_tokens, num_seqs, (("per_token_loss", per_token_loss),))
    dt = torch.promote_types(per_token_loss.dtype, torch.float32)
    loss = per_token_loss.to(dt)
    return _aggregate(
        torch.where(m, loss, torch.zeros((), dtype=dt, device=loss.device)),
        m,
        agg,
        num_tokens,
        num_seqs,
        norm_length,
    )
