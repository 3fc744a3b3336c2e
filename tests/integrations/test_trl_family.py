"""TRL 1.16.0's own ``loss_type="cispo"`` and ``"sapo"`` through `cegppo.integrations.trl.trl_port` (docs/conformance.md,
"Family verdicts"): the port runs GRPOTrainer's loss lines on the kit's log-probs.

- ``cispo`` is `cegppo.CISPOCapConfig` (cap = ``epsilon_high``), value and gradient, every row valid or not;
- ``sapo`` is `cegppo.SAPOConfig` with the temperatures rounded to float32 (TRL's ``torch.where`` of two Python
  floats), and averages over all B rows, an empty row counting as a zero;
- NaN padding reaches both losses (the mask multiplies); a bad loss type is a ValueError.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from framework_helpers import batch, grad_of
from integration_helpers import need

torch = need("torch")
need("trl")
need("datasets")

from cegppo.conformance._port import port_keywords  # noqa: E402
from cegppo.integrations.trl import FAMILY_LOSSES, trl_port  # noqa: E402


def _np(lp, old, adv, mask):
    return lp.detach().numpy(), old.numpy(), adv.numpy(), mask.numpy()


def _run(name, cfg, lp, old, adv, mask):
    loss = trl_port(name)(lp, old, adv, mask, **port_keywords(cfg))
    return loss, grad_of(torch, loss, lp)


def test_cispo_is_the_absolute_cap_form() -> None:
    cfg = cegppo.CISPOCapConfig(cap=1.3)
    assert trl_port("cispo").objective == FAMILY_LOSSES["cispo"] == "cispo_cap"
    lp, old, adv, mask = batch(torch, seed=11)  # row 1 empty: token-mean does not care
    loss, g = _run("cispo", cfg, lp, old, adv, mask)
    np.testing.assert_allclose(loss.item(), cegppo.family_policy_loss(*_np(lp, old, adv, mask), cfg), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), cegppo.family_policy_loss_grad(*_np(lp, old, adv, mask), cfg),
                               rtol=1e-10, atol=1e-15)


def test_sapo_uses_float32_temperatures_and_counts_empty_rows() -> None:
    cfg = cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05)
    lp, old, adv, mask = batch(torch, seed=12)
    mask[1, 0] = True  # no empty row first
    loss, g = _run("sapo", cfg, lp, old, adv, mask)
    arrays = _np(lp, old, adv, mask)
    exact = cegppo.family_policy_loss(*arrays, cfg)
    assert 1e-9 < abs(loss.item() - exact) / abs(exact) < 1e-6  # float64 inputs, float32 rounding
    as_float32 = cegppo.SAPOConfig(tau_pos=float(np.float32(cfg.tau_pos)), tau_neg=float(np.float32(cfg.tau_neg)))
    np.testing.assert_allclose(loss.item(), cegppo.family_policy_loss(*arrays, as_float32), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), cegppo.family_policy_loss_grad(*arrays, as_float32), rtol=1e-10, atol=1e-15)

    lp, old, adv, mask = batch(torch, seed=12)  # row 1 empty: TRL divides by B = 6, the spec by the 5 valid rows
    loss, _ = _run("sapo", as_float32, lp, old, adv, mask)
    np.testing.assert_allclose(loss.item() * 6 / 5, cegppo.family_policy_loss(*_np(lp, old, adv, mask), as_float32),
                               rtol=1e-12)


@pytest.mark.parametrize(("name", "cfg"), [("cispo", cegppo.CISPOCapConfig(cap=5.0)), ("sapo", cegppo.SAPOConfig())])
def test_nan_padding_reaches_the_loss(name, cfg) -> None:
    lp, old, adv, mask = batch(torch, seed=13)
    adv = torch.where(mask, adv, torch.nan)
    loss = trl_port(name)(lp, old, adv, mask, **port_keywords(cfg))
    assert torch.isnan(loss)
    assert np.isfinite(cegppo.family_policy_loss(*_np(lp, old, adv, mask), cfg))


def test_only_family_loss_types() -> None:
    with pytest.raises(ValueError, match="loss_type must be one of"):
        trl_port("dapo")
