"""The fused LM-head loss's arguments: their checks and their named result (docs/spec.md clauses S9.6, S11.1).

The reference and both backends call `check_fused_args` first, so every fused head refuses the same
calls, in the same order, with the same messages, and reads its options from one `FusedArgs`. Like
every check of `_validation`, these read metadata only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._family import family_member
from ._validation import (
    array_shape,
    check_aggregation,
    check_chunk_size,
    check_positive,
    check_real,
    dtype_kind,
)

__all__ = ["FusedArgs", "check_fused_args", "check_fused_shapes"]


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
    """Every metadata check of a fused head's call (spec S9.6, S11.1, S14.1), in the order the reference and
    every backend apply them: cfg (a config type of the family), the aggregation arguments (`agg=None`
    is the member's paper aggregation: token-mean for CE-GPPO), temperature > 0, a finite
    entropy_coef, chunk_size, then the arrays (`check_fused_shapes`)."""
    member = family_member(cfg)
    agg = member.paper_agg if agg is None else agg
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


def check_fused_shapes(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    bias: Any = None,
    *,
    array_type: Callable[[str, Any], Any] | None = None,
) -> tuple[int, int, int, int]:
    """Shapes and dtypes of the fused head's inputs (spec S11.1); returns (B, T, H, V).

    hidden (B, T, H), weight (V, H) with V >= 1 (the `nn.Linear` / `lm_head.weight` layout), bias
    (V,), token_ids, old_log_prob and mask (B, T), advantages (B, T) or (B,); hidden, weight and
    bias floating-point, token_ids integer. Metadata only. `array_type` is a backend's own check
    that an argument is one of its array types (TypeError otherwise), applied first to each.
    """
    if array_type is not None:
        named = (("hidden", hidden), ("weight", weight), ("token_ids", token_ids),
                 ("old_log_prob", old_log_prob), ("advantages", advantages), ("mask", mask), ("bias", bias))
        for name, x in named:
            if not (name == "bias" and x is None):  # bias is optional
                array_type(name, x)
    for name, x in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if x is not None and dtype_kind(x.dtype) != "float":
            raise TypeError(f"{name} must be floating-point, got dtype {x.dtype}")
    hs = array_shape("hidden", hidden)
    if len(hs) != 3:
        raise ValueError(f"hidden must have shape (B, T, H), got shape {hs}")
    b_, t_, h_ = hs
    ws = array_shape("weight", weight)
    if len(ws) != 2 or ws[1] != h_ or ws[0] < 1:
        raise ValueError(f"weight must have shape (V, H) with H = {h_} (like lm_head.weight), got shape {ws}")
    v_ = ws[0]
    if bias is not None and array_shape("bias", bias) != (v_,):
        raise ValueError(f"bias must have shape ({v_},), got shape {array_shape('bias', bias)}")
    ids = array_shape("token_ids", token_ids)
    if ids != (b_, t_):
        raise ValueError(f"token_ids must have shape {(b_, t_)} (B, T), got shape {ids}")
    if dtype_kind(token_ids.dtype) != "int":
        raise TypeError(f"token_ids must be integer, got dtype {token_ids.dtype}")
    for name, x in (("old_log_prob", old_log_prob), ("mask", mask)):
        if array_shape(name, x) != (b_, t_):
            raise ValueError(f"{name} must have shape {(b_, t_)} (B, T), got shape {array_shape(name, x)}")
    adv = array_shape("advantages", advantages)
    if adv not in ((b_, t_), (b_,)):
        raise ValueError(f"advantages must have shape {(b_, t_)} (per token) or {(b_,)} (per sequence), got shape {adv}")
    return b_, t_, h_, v_
