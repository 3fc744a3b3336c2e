"""The smallest TRL that runs TRL's own policy-loss lines: a ``GRPOTrainer`` on a tiny model, fed given log-probs.

TRL computes its losses inside ``GRPOTrainer._compute_loss`` (the body of ``compute_loss``), from the log-probs
that ``_get_per_token_logps_and_entropies`` returns for the model. `harness` builds one such trainer per
``loss_type`` (a one-layer Llama built from a config, a three-token tokenizer built in memory, one prompt:
nothing is downloaded or generated); `harness_loss` sets the loss's hyperparameters on it, makes the given
log-probs stand in for the model's and calls ``compute_loss``. Every line from the log-probs to the loss is
TRL's.

The trainer stays in eval mode: with one process and no gradient accumulation TRL's train and eval losses are
the same, and eval needs no accumulation state (``current_gradient_accumulation_steps``).
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer

__all__ = ["TRL_SETTINGS", "harness", "harness_loss"]

TRL_SETTINGS: dict[str, tuple[str, str]] = {
    "cap": ("trainer", "epsilon_high"),
    "tau_pos": ("args", "sapo_temperature_pos"),
    "tau_neg": ("args", "sapo_temperature_neg"),
}
"""A port keyword (`cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS`) -> where TRL's loss reads it: the
trainer's attribute (TRL copies ``GRPOConfig.epsilon_high`` there; ``cispo`` caps the weight at it) or a field of
its ``GRPOConfig`` (``sapo``'s temperatures)."""


def _no_reward(completions: list[Any], **_: Any) -> list[float]:
    """The harness never generates; GRPOTrainer requires a reward function anyway."""
    return [0.0] * len(completions)


@functools.cache
def harness(loss_type: str) -> GRPOTrainer:
    """A CPU ``GRPOTrainer`` with ``loss_type`` on a one-layer Llama (built once per loss type, then reused)."""
    vocab = {"<pad>": 0, "<eos>": 1, "a": 2}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>")),
                                        pad_token="<pad>", eos_token="<eos>")
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(vocab), hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, max_position_embeddings=8, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    ))
    args = GRPOConfig(
        output_dir=os.path.join(tempfile.gettempdir(), "cegppo-trl-harness"), loss_type=loss_type,  # one shared, empty folder
        per_device_train_batch_size=2, num_generations=2, report_to="none", use_cpu=True, bf16=False,
        save_strategy="no", logging_strategy="no",
    )
    trainer = GRPOTrainer(model=model, reward_funcs=_no_reward, args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": ["a", "a"]}))
    trainer.model.eval()
    return trainer


def _given(log_prob: torch.Tensor, *_: Any, **__: Any) -> tuple[torch.Tensor, torch.Tensor, None]:
    """``_get_per_token_logps_and_entropies``'s result with `log_prob` for the model's (entropies 0, no aux loss)."""
    return log_prob, torch.zeros_like(log_prob), None


def harness_loss(loss_type: str, log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                 response_mask: torch.Tensor, **hyper: float) -> torch.Tensor:
    """TRL's loss of ``loss_type`` on these (B, T) log-probs, (B,) or (B, T) advantages and mask.

    `hyper` are port keywords of `TRL_SETTINGS`, set where TRL reads them before the call. The mask reaches
    TRL as its ``completion_mask`` (integers), and the token count as ``num_items_in_batch`` (the normalizer
    of ``cispo``), as GRPOTrainer's own batches carry them.
    """
    trainer = harness(loss_type)
    for key, value in hyper.items():
        where, attr = TRL_SETTINGS[key]
        setattr(trainer if where == "trainer" else trainer.args, attr, value)
    trainer._get_per_token_logps_and_entropies = functools.partial(_given, log_prob)  # type: ignore[method-assign]
    b, t = log_prob.shape
    mask = response_mask.int()
    inputs = {
        "prompt_ids": torch.zeros((b, 0), dtype=torch.long, device=log_prob.device),
        "prompt_mask": torch.zeros((b, 0), dtype=torch.long, device=log_prob.device),
        "completion_ids": torch.zeros((b, t), dtype=torch.long, device=log_prob.device),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old_log_prob,
        "num_items_in_batch": mask.sum(),
    }
    return trainer.compute_loss(trainer.model, inputs)
