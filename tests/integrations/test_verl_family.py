"""verl 0.9.1's own CISPO, SAPO and GSPO losses as ports of their members (docs/conformance.md, "Family verdicts").

- each port takes its member's keywords, records the objective and, inside verl's clamps and with no
  padding garbage, equals the reference (`cegppo.family_policy_loss`) in value and gradient;
- the measured verdicts hold: `sapo` ignores the `loss_agg_mode` it is given, `gspo` clamps log s_i at 10
  (no gradient for A < 0 rows above e^10) and lets NaN padding into s_i, `cispo` makes an all-masked batch
  0/0, and none of them detaches the advantages.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from framework_helpers import batch, grad_of
from integration_helpers import need

torch = need("torch")
need("verl")

from cegppo.conformance._port import port_keywords  # noqa: E402
from cegppo.integrations.verl import FAMILY_LOSSES, verl_port  # noqa: E402

CONFIGS = {
    "cispo": cegppo.CISPOConfig(eps_low=0.2, eps_high=0.28),
    "sapo": cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05),
    "gspo": cegppo.GSPOConfig(eps_low=0.2, eps_high=0.3),  # wide enough that some rows are inside at |logr| <= 1.2
}
RTOL = {"cispo": 1e-12, "sapo": 1e-8, "gspo": 1e-8}
"""verl's seq-mean-token-mean (sapo's and gspo's paper aggregation) divides each row by n_i + 1e-8 (with verl's
float mask; a relative 1e-8 / n_i), its token-mean (cispo's) by the plain count."""


def _np(lp, old, adv, mask):
    return lp.detach().numpy(), old.numpy(), adv.numpy(), mask.numpy()


def _loss_and_grad(port, cfg, lp, old, adv, mask, **extra):
    loss = port(lp, old, adv, mask.to(lp.dtype), **port_keywords(cfg), **extra)
    return loss, grad_of(torch, loss, lp)


@pytest.mark.parametrize("name", sorted(FAMILY_LOSSES))
def test_each_port_equals_the_reference_in_its_paper_aggregation(name) -> None:
    cfg = CONFIGS[name]
    port = verl_port(name, objective=FAMILY_LOSSES[name])
    assert port.objective == name
    lp, old, adv, mask = batch(torch, seed=1)
    loss, g = _loss_and_grad(port, cfg, lp, old, adv, mask)
    np.testing.assert_allclose(loss.item(), cegppo.family_policy_loss(*_np(lp, old, adv, mask), cfg), rtol=RTOL[name])
    np.testing.assert_allclose(g.numpy(), cegppo.family_policy_loss_grad(*_np(lp, old, adv, mask), cfg),
                               rtol=max(RTOL[name], 1e-10), atol=1e-15)


def test_a_family_port_refuses_ce_gppo_keywords_and_ce_gppo_stays_available() -> None:
    lp, old, adv, mask = batch(torch, seed=2)
    with pytest.raises(TypeError, match=r"verl_cispo takes the keywords \['eps_high', 'eps_low'\] of a cispo port"):
        verl_port("cispo", objective="cispo")(lp, old, adv, mask, **port_keywords(cegppo.CEGPPOConfig()))
    as_ce_gppo = verl_port("cispo")  # by default verl's CISPO is checked against CE-GPPO, as every verl loss
    assert as_ce_gppo.objective == "ce_gppo"
    as_ce_gppo(lp, old, adv, mask.to(lp.dtype), **port_keywords(cegppo.CEGPPOConfig()))


def test_verl_sapo_ignores_the_loss_agg_mode_it_is_given() -> None:
    cfg = CONFIGS["sapo"]
    lp, old, adv, mask = batch(torch, seed=3)
    loss, _ = _loss_and_grad(verl_port("sapo", objective="sapo"), cfg, lp, old, adv, mask, loss_agg_mode="token-mean")
    arrays = _np(lp, old, adv, mask)
    asked = cegppo.family_policy_loss(*arrays, cfg, agg="token-mean")
    forced = cegppo.family_policy_loss(*arrays, cfg, agg="seq-mean-token-mean")
    assert abs(asked - forced) > 1e-3 * abs(forced)
    np.testing.assert_allclose(loss.item(), forced, rtol=RTOL["sapo"])


def test_verl_gspo_clamps_the_sequence_log_ratio_at_10() -> None:
    """A < 0 rows whose s_i > e^10 get value -e^10 A and no gradient, where the spec has -s_i A and weight s_i."""
    cfg = CONFIGS["gspo"]
    lp, old, adv, mask = batch(torch, seed=4)
    with torch.no_grad():
        lp[2] = old[2] + 12.0  # row 2 is full: s_2 = e^12
        adv[2] = -1.0
    _, g = _loss_and_grad(verl_port("gspo", objective="gspo"), cfg, lp, old, adv, mask)
    ref = cegppo.family_policy_loss_grad(*_np(lp, old, adv, mask), cfg)
    assert torch.all(g[2] == 0) and np.all(ref[2] > 0)
    np.testing.assert_allclose(g[[0, 3, 4, 5]].numpy(), ref[[0, 3, 4, 5]], rtol=RTOL["gspo"], atol=1e-15)


def test_verl_gspo_lets_nan_padding_into_the_sequence_ratio() -> None:
    cfg = CONFIGS["gspo"]
    lp, old, adv, mask = batch(torch, seed=5)
    old = torch.where(mask, old, torch.nan)
    loss, _ = _loss_and_grad(verl_port("gspo", objective="gspo"), cfg, lp, old, adv, mask)
    assert torch.isnan(loss)
    assert np.isfinite(cegppo.family_policy_loss(*_np(lp, old, adv, mask), cfg))


def test_verl_cispo_all_masked_batch_is_nan_and_advantages_get_a_gradient() -> None:
    cfg = CONFIGS["cispo"]
    lp, old, adv, mask = batch(torch, seed=6)
    loss, _ = _loss_and_grad(verl_port("cispo", objective="cispo"), cfg, lp, old, adv, torch.zeros_like(mask))
    assert torch.isnan(loss)  # token-mean divides by mask.sum() = 0; the spec's loss is 0
    adv.requires_grad_(True)
    loss = verl_port("cispo", objective="cispo")(lp, old, adv, mask.to(lp.dtype), **port_keywords(cfg))
    (g_adv,) = torch.autograd.grad(loss, adv)
    assert torch.any(g_adv != 0)  # the spec's advantages are constants of the loss (S9)

