"""The fused LM-head loss of any family member with entropy: no (tokens x vocab) logits in memory.

    logits  z_t = (W h_t + b) / tau                                   (V,) per token, never all at once
    log pi  l_t = z_t[a_t] - logsumexp(z_t)                           spec S11
    H_t     = -sum_j pi_tj log pi_tj                                   spec S11
    loss    = sum_t c_t (-J_t(l_t))  -  entropy_coef * sum_t c_t H_t   spec S3, S8, S14 (same c_t for both)

The tokens are walked in chunks of rows. For each chunk the logits are one GEMM; the per-token
gradient weight is known as soon as the chunk's log-softmax is: CE-GPPO's, CISPO's and SAPO's
weight F_t needs only l_t (and the constants old_log_prob, A, cfg), and the aggregation
coefficient c_t needs only the mask and the global normalizers, known before the loop. So ONE
pass computes the loss, the metrics AND the gradients w.r.t. hidden, weight and bias (as
Liger-Kernel does). GSPO's F_t = s_i reads every log-prob of its row, which later chunks may
hold: for it a first pass without gradients computes the log-probs, then s_i over whole rows, and
the gradient pass reads F from there (one more logits GEMM per chunk). Per chunk,

    dloss/dz_t = (1/tau) [ w_t (pi_t - e_{a_t}) + k_t pi_t (log pi_t + H_t) ]
    w_t = c_t F_t A_t   (= -dloss/dl_t, spec S4),   k_t = entropy_coef * c_t

then grad_hidden[chunk] = G W, grad_weight += G^T h, grad_bias += sum_rows G. The chunk buffer
is reused; the softmax algebra runs on sub-blocks of a few rows that stay in the CPU cache. The
backward pass only multiplies the stored gradients by the incoming scalar.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cegppo import _backend_core as core
from cegppo._backend_family import elementwise_grad_weight, reads_row
from cegppo._config import CEGPPOConfig
from cegppo._fused_args import check_fused_args
from cegppo._metrics import ENTROPY_REGION_KEYS, FUSED_METRIC_KEYS
from cegppo._validation import check_id_range, require_finite

import torch

from ._aggregation import aggregate_loss, aggregation_weights
from ._common import as_bool_mask, as_float, check_tensor, compute_dtype
from ._family import FAMILY, family_grad_weight, family_metrics, family_policy_loss
from ._objective import _grad_weight
from ._ops import OPS

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FUSED_METRIC_KEYS",
    "fused_linear_policy_loss",
]

DEFAULT_CHUNK_BYTES: int = 64 << 20
"""Default chunk: as many token rows as fit (rows x V) logits in 64 MiB of the compute dtype.

