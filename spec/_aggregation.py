"""Loss aggregation over valid tokens, with global normalizers (docs/spec.md clause S8).

Every mode is linear in the per-token losses: loss = sum_t c_t l_t. `aggregation_weights` returns
the coefficients c_t, so the value (`aggregate_loss`) and the analytic gradient
(`policy_loss_grad`) come from one definition.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ._aggregation_modes import AGG_TABLE, agg_length
from ._arrays import as_bool_mask
from ._validation import (
    check_aggregation,
    check_aggregation_shapes,
    check_input_dtype,
    check_normalizer_value,
    require_finite,
)

__all__ = ["aggregate_loss", "aggregation_weights", "local_counts"]


def local_counts(mask: Any) -> tuple[int, int]:
    """(valid tokens, sequences with at least one valid token) of a (B, T) mask: the local normalizers."""
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    return int(m.sum()), int(m.any(axis=-1).sum())


def _denominator(name: str, value: Any, local: Any, dtype: np.dtype) -> Any:
    """The normalizer `value` (default: this batch's count `local`) as a divisor (spec S8.2, S8.4).

    The value rule is checked here, always (the reference has no device to synchronise): finite,
    >= 0, and 0 only when this batch has no valid token. That 0 is then divided by 1: the
    numerator is 0 as well, so the loss is 0 (spec S8.4), never 0/0 = NaN.
    """
    if value is not None:
        check_normalizer_value(name, float(np.asarray(value).reshape(())), int(local))
    den = np.asarray(local if value is None else value, dtype=dtype).reshape(())
    return np.where(den > 0, den, 1)


def aggregation_weights(
    mask: Any,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    dtype: Any = np.float64,
    validate: bool = False,
) -> np.ndarray:
    """The coefficients c (B, T) with loss = sum(c * l) for aggregation mode `agg` (spec S8).

        token-mean               c_t = m_t / N
        token-sum                c_t = m_t
        seq-mean-token-mean      c_t = m_t / (n_i S)      (rows with n_i = 0 get 0)
        seq-mean-token-sum       c_t = m_t / S
        seq-mean-token-sum-norm  c_t = m_t / (S L)        (Dr.GRPO, arXiv 2503.20783, Eq. 4)

    N = num_tokens (default: valid tokens in `mask`), S = num_seqs (default: rows of `mask` with at
    least one valid token), n_i = valid tokens of row i, L = norm_length (default T). Pass the
    global N and S of the whole batch (all micro-batches, all ranks) and the per-micro-batch losses
    sum to the full-batch loss (spec S8.3). `num_tokens` is read by token-mean only and `num_seqs`
    by the seq-mean modes only. `validate` is accepted for the backends' signature: the reference
    has no device to synchronise and checks the normalizers' values (spec S8.2) always.
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    dtype = np.dtype(dtype)
    mode = AGG_TABLE[agg]
    weights = m.astype(dtype)
    if mode.per_row_mean:
        per_row = weights.sum(axis=-1, keepdims=True)
        weights = weights / np.where(per_row > 0, per_row, 1)
    if mode.normalizer == "num_tokens":
        den = _denominator("num_tokens", num_tokens, m.sum(), dtype)
    elif mode.normalizer == "num_seqs":
        den = _denominator("num_seqs", num_seqs, m.any(axis=-1).sum(), dtype)
    else:
        return weights
    if mode.by_length:
        den = den * dtype.type(agg_length(norm_length, m.shape[-1]))
    return cast(np.ndarray, weights / den)


def aggregate_loss(
    per_token_loss: Any,
    mask: Any,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    validate: bool = False,
) -> np.ndarray:
    """Aggregate a (B, T) per-token loss over the valid tokens of `mask` (spec S8).

    Masked positions of `per_token_loss` may hold anything, NaN and inf included: they are
    selected away before any arithmetic (spec S9.3). `validate=True` also checks that the valid
    positions hold finite values (as `policy_loss`'s; the normalizers are checked always here).
    Returns a 0-d array.
    """
    loss = np.asarray(per_token_loss)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m, loss)
    check_input_dtype("per_token_loss", loss.dtype, floating_only=False)
    if validate:
        require_finite("per_token_loss", bool(np.all(np.isfinite(loss[m]))))
    dtype = np.result_type(loss.dtype, np.float32)
    weights = aggregation_weights(m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length, dtype=dtype)
    return cast(np.ndarray, np.sum(weights * np.where(m, loss, 0).astype(dtype)))
