"""Loss aggregation in JAX, with global normalizers (docs/spec.md clause S8).

Every mode is linear in the per-token losses, loss = sum_t c_t l_t, as in the reference
(`cegppo.aggregation_weights`). Normalizers may be Python numbers or (traced) 0-d arrays, so the
global counts of a sharded batch can be fed in under `jit` / `shard_map` (`global_counts`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
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

import jax
import jax.numpy as jnp

from ._common import as_bool_mask, check_array, require_concrete

__all__ = ["aggregate_loss", "aggregation_weights", "global_counts", "local_counts"]


def local_counts(mask: Any) -> tuple[jax.Array, jax.Array]:
    """(valid tokens, sequences with at least one valid token) of a (B, T) mask, as int32 0-d arrays.

    Unlike the reference (which returns Python ints) nothing is read back to the host, so this
    works under `jit` and never synchronises a device.
    """
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    return jnp.sum(m, dtype=jnp.int32), jnp.sum(jnp.any(m, axis=-1), dtype=jnp.int32)


def global_counts(
    mask: Any, axis_name: Hashable | Sequence[Hashable] | None = None
) -> tuple[jax.Array, jax.Array]:
    """The normalizers (num_tokens, num_seqs) of the whole batch, for `policy_loss` (spec S8.3).

        num_tokens = sum over shards of sum_t m_t,   num_seqs = sum over shards of #{i : any_t m_it}

    - `axis_name=None`: the counts of `mask` itself. Under `jax.jit` on a globally sharded array
      (`jax.sharding.NamedSharding`) that already *is* the global count: jit sees the global
      array and XLA inserts the cross-device reduction, so plain `policy_loss(...)` needs no
      normalizers at all.
    - `axis_name="data"` (or a tuple of names): inside `shard_map` / `pmap`, where each program
      sees only its shard, the local counts are summed over that mapped axis with one `lax.psum`.
      Passing them to `policy_loss(..., num_tokens=n, num_seqs=s)` on every shard makes the
      per-shard losses add up (`lax.psum`) to the full-batch loss, and their gradients likewise.

    Args:
        mask: (B, T) bool (or integer 0/1) mask of valid tokens (the local shard inside shard_map).
        axis_name: a mapped axis name (or names) to reduce over, or None.

    Returns:
        (num_tokens, num_seqs): int32 0-d arrays.
    """
    n_tok, n_seq = local_counts(mask)
    if axis_name is None:
        return n_tok, n_seq
    return jax.lax.psum(n_tok, axis_name), jax.lax.psum(n_seq, axis_name)


def _denominator(value: Any, local: jax.Array, dtype: Any) -> jax.Array:
    """A normalizer the mode reads (default: this batch's count `local`) as a divisor (spec S8.2).

    Traceable, and nothing is read back to the host:

        den > 0                               -> den
        den = 0 and this batch has no token   -> 1   (the numerator is 0 too: loss 0, spec S8.4)
        anything else (0 with valid tokens, negative, NaN)  -> NaN, so the loss is NaN

    Never silently 1: a bad normalizer poisons the loss instead. Python and NumPy values were
    already checked (finite, >= 0) by `cegppo._validation.check_normalizer`; `policy_loss(...,
    validate=True)` raises ValueError for the rest (`_validate_normalizers`).
    """
    loc = jnp.asarray(local).astype(dtype)
    den = loc if value is None else jnp.reshape(jnp.asarray(value).astype(dtype), ())
    one = jnp.ones((), dtype)
    nan = jnp.full((), jnp.nan, dtype)
    return jnp.where(den > 0, den, jnp.where((den == 0) & (loc == 0), one, nan))


def _validate_normalizers(agg: str, m: jax.Array, num_tokens: Any, num_seqs: Any) -> None:
    """validate=True: the value rule of spec S8.2 on the normalizers `agg` reads (reads the data)."""
    for name, value in read_normalizers(agg, num_tokens, num_seqs):
        if value is None:
            continue
        require_concrete("validate=True", (name, value), ("mask", m))
        m_host = np.asarray(m)
        local = m_host.sum() if name == "num_tokens" else m_host.any(axis=-1).sum()
        check_normalizer_value(name, float(np.asarray(value).reshape(())), int(local))


def _divisor(m: jax.Array, agg: str, num_tokens: Any, num_seqs: Any, norm_length: float | None,
             dtype: Any) -> jax.Array | None:
    """N, S or S L: what mode `agg` divides by after any per-row mean (`AGG_TABLE`), None for token-sum."""
    mode = AGG_TABLE[agg]
    if mode.normalizer is None:
        return None
    if mode.normalizer == "num_tokens":
        den = _denominator(num_tokens, jnp.sum(m, dtype=dtype), dtype)
    else:
        den = _denominator(num_seqs, jnp.sum(jnp.any(m, axis=-1), dtype=dtype), dtype)
    return den * np.asarray(agg_length(norm_length, m.shape[-1]), dtype) if mode.by_length else den


def _row_counts(m: jax.Array, dtype: Any, keepdims: bool = False) -> jax.Array:
    """n_i, the valid tokens of each row, with 1 for an empty row (whose sum is 0 anyway)."""
    per_row = jnp.sum(m, axis=-1, dtype=dtype, keepdims=keepdims)
    return jnp.where(per_row > 0, per_row, jnp.ones((), dtype))


def _weights(
    m: jax.Array,
    agg: str,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: float | None,
    dtype: Any,
) -> jax.Array:
    """The coefficients c (B, T) of mode `agg` (`AGG_TABLE`), no checks."""
    c = m.astype(dtype)
    if AGG_TABLE[agg].per_row_mean:
        c = c / _row_counts(m, dtype, keepdims=True)
    den = _divisor(m, agg, num_tokens, num_seqs, norm_length, dtype)
    return c if den is None else c / den


def _aggregate(
    per_token: jax.Array,
    m: jax.Array,
    agg: str,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: float | None,
) -> jax.Array:
    """sum_t c_t l_t for a per-token loss that is already 0 at masked positions (no checks).

    Sums first and divides once (the c of `_weights` is never materialised): the same value as
    sum(c * l) up to rounding, with one (B, T) array less to write and read.
    """
    dt = per_token.dtype
    if AGG_TABLE[agg].per_row_mean:  # each row's mean over its valid tokens, summed over rows
        total = jnp.sum(jnp.sum(per_token, axis=-1) / _row_counts(m, dt))
    else:
        total = jnp.sum(per_token)
    den = _divisor(m, agg, num_tokens, num_seqs, norm_length, dt)
    return total if den is None else total / den


def aggregation_weights(
    mask: Any,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    dtype: Any = None,
    validate: bool = False,
) -> jax.Array:
    """The coefficients c (B, T) with loss = sum(c * l) for aggregation mode `agg` (spec S8).

        token-mean               c_t = m_t / N
        token-sum                c_t = m_t
        seq-mean-token-mean      c_t = m_t / (n_i S)      (rows with n_i = 0 get 0)
        seq-mean-token-sum       c_t = m_t / S
        seq-mean-token-sum-norm  c_t = m_t / (S L)        (Dr.GRPO, arXiv 2503.20783, Eq. 4)

    N = num_tokens (default: valid tokens in `mask`), S = num_seqs (default: rows of `mask` with at
    least one valid token), n_i = valid tokens of row i, L = norm_length (default T). N and S may
    be traced 0-d arrays (e.g. from `global_counts`). `dtype` defaults to float64 with
    jax_enable_x64, else float32. `validate=True` checks the normalizers' values (spec S8.2) as
    `policy_loss` does (eager only).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length, array_type=check_array)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    if validate:
        _validate_normalizers(agg, m, num_tokens, num_seqs)
    dtype = jax.dtypes.canonicalize_dtype(np.float64 if dtype is None else dtype)
    return _weights(m, agg, num_tokens, num_seqs, norm_length, dtype)


