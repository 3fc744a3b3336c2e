"""Scale-out: 2 DDP processes (gloo, CPU) reproduce the 1-process run on the same global batch.

Both runs see the same prompts and the same sampling noise (global generators, each rank takes its rows),
and the loss uses global token counts, so the losses, gradient norms, region fractions and final weights
agree up to float32 summation order. The gradient norm would be off by the world size if the rank losses
were not summed (DDP averages), which is why it is compared too (Adam alone is nearly scale-invariant).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from _trainer_helpers import ddp_rank, free_port, latest_weights, read_rows, tiny_config
from cegppo.trainer import TrainConfig, train

COMPARED = (
    "reward", "accuracy", "pass_at_g", "response_length", "groups_with_signal", "entropy", "loss", "pg_loss",
    "clip_low_frac", "clip_high_frac", "inside_frac", "ratio_mean", "ratio_max", "approx_kl", "grad_norm",
    "grad_weight_abs_mean", "dH_clip_low", "dH_clip_high", "dH_inside",
)  # fmt: skip


def _run_ddp(cfg: TrainConfig, world: int) -> None:
    # The rank function lives in _trainer_helpers: spawn pickles it by module name, and a test module's
    # name under --import-mode=importlib is not importable in the child.
    mp.start_processes(ddp_rank, args=(world, free_port(), dataclasses.asdict(cfg)), nprocs=world,
                       start_method="spawn")


@pytest.mark.slow
def test_two_gloo_processes_reproduce_one_process(tmp_path: Path) -> None:
    single = tiny_config(tmp_path / "one", total_steps=2, prompts_per_step=4, num_minibatches=2)
    train(single)
    _run_ddp(dataclasses.replace(single, out=str(tmp_path / "two")), world=2)

    one, two = read_rows(tmp_path / "one"), read_rows(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2]
    assert max(r["clip_frac"] for r in one) > 0  # the updates left the trust region: the test covers clipping
    for a, b in zip(one, two, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key, a[key], b[key])
    w1, w2 = latest_weights(tmp_path / "one"), latest_weights(tmp_path / "two")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5, msg=name)
