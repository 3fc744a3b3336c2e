"""cegppo.jax only (spec S8.3): normalizers as arrays, traced under jit too, and the public names.

What every backend shares is tests/backends (per-token functions, metrics, constants under
differentiation ...) and the conformance suite (`pytest tests/conformance --backend=jax`).
"""

from __future__ import annotations

import cegppo
import cegppo.jax as cg


def test_public_names_match_the_reference_and_torch():
    """cegppo.jax exposes the reference's public names (minus the analytic *_grad helpers) plus global_counts."""
    reference_only = {"policy_loss_grad", "token_log_probs_grad", "entropy_grad", "fused_linear_policy_loss_grad", "__version__"}
    # The family beside CE-GPPO (docs/spec.md S14) is specified in the reference only until the backends compute it.
    family = {
        "FAMILY", "FamilyMember", "CISPOConfig", "CISPOCapConfig", "SAPOConfig", "GSPOConfig",
        "cispo_per_token_objective", "cispo_grad_weight", "sapo_per_token_objective", "sapo_grad_weight",
        "gspo_per_token_objective", "gspo_grad_weight", "gspo_sequence_log_ratio", "family_per_token_objective",
        "family_grad_weight", "family_policy_loss", "family_policy_loss_grad",
    }
    assert family <= set(cegppo.__all__)
    assert set(cegppo.__all__) - reference_only - family <= set(cg.__all__)
    assert "global_counts" in cg.__all__
    assert cg.CEGPPOConfig is cegppo.CEGPPOConfig and cg.TokenRegions is cegppo.TokenRegions
    assert cg.AGG_MODES == cegppo.AGG_MODES and cg.METRIC_KEYS == cegppo.METRIC_KEYS and cg.GRPO_EPS == cegppo.GRPO_EPS
    assert cg.presets is cegppo.presets
    for name in cg.__all__:
        assert hasattr(cg, name), name
