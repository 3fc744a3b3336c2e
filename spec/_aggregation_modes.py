"""The aggregation modes of docs/spec.md clause S8 as a table: what each mode divides by.

Every implementation reads `AGG_TABLE` and keeps only its own arithmetic, so which count a mode
divides by is written once, here (the reference, both backends and the conformance kit read it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["AGG_MODES", "AGG_TABLE", "AggMode", "agg_length", "read_normalizers"]


class AggMode(NamedTuple):
    """How one aggregation mode forms its aggregation weights (spec S8):

        c_t = m_t / ([n_i if per_row_mean] * [N or S, the normalizer] * [L if by_length])
    """

    normalizer: str | None
    """The global normalizer the mode divides by: "num_tokens" (N), "num_seqs" (S) or None."""
    per_row_mean: bool
    """Divide each row by its own number of valid tokens n_i first (rows with n_i = 0 get 0)."""
    by_length: bool
    """Also divide by the constant length L (`norm_length`, default T; Dr.GRPO, arXiv 2503.20783 Eq. 4)."""


AGG_TABLE: dict[str, AggMode] = {
    "token-mean": AggMode("num_tokens", per_row_mean=False, by_length=False),
    "token-sum": AggMode(None, per_row_mean=False, by_length=False),
    "seq-mean-token-mean": AggMode("num_seqs", per_row_mean=True, by_length=False),
    "seq-mean-token-sum": AggMode("num_seqs", per_row_mean=False, by_length=False),
    "seq-mean-token-sum-norm": AggMode("num_seqs", per_row_mean=False, by_length=True),
}
"""The aggregation modes of spec clause S8, named as in verl, and what each divides by."""

AGG_MODES: tuple[str, ...] = tuple(AGG_TABLE)
"""Loss aggregation modes, named as in verl (spec clause S8)."""


def agg_length(norm_length: float | None, width: int) -> float:
    """L of seq-mean-token-sum-norm (spec S8.2): `norm_length`, default the padded width T.

    A width of 0 (no token at all) gives 1, so an empty batch divides 0 by 1, never by 0.
    """
    return float(max(width, 1)) if norm_length is None else float(norm_length)


def read_normalizers(agg: str, num_tokens: Any, num_seqs: Any) -> tuple[tuple[str, Any], ...]:
    """The normalizers that aggregation mode `agg` reads, as (name, value) pairs (spec S8.2).

    token-mean reads `num_tokens`, the seq-mean modes read `num_seqs`, token-sum reads neither
    (`AGG_TABLE`).
    """
    name = AGG_TABLE[agg].normalizer
    if name is None:
        return ()
    return ((name, num_tokens if name == "num_tokens" else num_seqs),)
