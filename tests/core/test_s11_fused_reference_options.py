"""The fused head's float64 reference with each of its options (docs/spec.md S8.2, S9.6, S11, S11.1).

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed the reference checked
only with explicit temperature and entropy coefficient, per-sequence advantages and no global
normalizer: dropping the normalizers from one term, a wrong default, the sign of the entropy-change
metric or its validate=True checks went unnoticed.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest

CFG = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.5, beta_high=1.0, dual_clip=3.0)


def _head(seed: int, *, per_token: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    b, t, h, v = 3, 5, 4, 6
    mask = rng.random((b, t)) < 0.8
    mask[0, :2] = True
    return {
        "hidden": rng.normal(size=(b, t, h)),
        "weight": rng.normal(size=(v, h)),
        "token_ids": rng.integers(0, v, size=(b, t)),
        "old_log_prob": rng.normal(size=(b, t)) - 2.0,  # log-ratios of about +-1: every region
        "advantages": rng.normal(size=(b, t)) if per_token else rng.normal(size=b),
        "mask": mask,
        "bias": rng.normal(size=v),
    }


def _fused(a: dict[str, Any], **options: Any) -> tuple[float, dict[str, Any]]:
    loss, metrics = cegppo.fused_linear_policy_loss(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"],
                                                    a["advantages"], a["mask"], CFG, bias=a["bias"], **options)
    return float(loss), metrics


def _composition(a: dict[str, Any], *, temperature: float = 1.0, entropy_coef: float = 0.0, agg: str = "token-mean",
                 **norm: Any) -> float:
    """The loss as the spec composes it from the unfused reference functions (S11.1)."""
    z = (a["hidden"] @ a["weight"].T + a["bias"]) / temperature
    lp = cegppo.token_log_probs(z, a["token_ids"])
    adv = a["advantages"] if a["advantages"].ndim == 2 else np.broadcast_to(a["advantages"][:, None], lp.shape)
    policy = cegppo.policy_loss(lp, a["old_log_prob"], adv, a["mask"], CFG, agg, **norm)
    bonus = cegppo.aggregate_loss(cegppo.entropy(z), a["mask"], agg, **norm)
    return float(policy - entropy_coef * bonus)


def test_defaults_are_temperature_1_and_no_entropy_bonus() -> None:
    a = _head(0)
    assert _fused(a)[0] == pytest.approx(_composition(a), rel=1e-12)


def test_per_token_advantages() -> None:
    a = _head(1, per_token=True)
    assert _fused(a, temperature=0.7, entropy_coef=0.02)[0] == pytest.approx(
        _composition(a, temperature=0.7, entropy_coef=0.02), rel=1e-12)


@pytest.mark.parametrize(("agg", "norm"), [
    ("token-mean", {"num_tokens": 37.0}),
    ("seq-mean-token-sum", {"num_seqs": 7.0}),
    ("seq-mean-token-mean", {"num_seqs": 5}),
    ("seq-mean-token-sum-norm", {"num_seqs": 6.0, "norm_length": 11.0}),
])
def test_global_normalizers_reach_every_term_value_and_gradients(agg: str, norm: dict[str, Any]) -> None:
    """The value with the batch's own counts differs; the gradients scale with it (both the policy part
    and the entropy bonus are divided by the same normalizer)."""
    a = _head(2)
    got = _fused(a, temperature=0.9, entropy_coef=0.05, agg=agg, **norm)[0]
    assert got == pytest.approx(_composition(a, temperature=0.9, entropy_coef=0.05, agg=agg, **norm), rel=1e-12)
    assert got != pytest.approx(_composition(a, temperature=0.9, entropy_coef=0.05, agg=agg), rel=1e-6)
    grads = cegppo.fused_linear_policy_loss_grad(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"],
                                                 a["advantages"], a["mask"], CFG, bias=a["bias"], temperature=0.9,
                                                 entropy_coef=0.05, agg=agg, **norm)
    doubled = {k: v * 2 for k, v in norm.items() if k != "norm_length"}
    halved = cegppo.fused_linear_policy_loss_grad(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"],
                                                  a["advantages"], a["mask"], CFG, bias=a["bias"], temperature=0.9,
                                                  entropy_coef=0.05, agg=agg, **{**norm, **doubled})
    for name in ("hidden", "weight", "bias"):
        np.testing.assert_allclose(halved[name], grads[name] / 2, rtol=1e-12, atol=1e-15, err_msg=name)


def test_entropy_mean_with_one_valid_token() -> None:
    a = _head(3)
    a["mask"] = np.zeros_like(a["mask"])
    a["mask"][1, 2] = True
    z = (a["hidden"] @ a["weight"].T + a["bias"]) / 1.3
    assert _fused(a, temperature=1.3)[1]["entropy_mean"] == pytest.approx(float(cegppo.entropy(z)[1, 2]), rel=1e-12)


def test_entropy_change_metrics_are_the_finite_difference_of_a_gradient_step_on_the_logits() -> None:
    """S11: per region, sum over its tokens of (H(z_t - eta g_t) - H(z_t)) / eta as eta -> 0, where g_t is
    the policy part's gradient with respect to token t's logits (the entropy bonus excluded). Checked by
    central differences, independently of `entropy_change_first_order`."""
    a = _head(4, per_token=True)
    tau = 1.2
    z = (a["hidden"] @ a["weight"].T + a["bias"]) / tau
    a["mask"] = np.ones_like(a["mask"])
    a["mask"][2, 4] = False
    ids, m = a["token_ids"], a["mask"]
    lp = cegppo.token_log_probs(z, ids)
    # log-ratios and advantage signs laid out so that every region has tokens (S2)
    logr = np.resize([-0.6, 0.1, 0.6, 1.6, -0.6, 0.6], m.shape)
    a["advantages"] = np.resize([-1.0, 0.5, 1.0, -2.0, 1.0, -0.5], m.shape)
    a["old_log_prob"] = lp - logr
    adv = a["advantages"]
    _, metrics = _fused(a, temperature=tau, entropy_coef=0.3)  # the bonus must not enter the metric
    g_lp = cegppo.policy_loss_grad(lp, a["old_log_prob"], adv, m, CFG)
    g_z = cegppo.token_log_probs_grad(z, ids, g_lp)  # d policy loss / d z_t, per token
    eta = 1e-5
    change = (cegppo.entropy(z - eta * g_z) - cegppo.entropy(z + eta * g_z)) / (2 * eta)
    regions = cegppo.token_regions(lp, a["old_log_prob"], adv, CFG)
    seen = 0
    for name in ("inside", "clip_low", "clip_high", "dual_clip"):
        expected = float(np.sum(np.where(getattr(regions, name) & m, change, 0.0)))
        key = next(k for k in metrics if k.startswith("entropy_change") and k.endswith(name))
        assert metrics[key] == pytest.approx(expected, rel=1e-5, abs=1e-9), name
        seen += int(np.any(getattr(regions, name) & m))
    assert seen == 4  # every region has tokens, so no sum is 0 by construction


@pytest.mark.parametrize("name", ["old_log_prob", "advantages"])
def test_validate_refuses_non_finite_values_at_valid_positions_only(name: str) -> None:
    a = _head(5, per_token=True)
    a[name] = a[name].copy()
    m = a["mask"]
    a[name][~m] = np.nan  # masked garbage: accepted, validated or not
    _fused(a, validate=True)
    a[name][0, 0] = np.inf  # a valid position (mask[0, :2] is True)
    with np.errstate(invalid="ignore"):
        _fused(a)  # unvalidated: no check reads the values (the loss is whatever the arithmetic gives)
    with pytest.raises(ValueError, match=rf"^{name} holds non-finite values at valid \(mask = True\) positions$"):
        _fused(a, validate=True)


def test_token_ids_out_of_range_at_a_valid_position_name_it() -> None:
    a = _head(6)
    a["token_ids"] = a["token_ids"].copy()
    a["token_ids"][~a["mask"]] = -100  # padding ids at masked positions are fine
    _fused(a)
    a["token_ids"][0, 0] = 6
    with pytest.raises(ValueError, match=r"^token_ids must lie in \[0, 6\) at valid \(mask = True\) positions, "
                                         r"got values in \[\d+, 6\]$"):
        _fused(a)
