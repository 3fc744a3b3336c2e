"""SkyRL 0.3.0's own ``cispo``, ``sapo`` and ``gspo`` losses as ports of their members (docs/conformance.md,
"Family verdicts"; run in the ``skyrl`` nox session).

- each port takes its member's keywords (CISPO's eps reach SkyRL's ``cispo.cispo_eps_clip_low/high``) and,
  without empty rows or padding garbage, equals the reference in its paper aggregation, scaled by SkyRL's own
  ``loss_reduction`` (``cispo`` to float32 rounding: SkyRL exponentiates the ratio in float32);
- the measured verdicts hold: SkyRL's ``sequence_mean`` divides by all B rows (an empty row counts), `gspo`
  clamps log s_i at 10, `cispo`'s masking by multiplication turns -inf padding into a NaN loss;
- modes SkyRL has no reduction for are refused.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from framework_helpers import batch, grad_of
from integration_helpers import need_framework

torch = need_framework("torch", "skyrl")
need_framework("skyrl", "skyrl")

from cegppo.conformance._port import port_keywords  # noqa: E402
from cegppo.integrations.skyrl import FAMILY_LOSSES, skyrl_port  # noqa: E402

CONFIGS = {
    "cispo": cegppo.CISPOConfig(eps_low=0.2, eps_high=0.28),
    "sapo": cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05),
    "gspo": cegppo.GSPOConfig(eps_low=0.2, eps_high=0.3),
}
RTOL = {"cispo": 1e-6, "sapo": 1e-12, "gspo": 1e-12}
"""SkyRL's cispo exponentiates the log-ratio in float32 (``safe_exp_delta``); the others stay in float64."""


def _np(lp, old, adv, mask):
    return lp.detach().numpy(), old.numpy(), adv.numpy(), mask.numpy()


def _run(name, lp, old, adv, mask, **extra):
    loss = skyrl_port(name, objective=name)(lp, old, adv, mask, **port_keywords(CONFIGS[name]), **extra)
    return loss, grad_of(torch, loss, lp)


@pytest.mark.parametrize("name", sorted(FAMILY_LOSSES))
def test_each_port_equals_the_reference_without_empty_rows(name) -> None:
    cfg = CONFIGS[name]
    assert skyrl_port(name, objective=FAMILY_LOSSES[name]).objective == name
    lp, old, adv, mask = batch(torch, seed=21)
    mask[1, 0] = True
    loss, g = _run(name, lp, old, adv, mask)
    arrays = _np(lp, old, adv, mask)
    np.testing.assert_allclose(loss.item(), cegppo.family_policy_loss(*arrays, cfg), rtol=RTOL[name])
    np.testing.assert_allclose(g.numpy(), cegppo.family_policy_loss_grad(*arrays, cfg), rtol=RTOL[name], atol=1e-12)


@pytest.mark.parametrize("name", ["sapo", "gspo"])
def test_sequence_mean_counts_empty_rows(name) -> None:
    lp, old, adv, mask = batch(torch, seed=22)  # row 1 empty: SkyRL divides by B = 6, the spec by 5
    loss, _ = _run(name, lp, old, adv, mask)
    np.testing.assert_allclose(loss.item() * 6 / 5, cegppo.family_policy_loss(*_np(lp, old, adv, mask), CONFIGS[name]),
                               rtol=1e-12)


def test_gspo_clamps_the_sequence_log_ratio_at_10() -> None:
    lp, old, adv, mask = batch(torch, seed=23)
    with torch.no_grad():
        lp[2] = old[2] + 12.0  # row 2 is full: s_2 = e^12
        adv[2] = -1.0
    _, g = _run("gspo", lp, old, adv, mask)
    ref = cegppo.family_policy_loss_grad(*_np(lp, old, adv, mask), CONFIGS["gspo"])
    assert torch.all(g[2] == 0) and np.all(ref[2] > 0)


def test_cispo_minus_inf_padding_gives_a_nan_loss() -> None:
    lp, old, adv, mask = batch(torch, seed=24)
    lp = torch.where(mask, lp.detach(), -torch.inf).requires_grad_(True)
    loss = skyrl_port("cispo", objective="cispo")(lp, old, adv, mask, **port_keywords(CONFIGS["cispo"]))
    assert torch.isnan(loss)
    assert np.isfinite(cegppo.family_policy_loss(*_np(lp, old, adv, mask), CONFIGS["cispo"]))


def test_modes_without_a_skyrl_reduction_are_refused() -> None:
    lp, old, adv, mask = batch(torch, seed=25)
    with pytest.raises(ValueError, match="SkyRL's loss_reduction"):
        _run("sapo", lp, old, adv, mask, loss_agg_mode="token-sum")