At V = 151936 this is 110 rows in float32, which keeps the step's peak growth within the weight
gradient + 128 MiB. Larger chunks are faster on CPU, at the cost of memory: every chunk streams
the weight twice and the weight gradient once, and the bare chunked GEMMs ran at 1.38x / 1.17x /
1.06x the full-size ones with 110 / 150 / 220 rows (docs/fused.md, "Measured"); pass
`chunk_size` to choose.
"""

_SUB_ROWS_BYTES: int = 2 << 20
"""Sub-block for the softmax algebra: rows x V of about 2 MiB, so it stays in L2/L3 cache."""

class _Plan(NamedTuple):
    """Everything the chunk loop needs besides the differentiable tensors (already checked)."""

    ids: torch.Tensor  # (Nv,) int64 token ids of the valid tokens
    old_log_prob: torch.Tensor  # (Nv,) compute dtype
    advantages: torch.Tensor  # (Nv,) compute dtype
    agg_weight: torch.Tensor  # (Nv,) aggregation weights c_t (spec S8)
    positions: torch.Tensor  # (Nv,) flat positions of the valid tokens in (B*T)
    grad_weight: Any  # (log_prob, old_log_prob, A) -> F of a chunk (spec S4, S14), or None: `row_weight`
    row_weight: torch.Tensor | None  # (Nv,) F computed over whole rows first (GSPO), else None
    inv_temp: float
    entropy_coef: float
    rows: int  # token rows per chunk
    dt: torch.dtype  # compute dtype (float32 or float64)


def _rowdot(x: torch.Tensor, y: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """sum_j x_ij y_ij per row, the product written into `scratch` (same shape, a cache-sized buffer).

    Multiply-then-sum beats a batched (1 x V) @ (V x 1) bmm by 3.5x on CPU (168 vs 599 us for
    3 x 151936 floats, one thread): the bmm runs as a batch of matrix-vector products."""
    return torch.mul(x, y, out=scratch).sum(-1)


def _policy_weight(lp: torch.Tensor, plan: _Plan, sl: slice) -> torch.Tensor:
    """w_t = c_t F_t A_t = -d loss / d log_prob_t (spec S4, S8, S14); exactly 0 where A_t = 0."""
    adv = plan.advantages[sl]
    f = plan.row_weight[sl] if plan.row_weight is not None else plan.grad_weight(lp, plan.old_log_prob[sl], adv)
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    objective_grad = torch.where(adv == 0, zero, f * torch.where(adv == 0, torch.ones_like(adv), adv))  # F_t A_t
    return plan.agg_weight[sl] * objective_grad


def _token_grad_weight(cfg: Any) -> Any:
    """F of a chunk from its (log_prob, old_log_prob, A) (spec S4, S14), or None for a member that `reads_row`."""
    if isinstance(cfg, CEGPPOConfig):
        return lambda lp, olp, adv: _grad_weight(lp - olp, adv, cfg)
    return None if reads_row(cfg) else elementwise_grad_weight(OPS, cfg)


def _row_grad_weight(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    plan: _Plan,
    shape: tuple[int, int],
    olp: torch.Tensor,
    adv: torch.Tensor,
    m: torch.Tensor,
    cfg: Any,
) -> torch.Tensor:
    """F of the valid tokens (Nv,) for a member whose F reads its whole row (GSPO's s_i, spec S14.4).

    A pass of the chunk loop without gradients gives every log-prob (the very arithmetic of the
    gradient pass, so both see the same l_t), then F is formed over the (B, T) rows at once.
    """
    with torch.no_grad():
        h, w, b = _gemm_operands(hidden, weight, bias, plan)
        inert = plan._replace(row_weight=torch.zeros_like(plan.old_log_prob))  # its dH is not read
        logp = _chunk_loop(h, w, b, inert, False, False, False)[0]
        lp_full = torch.zeros(shape[0] * shape[1], dtype=plan.dt, device=logp.device)
        lp_full = lp_full.index_copy(0, plan.positions, logp).view(shape)
        return family_grad_weight(lp_full, olp, adv, m, cfg).reshape(-1).index_select(0, plan.positions)


def _gemm_operands(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: _Plan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(valid rows of hidden (Nv, H), weight, bias) in the GEMM dtype: bf16/fp16 when the inputs are,
    else the compute dtype."""
    mm_dt = torch.promote_types(hidden.dtype, weight.dtype)
    if bias is not None:
        mm_dt = torch.promote_types(mm_dt, bias.dtype)
    if mm_dt not in (torch.bfloat16, torch.float16):
        mm_dt = plan.dt
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, plan.positions).to(mm_dt)
    return h, weight.to(mm_dt), None if bias is None else bias.to(mm_dt)


