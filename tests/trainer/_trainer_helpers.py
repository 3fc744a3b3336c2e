"""Shared helpers for the trainer tests: a tiny, fast configuration and readers for a run's outputs.

Every run here uses the random-init tiny Llama with the in-memory character tokenizer (no downloads),
at sizes where one training step takes a few tens of milliseconds on one CPU core.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
from cegppo.trainer import TrainConfig, train
from cegppo.trainer.train import TIMING_METRICS

TINY = dict(
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    prompts_per_step=4,
    group_size=4,
    num_minibatches=2,
    update_epochs=2,
    total_steps=3,
    warmup_steps=1,
    lr=1e-2,  # large enough that ratios leave 1 within a step (clipping acts), small models only
    save_every=0,
    progress=False,
    plots=False,
    threads=1,
    device="cpu",
    digits=1,
    reward="partial",  # a tiny model scores partial credit from step 1, so groups hold different rewards
    warm_start_steps=4,  # the warm start runs (and is reused by resume) in every test, at a token cost
    warm_start_batch=16,
)
"""Keyword arguments of a tiny TrainConfig (about 0.1 s per step)."""


def tiny_config(out: Path | str, **over: Any) -> TrainConfig:
    """TrainConfig(**TINY, out=out, **over)."""
    return dataclasses.replace(TrainConfig(**TINY), out=str(out), **over)  # type: ignore[arg-type]


def read_rows(out: Path | str) -> list[dict[str, Any]]:
    """The rows of OUT/metrics.jsonl."""
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows minus the wall-clock keys (everything else is bit-reproducible on CPU)."""
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in rows]


def checkpoint_weights(folder: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of FOLDER/model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def latest_weights(out: Path | str) -> dict[str, torch.Tensor]:
    """The weights of the checkpoint that OUT/checkpoints/latest names."""
    name = (Path(out) / "checkpoints" / "latest").read_text().strip()
    return checkpoint_weights(Path(out) / "checkpoints" / name)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts (same keys, torch.equal on every tensor)."""
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_rank(rank: int, world: int, port: int, fields: dict[str, Any]) -> None:
    """One torchrun-like rank: the environment torchrun would set, then the ordinary train().

    Here, not in test_ddp.py: torch.multiprocessing's spawn pickles it by module name, which must be
    importable in the child (this folder is on pytest's `pythonpath`, a test module is not importable).
    """
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    try:
        train(TrainConfig(**fields))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
