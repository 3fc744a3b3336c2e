"""Reference self-checks for docs/spec.md S11 (logit head, entropy analysis) and S12 (group advantages)."""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from _core_strategies import central_difference, logits_arrays
from hypothesis import given
from hypothesis import strategies as st

# ---------------------------------------------------------------- S11 logit head


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@given(data=st.data())
def test_S11_token_log_probs_and_entropy_values(data: st.DataObject) -> None:
    z = data.draw(logits_arrays(), label="logits")
    ids = data.draw(st.lists(st.integers(0, z.shape[1] - 1), min_size=z.shape[0], max_size=z.shape[0]), label="ids")
    ids = np.array(ids)
    p = _softmax(z)
    np.testing.assert_allclose(cegppo.token_log_probs(z, ids), np.log(p[np.arange(len(ids)), ids]), rtol=1e-13)
    np.testing.assert_allclose(cegppo.entropy(z), -(p * np.log(p)).sum(-1), rtol=1e-12, atol=1e-15)


def _head_case(data: st.DataObject, weight_label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N, V), a sampled id per row and a per-row weight in [-2, 2] (the cotangent or the step)."""
    z = data.draw(logits_arrays(), label="logits")
    n = z.shape[0]
    ids = np.array(data.draw(st.lists(st.integers(0, z.shape[1] - 1), min_size=n, max_size=n), label="ids"))
    w = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n), label=weight_label))
    return z, ids, w


@given(data=st.data())
def test_S11_token_log_probs_grad_matches_central_differences(data: st.DataObject) -> None:
    z, ids, w = _head_case(data, "grad_output")
    fd = central_difference(lambda x: np.sum(w * cegppo.token_log_probs(x, ids)), z)
    np.testing.assert_allclose(cegppo.token_log_probs_grad(z, ids, w), fd, rtol=1e-6, atol=1e-8)
    # Default cotangent is 1: 1[j = a] - pi_j.
    onehot = np.eye(z.shape[1])[ids]
    np.testing.assert_allclose(cegppo.token_log_probs_grad(z, ids), onehot - _softmax(z), rtol=1e-13, atol=1e-15)


@given(data=st.data())
def test_S11_entropy_grad_matches_central_differences(data: st.DataObject) -> None:
    z = data.draw(logits_arrays(), label="logits")
    n = z.shape[0]
    w = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n), label="grad_output"))
    fd = central_difference(lambda x: np.sum(w * cegppo.entropy(x)), z)
    np.testing.assert_allclose(cegppo.entropy_grad(z, w), fd, rtol=1e-6, atol=1e-8)
    p = _softmax(z)
    h = -(p * np.log(p)).sum(-1, keepdims=True)
    np.testing.assert_allclose(cegppo.entropy_grad(z), -p * (np.log(p) + h), rtol=1e-11, atol=1e-15)


def test_S11_banned_tokens() -> None:
    """-inf logits: probability 0, 0 log 0 = 0, no NaN anywhere (an all -inf row included)."""
    z = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    with np.errstate(all="raise"):
        h = cegppo.entropy(z)
        gh = cegppo.entropy_grad(z)
        lp = cegppo.token_log_probs(z, np.array([0, 0]))
    p = _softmax(np.array([0.0, 1.0]))
    np.testing.assert_allclose(h, [-(p * np.log(p)).sum(), 0.0])
    assert np.all(np.isfinite(gh)) and gh[0, 1] == 0 and np.all(gh[1] == 0)
    assert lp[0] == pytest.approx(np.log(p[0])) and lp[1] == -np.inf


def _first_order_error(z: np.ndarray, a: np.ndarray, eta: float) -> np.ndarray:
    """|H(z + eta (e_a - pi)) - H(z) - dH_first_order|, per row."""
    p = _softmax(z)
    step = eta * (np.eye(z.shape[1])[a] - p)
    real = cegppo.entropy(z + step) - cegppo.entropy(z)
    return np.abs(real - cegppo.entropy_change_first_order(z, a, np.full(len(a), eta)))


@given(data=st.data())
def test_S11_entropy_change_first_order_is_exact_to_first_order(data: st.DataObject) -> None:
    """The error of the first-order prediction shrinks quadratically: halving eta quarters it."""
    z = data.draw(logits_arrays(max_lead=1, scale=2.0), label="logits")
    a = np.array([data.draw(st.integers(0, z.shape[1] - 1), label="id")])
    e1 = _first_order_error(z, a, 1e-3)[0]
    e2 = _first_order_error(z, a, 5e-4)[0]
    # Second-order coefficient ~ e1 / 1e-6; rows where it nearly vanishes cannot show the ratio.
    if e1 < 1e-11:
        assert e2 < 1e-11
        return
    assert 3.8 < e1 / e2 < 4.2, (e1, e2)


def test_S11_entropy_change_ratio_fails_for_a_wrong_first_order_term() -> None:
    """The ratio test above can fail: a first-order term off by 1 % gives a linear error (ratio ~ 2)."""
    z = np.array([[0.3, -1.0, 2.0, 0.1]])
    a = np.array([1])

    def err(eta: float) -> float:
        p = _softmax(z)
        real = cegppo.entropy(z + eta * (np.eye(4)[a] - p)) - cegppo.entropy(z)
        return abs(float(real[0]) - 1.01 * float(cegppo.entropy_change_first_order(z, a, np.array([eta]))[0]))

    assert err(1e-3) / err(5e-4) < 2.5


@given(data=st.data())
def test_S11_entropy_change_is_minus_the_covariance_form(data: st.DataObject) -> None:
    """dH = -w Cov_{j~pi}(log pi_j, e_a - pi) (Cui et al. 2505.22617 with dz = w (e_a - pi))."""
    z, ids, w = _head_case(data, "weight")
    p = _softmax(z)
    logp = np.log(p)
    dz = w[:, None] * (np.eye(z.shape[1])[ids] - p)
    cov = (p * (logp - (p * logp).sum(-1, keepdims=True)) * (dz - (p * dz).sum(-1, keepdims=True))).sum(-1)
    np.testing.assert_allclose(cegppo.entropy_change_first_order(z, ids, w), -cov, rtol=1e-10, atol=1e-14)


@given(data=st.data())
def test_S11_low_probability_tokens_move_entropy_with_the_sign_of_their_weight(data: st.DataObject) -> None:
    """If log pi_a < -H then sign(dH) = sign(w): clip_high (A > 0) raises entropy, clip_low (A < 0) lowers it."""
    z = data.draw(logits_arrays(), label="logits")
    n = z.shape[0]
    ids = np.array(data.draw(st.lists(st.integers(0, z.shape[1] - 1), min_size=n, max_size=n), label="ids"))
    w = np.array(data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n), label="sign"))
    low = cegppo.token_log_probs(z, ids) < -cegppo.entropy(z) - 1e-9
    dh = cegppo.entropy_change_first_order(z, ids, w)
    assert np.all(np.sign(dh[low]) == w[low])


def test_S11_beta_scales_the_entropy_change_of_clipped_tokens() -> None:
    """Larger beta_low: a clip_low token lowers entropy faster; larger beta_high: clip_high raises it more."""
    z = np.array([[2.0, 0.5, -1.0, -2.0], [2.0, 0.5, -1.0, -2.0]])
    ids = np.array([3, 3])  # an unlikely token
    lp = cegppo.token_log_probs(z, ids)[:, None]
    old = lp - np.log(np.array([[0.5], [1.5]]))  # ratio 0.5 (below), 1.5 (above)
    adv = np.array([-1.0, 1.0])
    mask = np.ones((2, 1), bool)

    def dh(cfg: cegppo.CEGPPOConfig) -> np.ndarray:
        g = cegppo.policy_loss_grad(lp, old, adv, mask, cfg, "token-sum")[:, 0]
        return cegppo.entropy_change_first_order(z, ids, -1e-2 * g)  # gradient-descent step on the loss

    base = dh(cegppo.CEGPPOConfig(beta_low=0.5, beta_high=0.5))
    assert base[0] < 0 < base[1]
    assert dh(cegppo.CEGPPOConfig(beta_low=1.0, beta_high=0.5))[0] < base[0]
    assert dh(cegppo.CEGPPOConfig(beta_low=0.5, beta_high=1.0))[1] > base[1]
    np.testing.assert_array_equal(dh(cegppo.presets.ppo()), 0.0)  # PPO: clipped tokens do nothing


# ---------------------------------------------------------------- S12 group advantages


def test_S12_values_on_a_fixed_group() -> None:
    r = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 2.5])
    g1, g2 = r[:4], r[4:]
    grpo = cegppo.grpo_advantages(r, 4)
    np.testing.assert_allclose(grpo[:4], (g1 - 0.5) / (np.std(g1, ddof=1) + 1e-6), rtol=1e-15)
    np.testing.assert_allclose(grpo[4:], (g2 - 1.0) / (np.std(g2, ddof=1) + 1e-6), rtol=1e-15)
    np.testing.assert_allclose(cegppo.drgrpo_advantages(r, 4), np.r_[g1 - 0.5, g2 - 1.0], rtol=1e-15)
    loo = np.array([x - (g.sum() - x) / 3 for g in (g1, g2) for x in g])
    np.testing.assert_allclose(cegppo.rloo_advantages(r, 4), loo, rtol=1e-15)
    np.testing.assert_allclose(cegppo.rloo_advantages(r, 4), 4 / 3 * cegppo.drgrpo_advantages(r, 4), rtol=1e-14)
    for name, fn in (("grpo", cegppo.grpo_advantages), ("drgrpo", cegppo.drgrpo_advantages), ("rloo", cegppo.rloo_advantages)):
        np.testing.assert_array_equal(cegppo.group_advantages(r, 4, name), fn(r, 4))
    assert cegppo.GRPO_EPS == 1e-6
    np.testing.assert_allclose(cegppo.grpo_advantages(r, 4, eps=0.5)[:4], (g1 - 0.5) / (np.std(g1, ddof=1) + 0.5))


@pytest.mark.parametrize("estimator", cegppo.ADVANTAGE_ESTIMATORS)
@given(value=st.floats(-1e6, 1e6), g=st.integers(2, 8), prompts=st.integers(1, 3))
def test_S12_4_flat_group_gives_exactly_zero(estimator: str, value: float, g: int, prompts: int) -> None:
    rng = np.random.default_rng(0)
    r = np.concatenate([np.full(g, value + 0.1 * k) for k in range(prompts)])  # every group flat
    adv = cegppo.group_advantages(r, g, estimator)
    assert np.all(adv == 0)
    # A flat group next to a non-flat one stays exactly 0.
    mixed = np.concatenate([np.full(g, value), rng.normal(size=g)])
    assert np.all(cegppo.group_advantages(mixed, g, estimator)[:g] == 0)


@pytest.mark.parametrize("estimator", cegppo.ADVANTAGE_ESTIMATORS)
@given(r=st.lists(st.floats(-10, 10), min_size=4, max_size=4), g=st.sampled_from([2, 4]))
def test_S12_advantages_are_centred_per_group(estimator: str, r: list[float], g: int) -> None:
    adv = cegppo.group_advantages(np.array(r), g, estimator).reshape(-1, g)
    np.testing.assert_allclose(adv.sum(-1), 0, atol=1e-9 * (1 + np.abs(adv).max()))


@pytest.mark.parametrize(
    ("rewards", "g", "exc", "name"),
    [
        (np.zeros(4), 1, ValueError, "group_size"),
        (np.zeros(4), 0, ValueError, "group_size"),
        (np.zeros(4), 2.0, TypeError, "group_size"),
        (np.zeros(5), 2, ValueError, "rewards length"),
        (np.zeros(0), 2, ValueError, "rewards length"),
        (np.zeros((2, 2)), 2, ValueError, "rewards"),
        (np.array(["a", "b"]), 2, TypeError, "rewards"),
    ],
)
@pytest.mark.parametrize("estimator", cegppo.ADVANTAGE_ESTIMATORS)
def test_S12_bad_group_arguments_raise(rewards: np.ndarray, g, exc: type, name: str, estimator: str) -> None:
    with pytest.raises(exc, match=name):
        cegppo.group_advantages(rewards, g, estimator)


def test_S12_bad_estimator_and_eps() -> None:
    with pytest.raises(ValueError, match="estimator"):
        cegppo.group_advantages(np.zeros(4), 2, "ppo")
    with pytest.raises(ValueError, match="eps"):
        cegppo.grpo_advantages(np.zeros(4), 2, eps=0.0)


def test_S12_dtypes() -> None:
    assert cegppo.grpo_advantages(np.zeros(4, np.float32), 2).dtype == np.float32
    assert cegppo.grpo_advantages(np.zeros(4, np.float64), 2).dtype == np.float64
    assert cegppo.grpo_advantages(np.array([0, 1, 1, 1]), 2).dtype.kind == "f"
    assert cegppo.rloo_advantages(np.array([True, False]), 2).tolist() == [1.0, -1.0]


def test_S12_group_advantages_passes_eps_to_grpo_only() -> None:
    """`group_advantages(..., eps=)` reaches GRPO's std guard; Dr.GRPO and RLOO take no eps."""
    r = np.array([0.0, 1.0, 0.0, 1.0])
    centred = r - r.mean()
    np.testing.assert_allclose(cegppo.group_advantages(r, 4, "grpo", eps=1.0), centred / (r.std(ddof=1) + 1.0))
    np.testing.assert_allclose(cegppo.group_advantages(r, 4, "drgrpo", eps=1.0), centred)
    np.testing.assert_allclose(cegppo.group_advantages(r, 4, "rloo", eps=1.0), centred * 4 / 3)


def test_S12_group_advantages_defaults_to_grpo() -> None:
    r = np.array([0.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(cegppo.group_advantages(r, 3), cegppo.grpo_advantages(r, 3))


@pytest.mark.parametrize(("dtype", "expected"), [(np.bool_, np.float64), (np.int16, np.float64), (np.int64, np.float64),
                                                 (np.float16, np.float32), (np.float32, np.float32),
                                                 (np.float64, np.float64)])
@pytest.mark.parametrize("estimator", cegppo.ADVANTAGE_ESTIMATORS)
def test_S12_advantage_dtype(dtype: type, expected: type, estimator: str) -> None:
    """Integer and bool rewards give float64 advantages (exact counts, whatever their width); float rewards
    keep their dtype, at least float32 (float16 would round the group statistics)."""
    r = np.array([0, 1, 1, 0, 1, 1]).astype(dtype)
    adv = cegppo.group_advantages(r, 3, estimator)
    assert adv.dtype == np.dtype(expected)
    np.testing.assert_allclose(adv, cegppo.group_advantages(r.astype(np.float64), 3, estimator), rtol=1e-3)
