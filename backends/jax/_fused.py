"""The fused LM-head loss of any family member with entropy in JAX: no (tokens x vocab) logits in memory.

    logits  z_t = (W h_t + b) / tau                                   (V,) per token, a chunk at a time
    log pi  l_t = z_t[a_t] - logsumexp(z_t),   H_t = -sum_j pi_tj log pi_tj          (spec S11)
    loss    = family_policy_loss(l, ...) - entropy_coef * aggregate_loss(H, ...)    (spec S3, S8, S14)

Same meaning as `cegppo.torch.fused_linear_policy_loss`. A `jax.custom_vjp` function walks the
tokens in chunks with `lax.scan`; under differentiation its forward pass also computes, chunk by
chunk, dloss/dz_t = (1/tau)[w_t (pi_t - e_{a_t}) + k_t pi_t (log pi_t + H_t)] (w_t = c_t F_t A_t,
k_t = entropy_coef c_t: both known once the chunk's log-softmax is) and contracts it with W and h
at once, so the backward pass only scales the stored gradients. jit-able; all shapes are static.
GSPO's F_t = s_i reads its whole row: a scan without gradients first gives every log-prob, s_i is
formed over the (B, T) rows, and the gradient scan reads F instead of forming it per chunk.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from cegppo import _backend_core as core
from cegppo._backend_family import elementwise_grad_weight, reads_row
from cegppo._config import CEGPPOConfig
from cegppo._fused_args import check_fused_args
from cegppo._metrics import ENTROPY_REGION_KEYS, FUSED_METRIC_KEYS
from cegppo._validation import check_id_range, require_finite

import jax
import jax.numpy as jnp

from ._aggregation import aggregate_loss
from ._common import as_bool_mask, as_float, check_array, compute_dtype, require_concrete
from ._family import FAMILY, family_grad_weight, family_metrics, family_policy_loss
from ._objective import _grad_weight, _regions
from ._ops import OPS

__all__ = ["DEFAULT_CHUNK_BYTES", "FUSED_METRIC_KEYS", "fused_linear_policy_loss"]

DEFAULT_CHUNK_BYTES: int = 64 << 20
"""Default chunk: as many token rows as fit (rows x V) logits in 64 MiB of the compute dtype."""

_WEIGHT_GRAD_BLOCK_BYTES: int = 16 << 20
"""Vocabulary block of the weight-gradient update: (rows of W) x H of about 16 MiB.

`gw + g.T @ h` in one expression makes XLA hold the (V, H) product as a temporary beside the
(V, H) accumulator: 519 MiB more XLA scratch at V = 151936, H = 896 (583 MiB in all at
440 x 896 x 151936, against 192 MiB in blocks, at equal speed; docs/fused.md, "Measured")."""


def _add_weight_grad(gw: jax.Array, g: jax.Array, hidden_chunk: jax.Array, dt: Any) -> jax.Array:
    """gw + g^T hidden_chunk, (V, H), accumulated block by block over the vocabulary (V) in place.

    A `fori_loop` over whole blocks (dynamic slices), then the remainder: a Python loop of
    static slices would not do, XLA schedules all their products before the first add."""
    v, h_dim = gw.shape
    blk = max(1, _WEIGHT_GRAD_BLOCK_BYTES // (h_dim * gw.dtype.itemsize))
    if blk >= v:
        return gw + jnp.dot(g.T, hidden_chunk, preferred_element_type=dt)

    def block(k: jax.Array, acc: jax.Array) -> jax.Array:
        v0 = k * blk
        gk = jax.lax.dynamic_slice_in_dim(g, v0, blk, axis=1)
        upd = jax.lax.dynamic_slice_in_dim(acc, v0, blk, axis=0) + jnp.dot(gk.T, hidden_chunk, preferred_element_type=dt)
        return jax.lax.dynamic_update_slice_in_dim(acc, upd, v0, axis=0)

    n_full = v // blk
    gw = jax.lax.fori_loop(0, n_full, block, gw)
    if n_full * blk < v:
        rest = slice(n_full * blk, v)
        gw = gw.at[rest].add(jnp.dot(g[:, rest].T, hidden_chunk, preferred_element_type=dt))
    return gw


def _chunk_grad_weight(lp: jax.Array, olp: jax.Array, adv: jax.Array, cfg: Any) -> jax.Array:
    """F_t of a chunk's tokens (spec S4, S14) for a member whose F is elementwise."""
    if isinstance(cfg, CEGPPOConfig):
        logr = lp - olp
        return _grad_weight(logr, _regions(logr, adv, cfg), cfg)
    return elementwise_grad_weight(OPS, cfg)(lp, olp, adv)


