"""Loss aggregation in JAX, with global normalizers (docs/spec.md clause S8).

Every mode is linear in the per-token losses, loss = sum_t c_t l_t, as in the reference
(`cegppo.aggregation_weights`). Normalizers may be Python numbers or (traced) 0-d arrays, so the
global counts of a sharded batch can be fed in under `jit` / `shard_map` (`global_counts`). The
arithmetic of normalizers and row counts is the backends' shared algorithm (`cegppo._backend_core`)
over JAX's primitives (`._ops`); the cross-device count (`global_counts`) is JAX's own.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from cegppo import _backend_core as core
from cegppo._validation import check_aggregation, check_aggregation_shapes, check_input_dtype

import jax
import jax.numpy as jnp

from ._common import as_bool_mask, check_array
from ._ops import OPS

__all__ = ["aggregate_loss", "aggregation_weights", "global_counts", "local_counts"]


def local_counts(mask: Any) -> tuple[jax.Array, jax.Array]:
    """(valid tokens, sequences with at least one valid token) of a (B, T) mask, as int32 0-d arrays.

    Unlike the reference (which returns Python ints) nothing is read back to the host, so this
    works under `jit` and never synchronises a device.
    """
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    return core.local_counts(OPS, m)


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
    """The aggregation weights c (B, T) with loss = sum(c * l) for mode `agg` (spec S8):

        c_t = m_t / ([n_i if per-row mean] * [N or S] * [L if by length])

    mode by mode as in `cegppo.aggregation_weights`, whose contract this is. N and S may be traced
    0-d arrays (e.g. from `global_counts`). `dtype` defaults to float64 with jax_enable_x64, else
    float32. `validate=True` checks the normalizers' values (spec S8.2) as `policy_loss` does
    (eager only).
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length, array_type=check_array)
    m = as_bool_mask(mask)
    check_aggregation_shapes(m)
    if validate:
        core.validate_normalizers(OPS, agg, m, num_tokens, num_seqs)
    dtype = jax.dtypes.canonicalize_dtype(np.float64 if dtype is None else dtype)
    return core.aggregation_weights(OPS, m, agg, num_tokens, num_seqs, norm_length, dtype)


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
        core.validate_loss(OPS, agg, m, loss, num_tokens, num_seqs)
    # sum(c * l) with the weights materialised (torch's sums first and divides once): equal up to rounding
    weights = core.aggregation_weights(OPS, m, agg, num_tokens, num_seqs, norm_length, dtype)
    (masked_loss,) = core.zero_masked(OPS, m, loss)
    return jnp.sum(weights * masked_loss)
