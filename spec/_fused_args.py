"""The fused LM-head loss's arguments, checked once and named (docs/spec.md clauses S9.6, S11.1).

The reference and both backends call `check_fused_args` first, so every fused head refuses the same
calls, in the same order, with the same messages, and reads its options from one `FusedArgs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._config import check_config
from ._validation import check_aggregation, check_chunk_size, check_fused_shapes, check_positive, check_real

__all__ = ["FusedArgs", "check_fused_args"]


class FusedArgs(NamedTuple):
    """The fused head's checked arguments (`check_fused_args`)."""

    agg: str
    norm_length: float | None
    temperature: float
    entropy_coef: float
    chunk_size: int | None
    shape: tuple[int, int, int, int]
    """(B, T, H, V)."""
    float_inputs: tuple[tuple[str, Any], ...]
    """The named arrays whose dtypes set the compute dtype (spec S9.5): hidden, weight, old_log_prob,
    advantages, and bias when given (token_ids and mask are indices and flags)."""


def check_fused_args(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    *,
    bias: Any,
    temperature: Any,
    entropy_coef: Any,
    agg: Any,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: Any,
    chunk_size: Any,
    array_type: Callable[[str, Any], Any] | None = None,
) -> FusedArgs:
    """Every metadata check of a fused head's call (spec S9.6, S11.1), in the order the reference and
    every backend apply them: cfg, the aggregation arguments, temperature > 0, a finite
    entropy_coef, chunk_size, then the arrays (`check_fused_shapes`)."""
    check_config(cfg)
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length, array_type=array_type)
    return FusedArgs(
        agg,
        norm_length,
        check_positive("temperature", temperature),
        check_real("entropy_coef", entropy_coef),
        check_chunk_size(chunk_size),
        check_fused_shapes(hidden, weight, token_ids, old_log_prob, advantages, mask, bias, array_type=array_type),
        (("hidden", hidden), ("weight", weight), ("old_log_prob", old_log_prob), ("advantages", advantages))
        + (() if bias is None else (("bias", bias),)),
    )