def _policy_weight(
    lp: jax.Array, olp: jax.Array, adv: jax.Array, agg_weight: jax.Array, cfg: Any, row_weight: jax.Array | None
) -> jax.Array:
    """w_t = c_t F_t A_t = -d loss / d log_prob_t (spec S4, S8, S14); exactly 0 where A_t = 0 (or c_t = 0).

    F is `row_weight` when given (formed over whole rows first: GSPO), else the chunk's own."""
    f = _chunk_grad_weight(lp, olp, adv, cfg) if row_weight is None else row_weight
    zero = jnp.zeros((), lp.dtype)
    objective_grad = jnp.where(adv == 0, zero, f * jnp.where(adv == 0, jnp.ones((), lp.dtype), adv))  # F_t A_t
    return jnp.where(agg_weight == 0, zero, agg_weight * objective_grad)


def _chunk_stats(
    statics: tuple[Any, ...],
    with_grad: bool,
    w: jax.Array,
    b: jax.Array | None,
    hidden_chunk: jax.Array,
    ids_chunk: jax.Array,
    old_log_prob_chunk: jax.Array,
    adv_chunk: jax.Array,
    agg_weight_chunk: jax.Array,
    row_weight_chunk: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """One chunk: (logp, H, dH) per row and, with_grad, G = dloss/dz (rows, V) in the compute dtype."""
    cfg, inv_t, ecoef, dt, _ = statics
    z = jnp.dot(hidden_chunk, w.T, preferred_element_type=dt)
    if b is not None:
        z = z + b.astype(dt)
    if inv_t != 1.0:
        z = z * np.asarray(inv_t, dt)
    # log-softmax written out rather than jax.nn.log_softmax: with the max-shift inside one
    # expression, XLA:CPU (jax 0.10) fuses the GEMM with the row max and the subtraction into one
    # YNN fusion that runs ~3x slower than the bare GEMM (benchmarks/bench_fused_head.py). Here
    # the logits feed a reduction and elementwise ops separately and the GEMM stays on its own.
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    lse = m + jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True))
    ls = z - lse
    lp = jnp.take_along_axis(ls, ids_chunk[:, None], axis=-1)[:, 0]
    p = jnp.exp(ls)
    ent = -jnp.sum(p * ls, axis=-1)
    s = p * (ls + ent[:, None])  # s_j = pi_j (log pi_j + H); dH/dz = -s
    s_a = jnp.take_along_axis(s, ids_chunk[:, None], axis=-1)[:, 0]
    wt = _policy_weight(lp, old_log_prob_chunk, adv_chunk, agg_weight_chunk, cfg, row_weight_chunk)
    dent = wt * (jnp.sum(p * s, axis=-1) - s_a)  # spec S11: first-order dH along w (e_a - pi)
    if not with_grad:
        return lp, ent, dent
    onehot = jnp.arange(z.shape[-1], dtype=ids_chunk.dtype)[None, :] == ids_chunk[:, None]
    g = wt[:, None] * (p - onehot.astype(dt))
    if ecoef != 0.0:
        g = g + (agg_weight_chunk * np.asarray(ecoef, dt))[:, None] * s
    if inv_t != 1.0:
        g = g * np.asarray(inv_t, dt)
    return lp, ent, dent, g


