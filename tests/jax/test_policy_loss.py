"""cegppo.jax only (spec S8.3): normalizers as arrays, traced under jit too, and the public names.

What every backend shares is tests/backends (per-token functions, metrics, constants under
differentiation ...) and the conformance suite (`pytest tests/conformance --backend=jax`).
"""

from __future__ import annotations

import cegppo
import cegppo.jax as cg


def test_public_names_match_the_reference_and_torch():
    """cegppo.jax exposes the reference's public names (minus the analytic *_grad helpers) plus global_counts; the
    family's config types are the reference's."""
    reference_only = {"policy_loss_grad", "token_log_probs_grad", "entropy_grad", "fused_linear_policy_loss_grad",
                      "family_policy_loss_grad", "__version__"}
    assert set(cegppo.__all__) - reference_only <= set(cg.__all__)
    assert "global_counts" in cg.__all__
    assert cg.CEGPPOConfig is cegppo.CEGPPOConfig and cg.TokenRegions is cegppo.TokenRegions
    assert cg.AGG_MODES == cegppo.AGG_MODES and cg.METRIC_KEYS == cegppo.METRIC_KEYS and cg.GRPO_EPS == cegppo.GRPO_EPS
    assert cg.presets is cegppo.presets
    for name in ("CISPOConfig", "CISPOCapConfig", "SAPOConfig", "GSPOConfig", "FamilyMember"):
        assert getattr(cg, name) is getattr(cegppo, name), name
    for name in cg.__all__:
        assert hasattr(cg, name), name
