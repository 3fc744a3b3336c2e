"""The softmax head in JAX, chunked over rows: log-probs, entropy, first-order entropy change.

docs/spec.md clause S11 (after Cui et al. 2025, arXiv 2505.22617, and arXiv 2509.20712 Eq. 7).
Everything is over the last axis (the vocabulary, size V); leading axes are flattened to N rows.

Memory: a (N, V = 152k) logits array in bf16 is already large; an fp32 copy of it would be twice
that. `token_log_probs` and `entropy` therefore walk over row chunks (`lax.fori_loop` with
`dynamic_slice`), upcasting one (chunk, V) block at a time, and carry only per-row statistics
(the row max and log-sum-exp, O(N)) between the forward and the backward pass. Their gradients
are `jax.custom_vjp`s that rebuild softmax chunk by chunk and write the (N, V) cotangent, in the
logits' dtype, in place. No full-size fp32 array exists at any point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from cegppo._validation import check_chunk_size, check_id_range, check_logits_shapes

import jax
import jax.numpy as jnp

from ._common import as_float, check_array, compute_dtype, require_concrete

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "entropy", "entropy_change_first_order", "token_log_probs"]

DEFAULT_CHUNK_ELEMENTS: int = 1 << 24
"""With chunk_size=None a chunk holds at most this many logits (64 MiB in fp32): V = 152k gives 110 rows."""


# --------------------------------------------------------------------------------------------
# Argument handling (metadata only; spec S9.6)


def _chunk_rows(chunk_size: Any, n: int, v: int) -> int:
    rows = check_chunk_size(chunk_size)
    if rows is None:
        rows = max(1, DEFAULT_CHUNK_ELEMENTS // max(v, 1))
    return max(1, min(rows, n))


def _logits(logits: Any) -> tuple[jax.Array, np.dtype]:
    check_array("logits", logits)
    check_logits_shapes(logits)
    cdt = compute_dtype(("logits", logits))
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    # Kept in its own dtype (bf16 stays bf16): chunks are upcast one at a time.
    return jnp.asarray(logits), cdt


def _ids(ids: Any, logits: jax.Array, validate: bool) -> jax.Array:
    check_array("ids", ids)
    check_logits_shapes(logits, ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}")
    if validate:
        require_concrete("validate=True", ("ids", ids))
    # Host (NumPy) ids are range-checked always: it costs nothing. Device ids only with
    # validate=True (one host sync); unchecked, an out-of-range id gives a NaN log-prob, never a
    # silently wrong one.
    if (validate or isinstance(ids, np.ndarray)) and ids.size:
        check_id_range("ids", int(ids.min()), int(ids.max()), logits.shape[-1])
    return jnp.asarray(ids)


# --------------------------------------------------------------------------------------------
# The row-chunk loop


def _map_rows(
    fn: Callable[..., tuple[jax.Array, ...]],
    rows: Sequence[jax.Array],
    out_specs: Sequence[tuple[tuple[int, ...], Any]],
    chunk: int,
) -> tuple[jax.Array, ...]:
    """Apply the row-wise `fn` to chunks of `chunk` rows of every array in `rows` (leading axis N).

    Each output (N, ...) is written in place with `dynamic_update_slice`. When N is not a multiple
    of `chunk` the last chunk starts at N - chunk and recomputes a few rows of the previous one:
    `fn` is row-wise, so they are written with the same values (no padding copy of the logits).
    """
    n = rows[0].shape[0]
    if n <= chunk:
        return tuple(fn(*rows))
    num = -(-n // chunk)

    def body(i: jax.Array, outs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        start = jnp.minimum(i * chunk, n - chunk)
        res = fn(*(jax.lax.dynamic_slice_in_dim(x, start, chunk, axis=0) for x in rows))
        return tuple(jax.lax.dynamic_update_slice_in_dim(o, r, start, axis=0) for o, r in zip(outs, res, strict=True))

    init = tuple(jnp.zeros(shape, dtype) for shape, dtype in out_specs)
    return jax.lax.fori_loop(0, num, body, init)


def _row_stats(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logp, zmax, log_s) of one fp32/fp64 chunk, in the reference's exact order of operations:

    logp = (z - zmax) - log(sum(exp(z - zmax))), with zmax := 0 for a row whose max is not finite,
    and logp := -inf for an all -inf row (every token banned: no distribution, entropy 0).
    """
    zmax = jnp.max(z, axis=-1, keepdims=True)
    zmax = jnp.where(jnp.isfinite(zmax), zmax, jnp.zeros((), z.dtype))
    log_s = jnp.log(jnp.sum(jnp.exp(z - zmax), axis=-1, keepdims=True))
    zmax, log_s = zmax[..., 0], log_s[..., 0]
    return _logp_from_stats(z, zmax, log_s), zmax, log_s