def _chunk_loop(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    plan: _Plan,
    need_h: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over the valid tokens: log-probs, entropies, entropy changes and all gradients.

    h: (Nv, H) in the GEMM dtype. Returns (logp, ent, dH, grad_h | None, grad_w | None, grad_b | None),
    per-token vectors (Nv,) and gradients in the compute dtype (grad_h (Nv, H), grad_w (V, H), grad_b (V,)).
    """
    dt, dev = plan.dt, h.device
    n_tok, _ = h.shape
    v = weight.shape[0]
    mm_dt = h.dtype
    half = mm_dt != dt  # bf16/fp16 GEMMs (fp32 accumulation inside the GEMM), softmax in float32
    need_grad = need_h or need_w or need_b
    logp = torch.empty(n_tok, dtype=dt, device=dev)
    ent = torch.empty(n_tok, dtype=dt, device=dev)
    dent = torch.empty(n_tok, dtype=dt, device=dev)
    grad_h = torch.empty(n_tok, h.shape[1], dtype=dt, device=dev) if need_h else None
    # zeros, then accumulate: writing the first chunk's product into an empty buffer instead was
    # measured no faster (the fill's cost is mostly first-touch page faults, paid either way).
    grad_w = torch.zeros(v, h.shape[1], dtype=dt, device=dev) if need_w else None
    grad_b = torch.zeros(v, dtype=dt, device=dev) if need_b else None
    if n_tok == 0:
        return logp, ent, dent, grad_h, grad_w, grad_b
    rows = min(plan.rows, n_tok)
    itemsize = torch.finfo(dt).bits // 8
    sub = max(1, min(rows, _SUB_ROWS_BYTES // max(1, v * itemsize)))
    zbuf = torch.empty(rows, v, dtype=dt, device=dev)
    lsbuf = torch.empty(sub, v, dtype=dt, device=dev)
    dotbuf = torch.empty(sub, v, dtype=dt, device=dev)
    colsum = torch.empty(v, dtype=dt, device=dev) if need_b else None
    inv_t, kcoef = plan.inv_temp, plan.entropy_coef
    wt = weight.t()
    bias_s = None
    if bias is not None:
        bias_s = bias if inv_t == 1.0 else bias * inv_t
    for i0 in range(0, n_tok, rows):
        n = min(rows, n_tok - i0)
        hidden_chunk = h[i0 : i0 + n]
        z = zbuf[:n]
        # z = (h W^T + b) / tau, the 1/tau folded into the GEMM's alpha/beta (no extra pass).
        if half:
            zc = torch.mm(hidden_chunk, wt) if bias is None else torch.addmm(bias, hidden_chunk, wt)
            z.copy_(zc)
            del zc
            if inv_t != 1.0:
                z.mul_(inv_t)
        elif bias_s is None:
            torch.mm(hidden_chunk, wt, out=z) if inv_t == 1.0 else torch.addmm(z, hidden_chunk, wt, beta=0, alpha=inv_t, out=z)
        else:
            torch.addmm(bias_s, hidden_chunk, wt, alpha=inv_t, out=z)
        for j0 in range(0, n, sub):
            r = min(sub, n - j0)
            sl = slice(i0 + j0, i0 + j0 + r)
            zs = z[j0 : j0 + r]
            ls = lsbuf[:r]
            a = plan.ids[sl].unsqueeze(1)
            torch.log_softmax(zs, -1, out=ls)  # log pi
            lp = ls.gather(1, a).view(-1)
            p = torch.exp(ls, out=zs)  # pi, written over the logits
            hs = -_rowdot(p, ls, dotbuf[:r])  # H = -sum pi log pi
            s = ls.add_(hs.unsqueeze(1)).mul_(p)  # s_j = pi_j (log pi_j + H); dH/dz = -s
            s_a = s.gather(1, a).view(-1)
            w = _policy_weight(lp, plan, sl)
            logp[sl] = lp
            ent[sl] = hs
            dent[sl] = w * (_rowdot(p, s, dotbuf[:r]) - s_a)  # spec S11: first-order dH along w (e_a - pi)
            if need_grad:
                # G = (1/tau) [ w (pi - e_a) + k s ]: written over pi in place.
                zs.mul_((w * inv_t).unsqueeze(1))
                if kcoef != 0.0:
                    zs.addcmul_(s, (plan.agg_weight[sl] * (kcoef * inv_t)).unsqueeze(1))
                zs.scatter_add_(1, a, (w * -inv_t).unsqueeze(1))
                if grad_b is not None and colsum is not None:
                    grad_b.add_(torch.sum(zs, 0, out=colsum))
        if not need_grad:
            continue
        if half:
            gz = z.to(mm_dt)
            if grad_h is not None:
                grad_h[i0 : i0 + n] = torch.mm(gz, weight)
            if grad_w is not None:
                step = max(1, (16 << 20) // max(1, h.shape[1] * 2))
                for v0 in range(0, v, step):
                    grad_w[v0 : v0 + step].add_(torch.mm(gz[:, v0 : v0 + step].t(), hidden_chunk))
            del gz
        else:
            if grad_h is not None:
                torch.mm(z, weight, out=grad_h[i0 : i0 + n])
            if grad_w is not None:
                grad_w.addmm_(z.t(), hidden_chunk)
    return logp, ent, dent, grad_h, grad_w, grad_b


class _FusedLinearPolicyLoss(torch.autograd.Function):
    """Loss and per-token diagnostics in forward; gradients computed there too, scaled in backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        plan: _Plan,
        shape: tuple[int, int],
        finish: Any,
    ) -> tuple[torch.Tensor, ...]:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        h_dim = hidden.shape[-1]
        h, w, b = _gemm_operands(hidden, weight, bias, plan)
        logp, ent, dent, gh, gw, gb = _chunk_loop(h, w, b, plan, need_h, need_w, need_b)
        del h, w, b
        loss, full = finish(logp, ent)
        if gh is not None:
            gh_full = torch.zeros(shape[0] * shape[1], h_dim, dtype=plan.dt, device=hidden.device)
            gh_full.index_copy_(0, plan.positions, gh)
            gh = gh_full.view(*shape, h_dim)
        ctx.grads = [gh, gw, gb]
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(*full, dent)
        return (loss, *full, dent)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "fused_linear_policy_loss: backward ran twice on one forward; the gradients were "
                "computed in forward and scaled in place (retain_graph=True is not supported)"
            )
        ctx.grads = None  # drop our reference so autograd can take the buffers without a copy
        out: list[torch.Tensor | None] = []
        for g, dtype in zip(grads, ctx.dtypes, strict=True):
            if g is None or dtype is None:
                out.append(None)
                continue
            g.mul_(grad_loss.to(g.dtype))
            out.append(g if g.dtype == dtype else g.to(dtype))
        grads.clear()
        return out[0], out[1], out[2], None, None, None


