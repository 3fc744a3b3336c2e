"""Sampling responses and scoring them under the policy (teacher forcing).

Sampling is inverse-CDF with uniforms drawn up front for the whole global batch,
`u ~ U(0, 1)^(P*G, T_new)` from the run's sampling generator: token = the first index whose cumulative
probability exceeds u. Each rank takes the rows of its own sequences, so the tokens sampled for a
sequence do not depend on how the batch is split over ranks or mini-batches (the DDP equivalence
test relies on this), and the generator's state is all a checkpoint needs to replay the sampling.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Batch", "PolicyForward", "generate", "left_pad"]


@dataclass
class Batch:
    """The rollout of one rank: prompts (left-padded), responses (right-padded) and what is known about them."""

    prompt_ids: torch.Tensor
    """(B, Lp) int64, left-padded."""
    prompt_mask: torch.Tensor
    """(B, Lp) bool, True on real prompt tokens."""
    response: torch.Tensor
    """(B, T) int64 sampled tokens (pad after the end of each response)."""
    response_mask: torch.Tensor
    """(B, T) bool, True on sampled tokens (eos included)."""


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (B, max_len), each row right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = True
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: cumsum(mask) - 1, clamped at 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    eos_id: int,
    pad_id: int,
    temperature: float,
) -> Batch:
    """Sample up to T_new = uniforms.shape[1] tokens per row with a KV cache; stop a row at eos.

    token_t = min{ j : sum_{k <= j} softmax(z_t / temperature)_k > u_t }   (inverse CDF, float32)
    """
    from transformers import DynamicCache

    b, t_new = uniforms.shape
    device = prompt_ids.device
    attn = prompt_mask.long()
    # One cache object, filled in place by every forward: nothing to read back from the outputs.
    cache = {_cache_keyword(model): DynamicCache()}
    out = model(input_ids=prompt_ids, attention_mask=attn, position_ids=_positions(prompt_mask), use_cache=True, **cache)
    next_pos = _positions(prompt_mask)[:, -1:] + 1
    logits = out.logits[:, -1].float()
    response = torch.full((b, t_new), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    u = uniforms.to(device=device, dtype=torch.float32)
    for t in range(t_new):
        cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
        token = torch.searchsorted(cdf, u[:, t : t + 1].contiguous(), right=True)[:, 0]
        token = token.clamp(max=logits.shape[-1] - 1)  # u above a cdf that rounds below 1
        token = torch.where(done, torch.full_like(token, pad_id), token)
        response[:, t] = token
        lengths += (~done).long()
        done = done | (token == eos_id)
        if t + 1 == t_new or bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # finished rows feed pad; their output is unused
        out = model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos, use_cache=True, **cache)
        next_pos = next_pos + 1
        logits = out.logits[:, -1].float()
    width = int(lengths.max()) if b else 0
    response = response[:, : max(width, 1)]
    response_mask = torch.arange(response.shape[1], device=device)[None, :] < lengths[:, None]
    return Batch(prompt_ids, prompt_mask, response, response_mask)


def _cache_keyword(model: Any) -> str:
    """The keyword the model's forward takes its KV cache under: `cache` in transformers >= 5.x (where
    `past_key_values` is deprecated and warns on every run), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PolicyForward(torch.nn.Module):
    """Teacher-forced pass over prompt + response; returns the (B, T, V) float32 logits of the response tokens.

    With `hidden=True` it returns (hidden states (B, T, H), LM-head weight, LM-head bias) instead, for the
    fused head loss. It is a Module so that DistributedDataParallel can wrap it.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, temperature: float, hidden: bool = False) -> Any:
        lp = batch.prompt_ids.shape[1]
        t = batch.response.shape[1]
        ids = torch.cat([batch.prompt_ids, batch.response], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
        pos = _positions(mask)
        if hidden:
            base = getattr(self.model, self.model.base_model_prefix)
            h = base(input_ids=ids, attention_mask=mask.long(), position_ids=pos).last_hidden_state
            head = self.model.get_output_embeddings()
            return h[:, lp - 1 : lp - 1 + t], head.weight, getattr(head, "bias", None)
        # logits_to_keep = T + 1 keeps positions Lp-1 .. Lp+T-1; the last one predicts past the response.
        out = self.model(input_ids=ids, attention_mask=mask.long(), position_ids=pos, logits_to_keep=t + 1)
        # Slicing the last T + 1 positions also holds if an older transformers ignores logits_to_keep.
        return out.logits[:, -(t + 1) : -1].float() / temperature