def _logp_from_stats(z: jax.Array, zmax: jax.Array, log_s: jax.Array) -> jax.Array:
    return _shifted_minus_lse(z - zmax[:, None], log_s[:, None])


def _shifted_minus_lse(shifted: jax.Array, log_s: jax.Array) -> jax.Array:
    return jnp.where(jnp.isneginf(log_s), jnp.asarray(-jnp.inf, shifted.dtype), shifted - log_s)


def _p_logp(logp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(p, p log p) with 0 log 0 = 0 (banned tokens with -inf logits), select-then-multiply."""
    p = jnp.exp(logp)
    pos = p > 0
    zero = jnp.zeros((), logp.dtype)
    return p, jnp.where(pos, p * jnp.where(pos, logp, zero), zero)


def _gather(z: jax.Array, ids: jax.Array) -> jax.Array:
    v = z.shape[-1]
    ok = (ids >= 0) & (ids < v)
    za = jnp.take_along_axis(z, jnp.where(ok, ids, 0)[:, None], axis=-1)[:, 0]
    return jnp.where(ok, za, jnp.asarray(jnp.nan, z.dtype))


# --------------------------------------------------------------------------------------------
# token_log_probs: forward and custom backward


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _tlp(chunk: int, cdt: Any, z: jax.Array, ids: jax.Array) -> jax.Array:
    return _tlp_fwd(chunk, cdt, z, ids)[0]


def _tlp_fwd(chunk: int, cdt: Any, z: jax.Array, ids: jax.Array) -> tuple[jax.Array, tuple[Any, ...]]:
    n = z.shape[0]

    def fn(zc: jax.Array, ic: jax.Array) -> tuple[jax.Array, ...]:
        zc = zc.astype(cdt)
        _, zmax, log_s = _row_stats(zc)
        out = _shifted_minus_lse(_gather(zc, ic) - zmax, log_s)
        return out, zmax, log_s

    out, zmax, log_s = _map_rows(fn, (z, ids), [((n,), cdt)] * 3, chunk)
    return out, (z, ids, zmax, log_s)


def _tlp_bwd(chunk: int, cdt: Any, res: tuple[Any, ...], g: jax.Array) -> tuple[jax.Array, None]:
    z, ids, zmax, log_s = res
    v = z.shape[-1]

    def fn(zc: jax.Array, ic: jax.Array, mc: jax.Array, lc: jax.Array, gc: jax.Array) -> tuple[jax.Array]:
        p = jnp.exp(_logp_from_stats(zc.astype(cdt), mc, lc))
        onehot = (jnp.arange(v, dtype=ic.dtype)[None, :] == ic[:, None]).astype(cdt)
        return ((gc.astype(cdt)[:, None] * (onehot - p)).astype(z.dtype),)

    (dz,) = _map_rows(fn, (z, ids, zmax, log_s, g), [(z.shape, z.dtype)], chunk)
    return dz, None


_tlp.defvjp(_tlp_fwd, _tlp_bwd)


def token_log_probs(logits: Any, ids: Any, *, chunk_size: int | None = None, validate: bool = False) -> jax.Array:
    """log softmax(z)[a] for each position: log pi(a | s) = z_a - logsumexp(z)  (spec S11).

    Computed over row chunks with a custom VJP (see the module docstring), so a (N, V) logits
    array never gets a full-size fp32 copy, in the forward or the backward pass. The gradient is

        d log pi_a / d z_j = 1[j = a] - pi_j     (`cegppo.token_log_probs_grad`),

    returned in the logits' dtype.

    Args:
        logits: (..., V) floating-point logits z (bf16/fp16 are upcast chunk by chunk).
        ids: (...) integer token ids a in [0, V). NumPy ids are range-checked (ValueError);
            device ids only with validate=True, otherwise an out-of-range id gives NaN.
        chunk_size: rows per chunk, or None for at most DEFAULT_CHUNK_ELEMENTS logits per chunk.
        validate: range-check device ids too (reads them back: needs concrete arrays, not jit).

    Returns:
        (...) log-probs in the compute dtype (float32, or float64 for float64 logits with x64).
    """
    z, cdt = _logits(logits)
    a = _ids(ids, z, validate)
    lead, v = z.shape[:-1], z.shape[-1]
    n = math.prod(lead)
    if n == 0:
        return jnp.zeros(lead, cdt)
    chunk = _chunk_rows(chunk_size, n, v)
    return _tlp(chunk, cdt, z.reshape(n, v), a.reshape(n)).reshape(lead)


# --------------------------------------------------------------------------------------------
# entropy: forward and custom backward


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ent(chunk: int, cdt: Any, z: jax.Array) -> jax.Array:
    return _ent_fwd(chunk, cdt, z)[0]


def _ent_fwd(chunk: int, cdt: Any, z: jax.Array) -> tuple[jax.Array, tuple[Any, ...]]:
    n = z.shape[0]

    def fn(zc: jax.Array) -> tuple[jax.Array, ...]:
        logp, zmax, log_s = _row_stats(zc.astype(cdt))
        _, plogp = _p_logp(logp)
        return -jnp.sum(plogp, axis=-1), zmax, log_s

    h, zmax, log_s = _map_rows(fn, (z,), [((n,), cdt)] * 3, chunk)
    return h, (z, zmax, log_s, h)


def _ent_bwd(chunk: int, cdt: Any, res: tuple[Any, ...], g: jax.Array) -> tuple[jax.Array]:
    z, zmax, log_s, h = res

    def fn(zc: jax.Array, mc: jax.Array, lc: jax.Array, hc: jax.Array, gc: jax.Array) -> tuple[jax.Array]:
        p, plogp = _p_logp(_logp_from_stats(zc.astype(cdt), mc, lc))
        return ((gc.astype(cdt)[:, None] * -(plogp + p * hc[:, None])).astype(z.dtype),)

    (dz,) = _map_rows(fn, (z, zmax, log_s, h, g), [(z.shape, z.dtype)], chunk)
    return (dz,)


_ent.defvjp(_ent_fwd, _ent_bwd)


def entropy(logits: Any, *, chunk_size: int | None = None) -> jax.Array:
    """Shannon entropy of softmax(z) in nats: H = -sum_j pi_j log pi_j, shape (...)  (spec S11).

    Chunked over rows with a custom VJP like `token_log_probs`; the gradient is

        d H / d z_j = -pi_j (log pi_j + H)     (`cegppo.entropy_grad`),

    in the logits' dtype. -inf logits (banned tokens) contribute 0 log 0 = 0.
    """
    z, cdt = _logits(logits)
    lead, v = z.shape[:-1], z.shape[-1]
    n = math.prod(lead)
    if n == 0:
        return jnp.zeros(lead, cdt)
    chunk = _chunk_rows(chunk_size, n, v)
    return _ent(chunk, cdt, z.reshape(n, v)).reshape(lead)


def entropy_change_first_order(
    logits: Any, ids: Any, weight: Any, *, chunk_size: int | None = None, validate: bool = False
) -> jax.Array:
    """First-order entropy change when token a's logits take the step dz = weight (e_a - pi).

        dH = weight * ( -pi_a (log pi_a + H) + sum_j pi_j^2 (log pi_j + H) )

    The per-token form of arXiv 2509.20712 Eq. 7 (after arXiv 2505.22617): `weight` = eta * w,
    with w the token's weight in the objective (for CE-GPPO, w = c_t F_t A_t). Exact to first
    order: H(z + dz) - H(z) = dH + O(|dz|^2). A diagnostic: computed chunk by chunk, with no
    gradient (its inputs go through `lax.stop_gradient`).

    Args:
        logits: (..., V) logits z.
        ids: (...) sampled token ids a.
        weight: (...) step size along (e_a - pi), i.e. learning rate times loss weight.
        chunk_size: rows per chunk, or None (see `token_log_probs`).
        validate: range-check device ids (see `token_log_probs`).

    Returns:
        (...) first-order entropy change per position, in the compute dtype.
    """
    z, cdt = _logits(logits)
    a = _ids(ids, z, validate)
    check_array("weight", weight)
    check_logits_shapes(z, None, weight)
    w = jax.lax.stop_gradient(as_float("weight", weight, cdt, floating_only=False))
    z = jax.lax.stop_gradient(z)
    lead, v = z.shape[:-1], z.shape[-1]
    n = math.prod(lead)
    if n == 0:
        return jnp.zeros(lead, cdt)
    chunk = _chunk_rows(chunk_size, n, v)

    def fn(zc: jax.Array, ic: jax.Array, wc: jax.Array) -> tuple[jax.Array]:
        logp, _, _ = _row_stats(zc.astype(cdt))
        p, plogp = _p_logp(logp)
        h = -jnp.sum(plogp, axis=-1, keepdims=True)
        s = plogp + p * h  # s_j = pi_j (log pi_j + H); the entropy gradient is -s
        return (wc * (-_gather(s, ic) + jnp.sum(p * s, axis=-1)),)

    (dh,) = _map_rows(fn, (z.reshape(n, v), a.reshape(n), w.reshape(n)), [((n,), cdt)], chunk)
    return dh.reshape(lead)