def aggregate_loss(
    per_token_loss: Any,
    mask: Any,
    agg: str = "token-mean",
    *,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    validate: bool = False,
) -> jax.Array:
    """Aggregate a (B, T) per-token loss over the valid tokens of `mask` (spec S8): sum(c * l).

    Masked positions of `per_token_loss` may hold anything, NaN and inf included: they are
    selected away before any arithmetic, in the forward and the backward pass (spec S9.3).
    bf16/fp16 losses are aggregated in float32. Returns a 0-d array. `validate=True` also checks,
    as `policy_loss` does, that the valid positions are finite and the normalizers (S8.2) (eager only).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length, array_type=check_array)
    check_array("per_token_loss", per_token_loss)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m, per_token_loss)
    dt = np.dtype(per_token_loss.dtype)
    check_input_dtype("per_token_loss", dt, floating_only=False)
    dtype = jnp.result_type(dt, jnp.float32) if jnp.issubdtype(dt, jnp.floating) else np.dtype(np.float32)
    loss = jnp.asarray(per_token_loss).astype(dtype)
    if validate:
        require_concrete("validate=True", ("per_token_loss", per_token_loss), ("mask", m))
        require_finite("per_token_loss", bool(np.all(np.isfinite(np.asarray(loss)[np.asarray(m)]))))
        _validate_normalizers(agg, m, num_tokens, num_seqs)
    c = _weights(m, agg, num_tokens, num_seqs, norm_length, dtype)
    return jnp.sum(c * jnp.where(m, loss, jnp.zeros((), dtype)))