def fused_linear_policy_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: Any,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    entropy_coef: float = 0.0,
    agg: str | None = None,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    chunk_size: int | None = None,
    validate: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The policy loss of any family member with entropy bonus straight from hidden states, without logits.

        z_t   = (W h_t + b) / temperature                  logits of token t, (V,)
        l_t   = log softmax(z_t)[a_t],   H_t = -sum_j pi_tj log pi_tj           (spec S11)
        loss  = family_policy_loss(l, old_log_prob, A, mask, cfg, agg, ...)     (spec S3, S8, S14)
                - entropy_coef * aggregate_loss(H, mask, agg, ...)              (same c_t, spec S8)

    For a `CEGPPOConfig` the policy term is `policy_loss` (arXiv 2509.20712 Eq. 8). Value and
    gradients equal the unfused path (full logits -> `token_log_probs` / `entropy` ->
    `family_policy_loss`) up to rounding, with the same regions (S2), numerics
    (S9) and normalizers (S8). The tokens are walked in chunks of `chunk_size` rows; the gradients
    w.r.t. `hidden`, `weight` and `bias` are computed in the same single pass (the per-token weight
    of the chunk, dloss/dz_t = (1/tau)[w_t (pi - e_a) + k_t pi (log pi + H_t)] with
    w_t = c_t F_t A_t and k_t = entropy_coef c_t, is known once the chunk's log-softmax is) and
    stored: peak extra memory is one (chunk x V) buffer plus the gradients themselves, never
    (tokens x V). GSPO, whose F_t = s_i reads the whole row, first runs the chunks without gradients
    for its log-probs (one more GEMM per chunk). Masked tokens are skipped entirely (they may hold garbage, also in `hidden` and
    `token_ids`, e.g. -100 labels); finding them is the one device sync (`mask.nonzero()`).

    Dtypes (spec S9.5): float32 inputs compute in float32, float64 stays float64. With bf16/fp16
    hidden and weight the three GEMMs run in that dtype (fp32 accumulation inside the GEMM, as
    `nn.Linear`), the softmax, loss and the accumulation of the weight gradient in float32; the
    gradients are returned in the inputs' dtypes. `bias` must be finite.

    Distributed (spec S8.3): pass the GLOBAL `num_tokens` / `num_seqs` (`cegppo.torch.global_counts`)
    so the per-rank, per-micro-batch losses sum to the full-batch loss; DDP/FSDP average gradients
    over the W data-parallel ranks, so multiply the loss by W before `backward()` (see
    `global_counts`). Under FSDP call this where the head's weight is unsharded (inside the wrapped
    module's forward, as with Liger-Kernel's fused losses). The metrics are local to this batch.

    Backward runs once per forward (the stored gradients are scaled in place): `retain_graph=True`
    followed by a second backward raises RuntimeError.

    Args:
        hidden: (B, T, H) last hidden states, row t predicting token_ids[:, t] (already shifted).
        weight: (V, H) LM-head weight (`lm_head.weight`, the `nn.Linear` layout).
        token_ids: (B, T) integer sampled tokens a_t in [0, V) at valid positions.
        old_log_prob: (B, T) rollout log-probs (a constant).
        advantages: (B, T) per token or (B,) per sequence (a constant).
        mask: (B, T) bool or integer 0/1; True marks a valid response token.
        cfg: a `cegppo.CEGPPOConfig` or any family config (spec S14.1: `CISPOConfig`,
            `CISPOCapConfig`, `SAPOConfig`, `GSPOConfig`).
        bias: optional (V,) LM-head bias.
        temperature: tau > 0 dividing the logits (the rollout's sampling temperature).
        entropy_coef: coefficient of the entropy bonus (0: none; the entropy metrics are still
            computed). Any finite real; a negative value penalises entropy.
        agg, num_tokens, num_seqs, norm_length: aggregation as in `family_policy_loss` (spec S8):
            `agg=None` is the member's paper aggregation (token-mean for CE-GPPO and CISPO).
        chunk_size: token rows per chunk (default: as many rows as fit V logits in
            DEFAULT_CHUNK_BYTES of the compute dtype).
        validate: check finite values, token ids in [0, V) at valid positions and the normalizers
            (spec S8.2) (host syncs).

    Returns:
        (loss, metrics): `loss` a 0-d tensor in the compute dtype, differentiable w.r.t. hidden,
        weight and bias. `metrics` maps FUSED_METRIC_KEYS to 0-d tensors (no host sync):
        `family_metrics`' keys (`policy_metrics`' for CE-GPPO); `entropy_mean` = mean of H_t over
        valid tokens; and `entropy_change_<region>` for region in clip_low, clip_high, dual_clip,
        inside: the sum over the valid tokens t of the member's region (spec S2, S14.1) of
        `entropy_change_first_order(z_t, a_t, w_t)` (spec S11, arXiv 2509.20712 Eq. 7) with
        w_t = c_t F_t A_t = -dloss/dl_t, the token's gradient weight on its logit direction
        (e_a - pi) in the policy part of the loss (the entropy bonus excluded):
        w_t [ -pi_a (log pi_a + H_t) + sum_j pi_j^2 (log pi_j + H_t) ]. It is the entropy change,
        to first order, of one unit-learning-rate gradient-descent step taken directly on the
        logits of each token of the region. dual_clip tokens have F = 0, so their entry is 0.
    """
    args = check_fused_args(
        hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, bias=bias, temperature=temperature,
        entropy_coef=entropy_coef, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length,
        chunk_size=chunk_size, array_type=check_tensor,
    )  # fmt: skip
    agg, norm_length, tau, ecoef, chunk_size = args[:5]
    b_, t_, _, v_ = args.shape
    dt = compute_dtype(*args.float_inputs)
    m = as_bool_mask(mask)
    olp = as_float("old_log_prob", old_log_prob, dt).detach()
    adv = as_float("advantages", advantages, dt, floating_only=False).detach()
    adv_bt = adv[:, None].expand(b_, t_) if adv.dim() == 1 else adv
    agg_weight = aggregation_weights(
        m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length, dtype=dt
    )
    index = m.reshape(-1).nonzero().view(-1)
    ids_v = token_ids.reshape(-1).index_select(0, index).to(torch.int64)
    olp_v = olp.reshape(-1).index_select(0, index)
    adv_v = adv_bt.reshape(-1).index_select(0, index)
    if validate:
        core.validate_normalizers(OPS, agg, m, num_tokens, num_seqs)
    if validate and index.numel():
        check_id_range("token_ids", int(ids_v.min()), int(ids_v.max()), v_, valid_only=True)
        for name, arr in (("old_log_prob", olp_v), ("advantages", adv_v)):
            require_finite(name, bool(torch.isfinite(arr).all()))
    itemsize = torch.finfo(dt).bits // 8
    rows = chunk_size if chunk_size is not None else max(1, DEFAULT_CHUNK_BYTES // (v_ * itemsize))
    plan = _Plan(
        ids=ids_v,
        old_log_prob=olp_v,
        advantages=adv_v,
        agg_weight=agg_weight.reshape(-1).index_select(0, index),
        positions=index,
        grad_weight=_token_grad_weight(cfg),
        row_weight=None,
        inv_temp=1.0 / tau,
        entropy_coef=ecoef,
        rows=rows,
        dt=dt,
    )

    def finish(logp_v: torch.Tensor, ent_v: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        # The value reuses the backend's own policy_loss / aggregate_loss on the fused log-probs
        # and entropies scattered back to (B, T): the same semantics, by construction.
        zero = torch.zeros(b_ * t_, dtype=dt, device=logp_v.device)
        lp_full = zero.index_copy(0, index, logp_v).view(b_, t_)
        ent_full = zero.index_copy(0, index, ent_v).view(b_, t_)
        loss = family_policy_loss(lp_full, olp, adv, m, cfg, agg, num_tokens, num_seqs, norm_length=norm_length)
        if ecoef != 0.0:
            loss = loss - ecoef * aggregate_loss(
                ent_full, m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
            )
        return loss, (lp_full, ent_full)

    if reads_row(cfg):
        plan = plan._replace(row_weight=_row_grad_weight(hidden, weight, bias, plan, (b_, t_), olp, adv, m, cfg))
    loss, lp_full, ent_full, dent_v = _FusedLinearPolicyLoss.apply(
        hidden, weight, bias, plan, (b_, t_), finish
    )
    with torch.no_grad():
        metrics = family_metrics(lp_full, olp, adv, m, cfg)
        den = torch.clamp(index.new_tensor(index.numel()).to(dt), min=1)
        metrics["entropy_mean"] = ent_full.sum() / den
        regions = FAMILY[type(cfg)].regions(lp_full, olp, adv, m, cfg)  # the member's (spec S10, S14.1)
        for key, full in zip(ENTROPY_REGION_KEYS, regions, strict=True):
            region = full.reshape(-1).index_select(0, index)
            metrics[key] = torch.where(region, dent_v, torch.zeros((), dtype=dt, device=dent_v.device)).sum()
    return loss, metrics
