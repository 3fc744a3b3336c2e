"""How a step's updates become a metrics.jsonl row (docs/trainer.md, "Metrics"): sums keyed by name, and cegppo's
metric keys renamed to the log's by one table."""

from __future__ import annotations

import math

import cegppo
import pytest
from cegppo.trainer.metrics import (
    LOG_NAMES,
    METRICS,
    REGIONS,
    TOKEN_MEAN_KEYS,
    TOKEN_SUM_KEYS,
    RolloutStats,
    UpdateStats,
    step_row,
)


def _update_metrics(scale: float) -> dict[str, float]:
    """One update's per-token diagnostics, as cegppo's non-fused path keys them (every value distinct)."""
    keys = [*TOKEN_MEAN_KEYS, *TOKEN_SUM_KEYS, "ratio_max"]
    return {key: scale * (i + 1) / 100 for i, key in enumerate(keys)}


def _two_updates() -> UpdateStats:
    stats = UpdateStats()
    for tokens, scale in ((3.0, 1.0), (5.0, 2.0)):
        stats.add_update(tokens=tokens, loss=scale, pg_loss=scale / 2, kl_ref=0.0, grad_norm=scale * 3)
        stats.add_token_metrics(_update_metrics(scale), tokens)
    return stats


def test_sums_travel_by_name() -> None:
    """`with_sums` reads the reduced sums by key: handed back in any order, they land where they came from."""
    stats = _two_updates()
    reversed_order = dict(reversed(list(stats.sums().items())))
    assert stats.with_sums(reversed_order) == stats
    doubled = stats.with_sums({k: 2 * v for k, v in stats.sums().items()})
    assert doubled.tokens == 2 * stats.tokens
    assert doubled.token_sums["entropy_change_clip_high"] == 2 * stats.token_sums["entropy_change_clip_high"]


def test_log_names_map_library_keys_onto_documented_keys() -> None:
    assert set(LOG_NAMES) <= set(cegppo.FUSED_METRIC_KEYS)
    assert set(LOG_NAMES.values()) <= set(METRICS)
    assert set(TOKEN_MEAN_KEYS) <= set(cegppo.METRIC_KEYS)


def test_the_row_is_the_token_weighted_mean_and_the_sum_under_the_log_s_names() -> None:
    stats = _two_updates()
    rollout = RolloutStats(sequences=4.0, reward_sum=2.0, reward_sq_sum=2.0, correct=1.0, groups_with_correct=1.0,
                           groups_with_signal=1.0, response_tokens=8.0, entropy_sum=4.0)
    row = step_row(1, 1e-3, rollout, stats, groups=2, world=1, seconds=1.0)
    assert set(row) == set(METRICS)
    assert row["accuracy"] == 0.25 and row["pass_at_g"] == 0.5  # 1 of 4 responses, in 1 of 2 groups
    k3 = [_update_metrics(s)["approx_kl_k3"] for s in (1.0, 2.0)]
    assert row["approx_kl"] == pytest.approx((3 * k3[0] + 5 * k3[1]) / 8)
    for r in REGIONS:
        want = sum(_update_metrics(s)[f"entropy_change_{r}"] for s in (1.0, 2.0))
        assert row[f"dH_{r}"] == pytest.approx(want)
    assert row["dH_total"] == pytest.approx(sum(row[f"dH_{r}"] for r in REGIONS))
    assert not math.isnan(row["clip_high_old_prob"])
