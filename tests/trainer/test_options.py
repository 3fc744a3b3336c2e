"""The optional paths of a step: KL to the initial policy, entropy bonus, advantage estimators, aggregation
modes, bfloat16 parameters, TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _trainer_helpers import read_rows, tiny_config
from cegppo.trainer import train


def test_kl_and_entropy_terms_enter_the_loss(tmp_path: Path) -> None:
    plain = train(tiny_config(tmp_path / "plain", total_steps=1))[0]
    kl = train(tiny_config(tmp_path / "kl", total_steps=1, kl_coef=0.5))[0]
    ent = train(tiny_config(tmp_path / "ent", total_steps=1, entropy_coef=0.1))[0]
    assert plain["kl_ref"] == 0.0 and plain["loss"] == plain["pg_loss"]
    # the first update starts at the reference policy (KL 0); later updates have moved away from it
    assert kl["kl_ref"] > 0 and kl["loss"] == pytest.approx(kl["pg_loss"] + 0.5 * kl["kl_ref"], rel=1e-6)
    assert ent["loss"] < ent["pg_loss"]  # loss = pg_loss - 0.1 * entropy, entropy > 0
    assert kl["reward"] == plain["reward"] == ent["reward"]  # same rollout at step 1


@pytest.mark.parametrize("advantage", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm"])
def test_advantage_estimators_and_aggregations_run(tmp_path: Path, advantage: str, agg: str) -> None:
    rows = train(tiny_config(tmp_path / "r", total_steps=2, advantage=advantage, agg=agg))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert rows[0]["grad_norm"] > 0


def test_bfloat16_parameters(tmp_path: Path) -> None:
    rows = train(tiny_config(tmp_path / "bf16", total_steps=2, dtype="bfloat16"))
    assert all(math.isfinite(r["pg_loss"]) and math.isfinite(r["entropy"]) for r in rows)
    import torch
    from _trainer_helpers import latest_weights

    assert latest_weights(tmp_path / "bf16")["lm_head.weight"].dtype == torch.bfloat16


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    train(tiny_config(out, total_steps=1, tensorboard=True))
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    assert len(read_rows(out)) == 1
