"""cegppo.jax only (spec S8.3): normalizers as arrays, traced under jit too, and the public names.

What every backend shares is tests/backends (per-token functions, metrics, constants under
differentiation ...) and the conformance suite (`pytest tests/conformance --backend=jax`).
"""

from __future__ import annotations

import cegppo
import cegppo.jax as cg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_cases import to_np


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_normalizers_as_python_numbers_or_0d_arrays(agg):
    """num_tokens / num_seqs as a Python int, a 0-d int32 array (what global_counts returns, also
    traced under jit) or a 0-d float array give the loss and gradient of the same Python float (the
    conformance suite, which owns value, gradient and micro-batch additivity, passes Python floats)."""
    rng = np.random.default_rng(5)
    lp = rng.uniform(-3, 0, (3, 4))
    olp = lp - rng.uniform(-0.5, 0.5, (3, 4))
    adv = rng.normal(size=(3, 4))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], bool)
    cfg = cegppo.presets.ce_gppo_official()
    n_tok, n_seq = cg.global_counts(jnp.asarray(mask))
    assert n_tok.dtype == jnp.int32 and n_tok.shape == () and int(n_tok) == 8 and int(n_seq) == 3

    def run(num_tokens, num_seqs):
        return jax.value_and_grad(lambda x: cg.policy_loss(x, olp, adv, mask, cfg, agg, num_tokens, num_seqs))(
            jnp.asarray(lp))

    want_loss, want_grad = run(11.0, 5.0)
    assert float(want_loss) == pytest.approx(float(cegppo.policy_loss(lp, olp, adv, mask, cfg, agg, num_tokens=11.0,
                                                                      num_seqs=5.0)), rel=1e-12)
    jitted = jax.jit(lambda x, nt, ns: jax.value_and_grad(lambda y: cg.policy_loss(y, olp, adv, mask, cfg, agg, nt, ns))(x))
    for num_tokens, num_seqs in [(11, 5), (jnp.asarray(11, jnp.int32), jnp.asarray(5, jnp.int32)),
                                 (jnp.asarray(11.0, jnp.float32), jnp.asarray(5.0, jnp.float32)),
                                 (n_tok + 3, n_seq + 2)]:
        for loss, grad in (run(num_tokens, num_seqs), jitted(jnp.asarray(lp), num_tokens, num_seqs)):
            assert loss.dtype == jnp.float64 and loss.shape == ()
            np.testing.assert_allclose(to_np(loss), to_np(want_loss), rtol=1e-15, atol=0)
            np.testing.assert_allclose(to_np(grad), to_np(want_grad), rtol=1e-15, atol=0)


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
