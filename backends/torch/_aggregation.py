"""Loss aggregation over valid tokens, global normalizers and their all-reduce (docs/spec.md clause S8).

Every mode is linear in the per-token losses, loss = sum_t c_t l_t, with the aggregation weights of
`cegppo.aggregation_weights`. `aggregate_loss` computes the same sums without materialising them.
The arithmetic of normalizers and row counts is the backends' shared algorithm (`cegppo._backend_core`)
over torch's primitives (`._ops`); the distributed count (`global_counts`) is torch's own.
"""

from __future__ import annotations

from typing import Any

from cegppo import _backend_core as core
from cegppo._validation import check_aggregation, check_aggregation_shapes, check_input_dtype

import torch

from ._common import as_bool_mask, check_tensor
from ._ops import OPS

__all__ = ["aggregate_loss", "aggregation_weights", "global_counts", "local_counts"]


def local_counts(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid tokens, sequences with at least one valid token) of a (B, T) mask, as int64 0-d tensors.

    No host sync: the counts stay on the mask's device.
    """
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    return core.local_counts(OPS, m)


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
    """The aggregation weights c (B, T) with loss = sum(c * l) for mode `agg` (spec S8):

        c_t = m_t / ([n_i if per-row mean] * [N or S] * [L if by length])

    mode by mode as in `cegppo.aggregation_weights`, whose contract this is, with normalizers that
    may be 0-d tensors on any device (never read back unless `validate=True`). `dtype` defaults to
    float32 here (the reference's to float64). `validate=True` checks the normalizers' values
    (spec S8.2) as `policy_loss` does (host syncs).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    if validate:
        core.validate_normalizers(OPS, agg, m, num_tokens, num_seqs)
    return core.aggregation_weights(OPS, m, agg, num_tokens, num_seqs, norm_length, dtype)


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
    dt = torch.promote_types(per_token_loss.dtype, torch.float32)
    loss = per_token_loss.to(dt)
    if validate:
        core.validate_loss(OPS, agg, m, loss, num_tokens, num_seqs)
    (masked_loss,) = core.zero_masked(OPS, m, loss)
    return core.aggregate(OPS, masked_loss, m, agg, num_tokens, num_seqs, norm_length)