def _scan(
    statics: tuple[Any, ...],
    rows: int,
    with_grad: bool,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    ids: jax.Array,
    olp: jax.Array,
    adv: jax.Array,
    agg_weight: jax.Array,
    row_weight: jax.Array | None,
) -> tuple[Any, ...]:
    """lax.scan over chunks of `rows` tokens (h already padded to a multiple of rows)."""
    dt = statics[3]
    n_pad, h_dim = h.shape
    n_chunks = n_pad // rows
    xs = (
        h.reshape(n_chunks, rows, h_dim),
        ids.reshape(n_chunks, rows),
        olp.reshape(n_chunks, rows),
        adv.reshape(n_chunks, rows),
        agg_weight.reshape(n_chunks, rows),
    ) + (() if row_weight is None else (row_weight.reshape(n_chunks, rows),))
    if not with_grad:

        def fwd_body(carry: None, x: tuple[jax.Array, ...]) -> tuple[None, tuple[jax.Array, ...]]:
            return carry, _chunk_stats(statics, False, w, b, *x)

        _, (lp, ent, dent) = jax.lax.scan(fwd_body, None, xs)
        return lp.reshape(-1), ent.reshape(-1), dent.reshape(-1)

    mm_dt = w.dtype

    def body(
        carry: tuple[jax.Array, jax.Array | None], x: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, jax.Array | None], tuple[jax.Array, ...]]:
        gw, gb = carry
        lp, ent, dent, g = _chunk_stats(statics, True, w, b, *x)
        gm = g.astype(mm_dt)
        gh = jnp.dot(gm, w, preferred_element_type=dt)
        gw = _add_weight_grad(gw, gm, x[0], dt)
        if gb is not None:
            gb = gb + jnp.sum(g, axis=0)
        return (gw, gb), (lp, ent, dent, gh)

    gw0 = jnp.zeros(w.shape, dt)
    gb0 = None if b is None else jnp.zeros(b.shape, dt)
    (gw, gb), (lp, ent, dent, gh) = jax.lax.scan(body, (gw0, gb0), xs)
    return lp.reshape(-1), ent.reshape(-1), dent.reshape(-1), gh.reshape(n_pad, h_dim), gw, gb


def _row_grad_weight(
    statics: tuple[Any, ...], rows: int, scanned: tuple[Any, ...], batch: tuple[jax.Array, jax.Array, jax.Array, Any]
) -> jax.Array:
    """F of every (padded, flat) token for a member whose F reads its whole row (GSPO's s_i, spec S14.4).

    A scan without gradients over `scanned` = (h, w, b, ids, old_log_prob, A, c), the gradient scan's
    operands, gives every log-prob (its own arithmetic), then F is formed over the (B, T) rows at once;
    `batch` is (old_log_prob, advantages, mask, cfg) as the caller gave them.
    """
    olp, adv, m, cfg = batch
    sg = jax.lax.stop_gradient
    h, w, b, ids, olp_f, adv_f, agg_weight_f = scanned
    inert = jnp.zeros_like(olp_f)  # F of the log-prob pass, whose dH is not read
    lp = _scan(statics, rows, False, sg(h), sg(w), None if b is None else sg(b), ids, olp_f, adv_f, agg_weight_f, inert)[0]
    n = m.size
    lp_full = jnp.where(m, lp[:n].reshape(m.shape), jnp.zeros((), lp.dtype))
    f = jnp.where(m, family_grad_weight(lp_full, olp, adv, m, cfg), jnp.zeros((), lp.dtype)).reshape(-1)
    return sg(jnp.pad(f, (0, lp.shape[0] - n)))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused_core(
    statics: tuple[Any, ...],
    rows: int,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    ids: jax.Array,
    olp: jax.Array,
    adv: jax.Array,
    agg_weight: jax.Array,
    row_weight: jax.Array | None,
) -> tuple[jax.Array, ...]:
    """(carrier, logp, H, dH): carrier is a 0.0 whose VJP carries the gradient of the loss."""
    lp, ent, dent = _scan(statics, rows, False, h, w, b, ids, olp, adv, agg_weight, row_weight)
    return jnp.zeros((), statics[3]), lp, ent, dent


