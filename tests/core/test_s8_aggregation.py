"""Reference self-checks for docs/spec.md S8 (aggregation, global normalizers, micro-batches, empty batch)."""

from __future__ import annotations

import itertools

import cegppo
import numpy as np
import pytest
from _core_strategies import AGG_MODES, Batch, batches
from hypothesis import given
from hypothesis import strategies as st


def _args(b: Batch) -> tuple:
    return b.log_prob, b.old_log_prob, b.advantages, b.mask, b.cfg


# ---------------------------------------------------------------- S8.1 + S8.2 coefficient table


def test_S8_1_S8_2_coefficient_table_on_a_fixed_mask() -> None:
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)  # n_i = 3, 1, 0; N = 4; S = 2; T = 4
    m = mask.astype(float)
    expected = {
        "token-mean": m / 4,
        "token-sum": m,
        "seq-mean-token-mean": m / np.array([[3.0], [1.0], [1.0]]) / 2,
        "seq-mean-token-sum": m / 2,
        "seq-mean-token-sum-norm": m / (2 * 4),
    }
    for agg, c in expected.items():
        np.testing.assert_allclose(cegppo.aggregation_weights(mask, agg), c, rtol=1e-15, err_msg=agg)


def test_S8_2_explicit_normalizers() -> None:
    mask = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
    m = mask.astype(float)
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "token-mean", num_tokens=10), m / 10)
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "seq-mean-token-sum", num_seqs=5), m / 5)
    np.testing.assert_allclose(
        cegppo.aggregation_weights(mask, "seq-mean-token-mean", num_seqs=4), m / np.array([[2.0], [1.0]]) / 4
    )
    np.testing.assert_allclose(
        cegppo.aggregation_weights(mask, "seq-mean-token-sum-norm", num_seqs=4, norm_length=16), m / 64
    )
    # Normalizers may be 0-d or (1,) arrays (what an all-reduce returns), not only Python numbers.
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "token-mean", num_tokens=np.array([10.0])), m / 10)
    # Each normalizer is read only by its modes.
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "token-mean", num_seqs=99), m / 3)
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "seq-mean-token-sum", num_tokens=99), m / 2)
    np.testing.assert_allclose(cegppo.aggregation_weights(mask, "token-sum", num_tokens=7, num_seqs=7), m)


@pytest.mark.parametrize("agg", AGG_MODES)
@given(b=batches())
def test_S8_1_loss_is_the_coefficient_weighted_sum(agg: str, b: Batch) -> None:
    c = cegppo.aggregation_weights(b.mask, agg)
    j = cegppo.per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    expected = np.sum(np.where(b.mask, -c * j, 0))
    np.testing.assert_allclose(cegppo.policy_loss(*_args(b), agg), expected, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(cegppo.aggregate_loss(-j, b.mask, agg), expected, rtol=1e-13, atol=1e-300)


# ---------------------------------------------------------------- S8.3 micro-batch additivity


@pytest.mark.parametrize("agg", AGG_MODES)
@given(data=st.data())
def test_S8_3_micro_batches_with_global_normalizers_sum_to_the_full_batch(agg: str, data: st.DataObject) -> None:
    b = data.draw(batches(max_b=6), label="batch")
    n_b = b.mask.shape[0]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(n_b - 1, 1)), max_size=n_b - 1), label="cuts"))
    cuts = [c for c in cuts if 0 < c < n_b]
    bounds = [0, *cuts, n_b]
    num_tokens, num_seqs = cegppo.local_counts(b.mask)
    full = float(cegppo.policy_loss(*_args(b), agg))
    full_grad = cegppo.policy_loss_grad(*_args(b), agg)
    total, grads = 0.0, []
    for lo, hi in itertools.pairwise(bounds):
        part = (b.log_prob[lo:hi], b.old_log_prob[lo:hi], b.advantages[lo:hi], b.mask[lo:hi], b.cfg, agg)
        kw = {"num_tokens": num_tokens, "num_seqs": num_seqs, "norm_length": b.mask.shape[1]}
        total += float(cegppo.policy_loss(*part, **kw))
        grads.append(cegppo.policy_loss_grad(*part, **kw))
    j = cegppo.per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    scale = float(np.sum(np.where(b.mask, np.abs(cegppo.aggregation_weights(b.mask, agg) * j), 0)))
    assert abs(total - full) <= 1e-12 * scale, (total, full)
    np.testing.assert_allclose(np.concatenate(grads), full_grad, rtol=1e-14, atol=0)


