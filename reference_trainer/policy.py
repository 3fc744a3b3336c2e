"""The policy: a Hugging Face causal LM and its tokenizer, either loaded from a local folder or built tiny.

The tiny default is a Llama-architecture model initialised at random from a seeded generator, with a
character-level tokenizer built in memory over the task's alphabet (no downloads). Checkpoints are
written with `save_pretrained`, so any checkpoint folder is itself a valid `--model PATH`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["SPECIAL_TOKENS", "build_char_tokenizer", "build_tiny_model", "load_policy", "quiet_hf_progress"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Special tokens of the character tokenizer, ids 0-3 in this order."""


def build_char_tokenizer(alphabet: str) -> Any:
    """A PreTrainedTokenizerFast with one token per character of `alphabet` (sorted, deduplicated) plus SPECIAL_TOKENS.

    Characters outside the alphabet encode as <unk>. Nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def build_tiny_model(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, seed: int) -> Any:
    """A random-init LlamaForCausalLM (untied embeddings, no dropout), initialised under torch.manual_seed(seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards") inside: the trainer shows its own."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_policy(path: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder; ValueError when it is not a loadable HF checkpoint.

    The tokenizer gets a pad token (its eos token) if it has none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"--model={path!r}: no config.json there (a local Hugging Face checkpoint folder is expected)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/... depending on what is missing
        raise ValueError(f"--model={path!r}: cannot load its tokenizer ({type(e).__name__}: {e})") from None
    try:
        with quiet_hf_progress():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except Exception as e:
        raise ValueError(f"--model={path!r}: cannot load it as a causal LM ({type(e).__name__}: {e})") from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"--model={path!r}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