def _fused_core_fwd(
    statics: tuple[Any, ...],
    rows: int,
    h: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    ids: jax.Array,
    olp: jax.Array,
    adv: jax.Array,
    agg_weight: jax.Array,
    row_weight: jax.Array | None,
) -> tuple[tuple[jax.Array, ...], tuple[Any, ...]]:
    lp, ent, dent, gh, gw, gb = _scan(statics, rows, True, h, w, b, ids, olp, adv, agg_weight, row_weight)
    return (jnp.zeros((), statics[3]), lp, ent, dent), (gh, gw, gb, row_weight is not None)


def _fused_core_bwd(
    statics: tuple[Any, ...], rows: int, res: tuple[Any, ...], cts: tuple[jax.Array, ...]
) -> tuple[Any, ...]:
    gh, gw, gb, has_row_weight = res
    mm_dt = statics[4]
    g = cts[0]  # logp, H, dH are diagnostics: their cotangents are ignored (they are stop-gradient'ed)
    out_h = (g.astype(gh.dtype) * gh).astype(mm_dt)
    out_w = (g.astype(gw.dtype) * gw).astype(mm_dt)
    out_b = None if gb is None else (g.astype(gb.dtype) * gb).astype(mm_dt)
    n_pad = gh.shape[0]
    zeros = jnp.zeros((n_pad,), statics[3])
    # row_weight is a constant of the loss (GSPO's sg(s_i), spec S14.4): a zero cotangent
    out_f = zeros if has_row_weight else None
    return (out_h, out_w, out_b, np.zeros((n_pad,), dtype=jax.dtypes.float0), zeros, zeros, zeros, out_f)


_fused_core.defvjp(_fused_core_fwd, _fused_core_bwd)