def test_S8_3_local_counts() -> None:
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1]])
    assert cegppo.local_counts(mask) == (4, 2)
    assert cegppo.local_counts(np.zeros((0, 3), bool)) == (0, 0)


# ---------------------------------------------------------------- S8.4 empty batch


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("shape", [(3, 4), (0, 4), (2, 0)], ids=["all_masked", "no_rows", "no_tokens"])
def test_S8_4_empty_batch_gives_exactly_zero_and_zero_gradient(agg: str, shape: tuple[int, int]) -> None:
    cfg = cegppo.presets.ce_gppo_official()
    lp = np.full(shape, np.nan)
    old = np.full(shape, np.inf)
    adv = np.full(shape, -np.inf)
    mask = np.zeros(shape, bool)
    loss = cegppo.policy_loss(lp, old, adv, mask, cfg, agg)
    assert np.isfinite(loss) and float(loss) == 0.0
    grad = cegppo.policy_loss_grad(lp, old, adv, mask, cfg, agg)
    assert grad.shape == shape and np.all(grad == 0)
    # The same with explicit global normalizers of zero (every rank empty).
    assert float(cegppo.policy_loss(lp, old, adv, mask, cfg, agg, num_tokens=0, num_seqs=0)) == 0.0


def test_S8_4_empty_rank_with_nonzero_global_normalizers_contributes_zero() -> None:
    cfg = cegppo.presets.ce_gppo_official()
    mask = np.zeros((2, 3), bool)
    z = np.zeros((2, 3))
    for agg in AGG_MODES:
        assert float(cegppo.policy_loss(z, z, z, mask, cfg, agg, num_tokens=17, num_seqs=5)) == 0.0


def test_S8_2_zero_normalizer_only_for_a_micro_batch_without_valid_tokens() -> None:
    """0 is the right global count only when nothing is valid anywhere; with valid tokens it is an error,
    never silently replaced by 1 (which would turn token-mean into token-sum)."""
    cfg = cegppo.presets.ce_gppo_official()
    z = np.zeros((2, 3))
    empty, full = np.zeros((2, 3), bool), np.ones((2, 3), bool)
    for agg, kw in (("token-mean", {"num_tokens": 0}), ("seq-mean-token-sum", {"num_seqs": np.float32(0)})):
        assert float(cegppo.policy_loss(z, z, z, empty, cfg, agg, **kw)) == 0.0
        assert np.all(cegppo.policy_loss_grad(z, z, z, empty, cfg, agg, **kw) == 0)
        name = next(iter(kw))
        with pytest.raises(ValueError, match=f"{name} is 0 but this batch has"):
            cegppo.policy_loss(z, z, z, full, cfg, agg, **kw)
        with pytest.raises(ValueError, match=name):
            cegppo.aggregation_weights(full, agg, **kw)
    # A normalizer the mode does not read is not held to the 0 rule (its Python value still is).
    assert float(cegppo.policy_loss(z, z, np.ones(2), full, cfg, "token-sum", num_tokens=0, num_seqs=0)) == -6.0
    with pytest.raises(ValueError, match="num_seqs"):
        cegppo.policy_loss(z, z, z, full, cfg, "token-mean", num_seqs=np.float32("nan"))


def test_S8_2_norm_length_defaults_to_the_padded_width() -> None:
    """seq-mean-token-sum-norm divides by L = T of *this* call unless norm_length is given (spec S8.2):
    micro-batches padded to different widths are additive only with an explicit, common norm_length."""
    cfg = cegppo.presets.ce_gppo_official()
    rng = np.random.default_rng(3)
    lp, old = rng.normal(-1, 0.2, (2, 6)), rng.normal(-1, 0.2, (2, 6))
    adv = np.array([1.0, -0.5])
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], bool)
    agg = "seq-mean-token-sum-norm"
    full = float(cegppo.policy_loss(lp, old, adv, mask, cfg, agg, norm_length=6))
    assert full == pytest.approx(float(cegppo.policy_loss(lp, old, adv, mask, cfg, agg)), rel=1e-15)  # T = 6
    # row 1 as its own micro-batch, padded only to its length 2
    parts = [(lp[:1], old[:1], adv[:1], mask[:1]), (lp[1:, :2], old[1:, :2], adv[1:], mask[1:, :2])]
    explicit = sum(float(cegppo.policy_loss(*p, cfg, agg, num_seqs=2, norm_length=6)) for p in parts)
    default = sum(float(cegppo.policy_loss(*p, cfg, agg, num_seqs=2)) for p in parts)
    assert explicit == pytest.approx(full, rel=1e-14)
    assert default != pytest.approx(full, rel=1e-3)  # row 1 divided by 2 instead of 6
