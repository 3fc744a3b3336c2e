"""Torch fused-head "ports" for the S11.1 properties: a correct one through full logits, and broken ones.

Each has the signature of `cegppo.torch.fused_linear_policy_loss` and differs from `correct` by
one realistic bug of LM-head code (`ports.FUSED_TORCH_BROKEN` names the property that must catch
it). `correct` materialises the (B, T, V) logits: it is the unfused path written with the torch
backend's public functions, so passing it shows the properties accept any faithful head, fused or
not, and the broken ones show the properties can fail.
"""

from __future__ import annotations

from typing import Any

import cegppo.torch as cg
import torch

_REGIONS = ("clip_low", "clip_high", "dual_clip", "inside")


def _head(hidden: torch.Tensor, weight: torch.Tensor, token_ids: torch.Tensor, old_log_prob: torch.Tensor,
          advantages: torch.Tensor, mask: torch.Tensor, cfg: Any, *, bias: torch.Tensor | None = None,
          temperature: float = 1.0, entropy_coef: float = 0.0, agg: str = "token-mean", num_tokens: Any = None,
          num_seqs: Any = None, norm_length: float | None = None, chunk_size: int | None = None,
          bug: str = "") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    del chunk_size  # one chunk: the whole batch
    m = mask.to(torch.bool)
    if bug != "mask_by_multiplication":
        hidden = torch.where(m[..., None], hidden, 0.0)  # garbage rows never reach the GEMM
        ids = torch.where(m, token_ids, 0)
    else:  # BUG: multiply garbage by 0 instead of selecting (NaN * 0 = NaN; id -100 indexes from the end)
        hidden = hidden * m[..., None]
        ids = token_ids
    z = hidden @ weight.T
    if bias is not None and bug != "bias_ignored":
        z = z + bias
    if bug != "temperature_ignored":
        z = z / temperature
    agg_kw = {"num_tokens": num_tokens, "num_seqs": num_seqs, "norm_length": norm_length}
    lp = cg.token_log_probs(z, ids)
    ent = cg.entropy(z.detach() if bug == "entropy_detached" else z)
    if bug != "log_ratio_precomputed":
        loss = cg.policy_loss(lp, old_log_prob, advantages, m, cfg, agg, **agg_kw)
    else:  # BUG: hands the library log r = lp - old as log_prob (old = 0): same value, gradient flows into old
        loss = cg.policy_loss(torch.where(m, lp - old_log_prob, 0.0), torch.zeros_like(lp), advantages, m, cfg, agg, **agg_kw)
    if entropy_coef:
        sign = -1.0 if bug == "entropy_bonus_sign" else 1.0
        loss = loss - sign * entropy_coef * cg.aggregate_loss(ent, m, agg, **agg_kw)
    with torch.no_grad():
        metrics: dict[str, torch.Tensor] = dict(cg.policy_metrics(lp, old_log_prob, advantages, m, cfg))
        denom = m.numel() if bug == "entropy_mean_over_padding" else max(int(m.sum()), 1)
        metrics["entropy_mean"] = torch.where(m, ent, 0.0).sum() / denom
        c = cg.aggregation_weights(m, agg, dtype=lp.dtype, **agg_kw)
        adv = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(lp)
        adv = torch.where(m, adv, 0.0)
        f = cg.grad_weight(lp, torch.where(m, old_log_prob, 0.0), adv, cfg)
        w = torch.where(adv == 0, 0.0, f * adv) * c  # w_t = c_t F_t A_t
        if bug == "entropy_change_unweighted":  # BUG: drops the aggregation weight c_t
            w = torch.where(adv == 0, 0.0, f * adv)
        dent = cg.entropy_change_first_order(z, ids, w)
        regions = cg.token_regions(lp, torch.where(m, old_log_prob, 0.0), adv, cfg)
        for name in _REGIONS:
            metrics[f"entropy_change_{name}"] = torch.where(getattr(regions, name) & m, dent, 0.0).sum()
    return loss, metrics


def correct(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The unfused path: full logits -> token_log_probs / entropy -> policy_loss (spec S11.1)."""
    return _head(*args, **kw)


def temperature_ignored(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the logits are not divided by the sampling temperature."""
    return _head(*args, **kw, bug="temperature_ignored")


def bias_ignored(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the LM head's bias is dropped."""
    return _head(*args, **kw, bug="bias_ignored")


def entropy_detached(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the entropy bonus is computed on detached logits: right value, no gradient."""
    return _head(*args, **kw, bug="entropy_detached")


def entropy_bonus_sign(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the entropy bonus is added to the loss instead of subtracted."""
    return _head(*args, **kw, bug="entropy_bonus_sign")


def entropy_mean_over_padding(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the logged mean entropy divides by B * T, padding included."""
    return _head(*args, **kw, bug="entropy_mean_over_padding")


def entropy_change_unweighted(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the first-order entropy change uses F_t A_t without the aggregation weight c_t."""
    return _head(*args, **kw, bug="entropy_change_unweighted")


def mask_by_multiplication(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: masked rows are multiplied by 0 (NaN stays NaN) and masked token ids used as they are."""
    return _head(*args, **kw, bug="mask_by_multiplication")


def log_ratio_precomputed(*args: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BUG: the head computes log r = log_prob - old_log_prob itself and passes it with old = 0: the value is right,
    but a caller's old_log_prob that requires grad receives the negated gradient."""
    return _head(*args, **kw, bug="log_ratio_precomputed")