def fused_linear_policy_loss(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    *,
    bias: Any = None,
    temperature: float = 1.0,
    entropy_coef: float = 0.0,
    agg: str | None = None,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    chunk_size: int | None = None,
    validate: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The policy loss of any family member with entropy bonus straight from hidden states, without logits.

        z_t   = (W h_t + b) / temperature                  logits of token t, (V,)
        l_t   = log softmax(z_t)[a_t],   H_t = -sum_j pi_tj log pi_tj           (spec S11)
        loss  = family_policy_loss(l, old_log_prob, A, mask, cfg, agg, ...)     (spec S3, S8, S14)
                - entropy_coef * aggregate_loss(H, mask, agg, ...)              (same c_t)

    For a `CEGPPOConfig` the policy term is `policy_loss` (arXiv 2509.20712 Eq. 8). Value and
    gradients (w.r.t. hidden, weight, bias via `jax.grad`) equal the unfused path (full logits ->
    `token_log_probs` / `entropy` -> `family_policy_loss`) up to rounding. GSPO, whose
    F_t = s_i reads the whole row, first scans the chunks without gradients for its log-probs. A `jax.custom_vjp` function walks the B*T tokens in chunks of `chunk_size` rows with
    `lax.scan` (the last chunk padded with inert rows); under differentiation the same pass forms
    dloss/dz_t = (1/tau)[w_t (pi - e_a) + k_t pi (log pi + H_t)], w_t = c_t F_t A_t,
    k_t = entropy_coef c_t, and contracts it with W and h, so the backward pass only scales the
    stored gradients and no (tokens x V) array exists. Masked tokens may hold garbage in every
    input (hidden, token_ids -100, NaN log-probs): they are replaced by inert values first.

    jit: `cfg`, `agg`, `norm_length`, `temperature`, `entropy_coef`, `chunk_size` and `validate` are
    static Python values (close over them); `num_tokens` / `num_seqs` may be traced, e.g. from
    `global_counts` inside `shard_map` (then `lax.psum` the losses). bf16/fp16 hidden and weight
    use GEMMs in that dtype with float32 results (`preferred_element_type`); the softmax and the
    gradient accumulation run in float32; float64 stays float64 with `jax_enable_x64`. Gradients
    come back in the inputs' dtypes. `bias` must be finite.

    Args:
        hidden: (B, T, H) last hidden states, row t predicting token_ids[:, t].
        weight: (V, H) LM-head weight (the `lm_head.weight` / `nn.Linear` layout).
        token_ids: (B, T) integer sampled tokens in [0, V) at valid positions.
        old_log_prob: (B, T) rollout log-probs (a constant).
        advantages: (B, T) or (B,) (a constant).
        mask: (B, T) bool or integer 0/1.
        cfg: a `cegppo.CEGPPOConfig` or any family config (spec S14.1).
        bias: optional (V,) LM-head bias.
        temperature: tau > 0 dividing the logits.
        entropy_coef: coefficient of the entropy bonus (entropy metrics are computed regardless).
        agg, num_tokens, num_seqs, norm_length: aggregation as in `family_policy_loss` (spec S8):
            `agg=None` is the member's paper aggregation (token-mean for CE-GPPO and CISPO).
        chunk_size: token rows per chunk (default: rows x V fits DEFAULT_CHUNK_BYTES).
        validate: check token ids in [0, V), finite values at valid positions and the
            normalizers (spec S8.2) (eager only).

    Returns:
        (loss, metrics): `loss` 0-d in the compute dtype; `metrics` maps FUSED_METRIC_KEYS to 0-d
        arrays: `family_metrics`' keys (`policy_metrics`' for CE-GPPO), `entropy_mean` (mean H_t
        over valid tokens) and `entropy_change_<region>` for clip_low, clip_high, dual_clip, inside:
        the sum over the valid tokens of the member's region (spec S14.1) of `entropy_change_first_order(z_t, a_t, w_t)` (spec S11,
        arXiv 2509.20712 Eq. 7) with w_t = c_t F_t A_t = -dloss/dl_t, the token's weight on its
        logit direction (e_a - pi) in the policy part of the loss (entropy bonus excluded):
        w_t [-pi_a (log pi_a + H_t) + sum_j pi_j^2 (log pi_j + H_t)], the first-order entropy change
        of a unit-learning-rate gradient step taken on each token's logits. No gradient flows
        through the metrics.
    """
    args = check_fused_args(
        hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, bias=bias, temperature=temperature,
        entropy_coef=entropy_coef, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length,
        chunk_size=chunk_size, array_type=check_array,
    )  # fmt: skip
    agg, norm_length, tau, ecoef, chunk_size = args[:5]
    b_, t_, h_, v_ = args.shape
    dt = compute_dtype(*args.float_inputs)
    m = as_bool_mask(mask)
    # old_log_prob and advantages are constants (spec S4): no gradient flows into them, even traced
    olp = jax.lax.stop_gradient(as_float("old_log_prob", old_log_prob, dt))
    adv = jax.lax.stop_gradient(as_float("advantages", advantages, dt, floating_only=False))
    adv_bt = jnp.broadcast_to(adv[:, None], (b_, t_)) if adv.ndim == 1 else adv
    mm_dt = jnp.result_type(hidden.dtype, weight.dtype, *(() if bias is None else (bias.dtype,)))
    if np.dtype(mm_dt) not in (np.dtype(jnp.bfloat16), np.dtype(jnp.float16)):
        mm_dt = dt
    if validate:
        core.validate_normalizers(OPS, agg, m, num_tokens, num_seqs)
        require_concrete("validate=True", ("token_ids", token_ids), ("mask", m), ("old_log_prob", olp))
    # Host (NumPy) token ids are range-checked always, as `token_log_probs` does (it costs no device
    # sync); device ids only with validate=True (unchecked, an out-of-range id gives a NaN loss).
    if validate or isinstance(token_ids, np.ndarray):
        m_host = np.asarray(m)
        ids_host = np.asarray(token_ids)[m_host]
        if ids_host.size:
            check_id_range("token_ids", int(ids_host.min()), int(ids_host.max()), v_, valid_only=True)
    if validate:
        for name, arr in (("old_log_prob", olp), ("advantages", adv_bt)):
            require_finite(name, bool(np.all(np.isfinite(np.asarray(arr)[m_host]))))
    agg_weight = core.aggregation_weights(OPS, m, agg, num_tokens, num_seqs, norm_length, dt)
    n = b_ * t_
    itemsize = np.dtype(dt).itemsize
    rows = chunk_size if chunk_size is not None else max(1, DEFAULT_CHUNK_BYTES // (v_ * itemsize))
    rows = max(1, min(rows, n))
    n_pad = -(-n // rows) * rows if n else 0
    pad = n_pad - n
    mf = m.reshape(-1)
    zero = jnp.zeros((), dt)
    # Inert rows for masked (and padding) positions: hidden 0, id 0, A = 0, c = 0, so no garbage
    # reaches any arithmetic (spec S9.3) and their gradient rows are exactly 0.
    h = jnp.where(mf[:, None], jnp.asarray(hidden).reshape(n, h_), jnp.zeros((), hidden.dtype)).astype(mm_dt)
    ids = jnp.where(mf, jnp.asarray(token_ids).reshape(-1), 0).astype(jnp.int32)
    olp_f = jnp.where(mf, olp.reshape(-1), zero)
    adv_f = jnp.where(mf, adv_bt.reshape(-1), zero)
    agg_weight_f = jnp.where(mf, agg_weight.reshape(-1), zero)
    if pad:
        h = jnp.pad(h, ((0, pad), (0, 0)))
        ids, olp_f, adv_f, agg_weight_f = (jnp.pad(x, (0, pad)) for x in (ids, olp_f, adv_f, agg_weight_f))
    statics = (cfg, 1.0 / tau, ecoef, np.dtype(dt), np.dtype(mm_dt))
    w = jnp.asarray(weight).astype(mm_dt)
    b = None if bias is None else jnp.asarray(bias).astype(mm_dt)
    row_weight = None
    if n_pad and reads_row(cfg):
        row_weight = _row_grad_weight(statics, rows, (h, w, b, ids, olp_f, adv_f, agg_weight_f), (olp, adv, m, cfg))
    if n_pad:
        carrier, lp, ent, dent = _fused_core(statics, rows, h, w, b, ids, olp_f, adv_f, agg_weight_f, row_weight)
    else:  # no token at all (T = 0 or B = 0): loss 0, zero gradients
        carrier = jnp.zeros((), dt) * (jnp.sum(h) + jnp.sum(w) + (0 if b is None else jnp.sum(b))).astype(dt)
        lp = ent = dent = jnp.zeros((0,), dt)
    lp_full = jnp.where(m, jax.lax.stop_gradient(lp[:n]).reshape(b_, t_), zero)
    ent_full = jnp.where(m, jax.lax.stop_gradient(ent[:n]).reshape(b_, t_), zero)
    dent_full = jnp.where(m, jax.lax.stop_gradient(dent[:n]).reshape(b_, t_), zero)
    # The value reuses this backend's own policy_loss / aggregate_loss on the fused log-probs and
    # entropies (same semantics by construction); the carrier (value 0) brings the gradient.
    loss = family_policy_loss(lp_full, olp, adv, m, cfg, agg, num_tokens, num_seqs, norm_length=norm_length)
    if ecoef != 0.0:
        loss = loss - ecoef * aggregate_loss(
            ent_full, m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
        )
    loss = loss + carrier
    metrics = family_metrics(lp_full, olp, adv, m, cfg)
    den = jnp.maximum(jnp.sum(m, dtype=dt), jnp.ones((), dt))
    metrics["entropy_mean"] = jnp.sum(ent_full) / den
    regions = FAMILY[type(cfg)].regions(lp_full, olp, adv, m, cfg)  # the member's (spec S10, S14.1)
    for key, region in zip(ENTROPY_REGION_KEYS, regions, strict=True):
        metrics[key] = jnp.sum(jnp.where(region & m, dent_full, zero))
    return loss, metrics
