"""The reference fused head for every family member (docs/spec.md S11.1, S14.1), in float64.

Its value is the unfused composition with `family_policy_loss`; its metrics are `family_metrics`' with
the entropy change split by the member's regions; its gradients are checked against central
differences of the value where the value's derivative is the member's gradient: SAPO (no
stop-gradient) and GSPO with one advantage per sequence in seq-mean-token-mean (spec S14.4). CISPO's
value holds sg(w), so its gradient is checked against autodiff in tests/backends/test_fused.py.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest

MEMBERS = [cegppo.CISPOConfig(), cegppo.CISPOCapConfig(cap=1.1), cegppo.SAPOConfig(),
           cegppo.GSPOConfig(eps_low=0.05, eps_high=0.05)]


def head(seed: int, per_sequence: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    b, t, h, v = 3, 4, 3, 7
    case = {"hidden": rng.normal(size=(b, t, h)), "weight": 0.7 * rng.normal(size=(v, h)),
            "token_ids": rng.integers(0, v, (b, t)), "advantages": rng.normal(size=b if per_sequence else (b, t)),
            "mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)}
    z = case["hidden"] @ case["weight"].T
    case["old_log_prob"] = cegppo.token_log_probs(z, case["token_ids"]) + rng.normal(0, 0.3, (b, t))
    return case


def call(case: dict[str, Any], cfg: Any, fn: Any = cegppo.fused_linear_policy_loss, **opts: Any) -> Any:
    names = ("hidden", "weight", "token_ids", "old_log_prob", "advantages", "mask")
    return fn(*(case[k] for k in names), cfg, **opts)


@pytest.mark.parametrize("cfg", MEMBERS, ids=lambda c: type(c).__name__)
def test_S11_1_S14_fused_value_and_metrics_are_the_unfused_familys(cfg: Any) -> None:
    """value = family_policy_loss(l) - k aggregate_loss(H) in the member's paper aggregation (agg=None);
    the metrics are family_metrics' plus entropy_mean, and the entropy change of the member's regions sums
    to the total first-order change along w = c F A."""
    case = head(1)
    value, metrics = call(case, cfg, entropy_coef=0.02)
    z = case["hidden"] @ case["weight"].T
    lp, m = cegppo.token_log_probs(z, case["token_ids"]), case["mask"]
    paper = cegppo.FAMILY[type(cfg)].paper_agg
    want = (cegppo.family_policy_loss(lp, case["old_log_prob"], case["advantages"], m, cfg)
            - 0.02 * cegppo.aggregate_loss(np.where(m, cegppo.entropy(z), 0), m, paper))
    np.testing.assert_allclose(value, want, rtol=1e-13)
    family = cegppo.family_metrics(lp, case["old_log_prob"], case["advantages"], m, cfg)
    for key, v in family.items():
        np.testing.assert_allclose(metrics[key], v, rtol=1e-13, atol=1e-15, err_msg=key)
    w = -cegppo.family_policy_loss_grad(lp, case["old_log_prob"], case["advantages"], m, cfg)
    total = np.sum(np.where(m, cegppo.entropy_change_first_order(z, case["token_ids"], w), 0))
    by_region = sum(float(metrics[k]) for k in cegppo.FUSED_METRIC_KEYS if k.startswith("entropy_change_"))
    np.testing.assert_allclose(by_region, total, rtol=1e-12)
    if isinstance(cfg, cegppo.SAPOConfig):  # no hard region: all of it is `inside`
        assert float(metrics["entropy_change_clip_low"]) == float(metrics["entropy_change_clip_high"]) == 0.0


@pytest.mark.parametrize("cfg", [cegppo.SAPOConfig(), cegppo.GSPOConfig(eps_low=0.05, eps_high=0.05)],
                         ids=["sapo", "gspo-per-sequence"])
def test_S11_1_S14_fused_gradient_is_the_values_derivative(cfg: Any) -> None:
    """Central differences of the fused value w.r.t. hidden and weight equal its analytic gradient (SAPO; GSPO
    with one advantage per sequence in seq-mean-token-mean, where the token form's gradient is the sequence
    objective's)."""
    case = head(2, per_sequence=isinstance(cfg, cegppo.GSPOConfig))
    grads = call(case, cfg, cegppo.fused_linear_policy_loss_grad, entropy_coef=0.02)
    step = 1e-6
    for name in ("hidden", "weight"):
        fd = np.zeros_like(case[name])
        for idx in np.ndindex(case[name].shape):
            values = []
            for sign in (1, -1):
                moved = dict(case, **{name: case[name].copy()})
                moved[name][idx] += sign * step
                values.append(float(call(moved, cfg, entropy_coef=0.02)[0]))
            fd[idx] = (values[0] - values[1]) / (2 * step)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-9, err_msg=name)


def test_S11_1_ce_gppo_fused_default_aggregation_stays_token_mean() -> None:
    """agg=None (the default) is CE-GPPO's paper aggregation, token-mean: the same value, metrics and
    gradients, bit for bit, as agg="token-mean"."""
    case, cfg = head(3), cegppo.presets.ce_gppo_1p5b()
    default, explicit = call(case, cfg), call(case, cfg, agg="token-mean")
    assert float(default[0]) == float(explicit[0])
    assert {k: float(v) for k, v in default[1].items()} == {k: float(v) for k, v in explicit[1].items()}
    for name, g in call(case, cfg, cegppo.fused_linear_policy_loss_grad).items():
        np.testing.assert_array_equal(g, call(case, cfg, cegppo.fused_linear_policy_loss_grad, agg="token-mean")[name])
