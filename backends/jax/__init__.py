"""cegppo.jax: CE-GPPO (arXiv 2509.20712) in JAX, with the NumPy reference's names and signatures.

    import cegppo.jax as cg
    cfg = cg.presets.ce_gppo_official()
    loss_fn = jax.jit(functools.partial(cg.policy_loss, cfg=cfg, agg="token-mean"))
    loss, grad = jax.value_and_grad(loss_fn)(log_prob, old_log_prob, advantages, mask)

Everything is a pure function of arrays; the configuration (`cfg`, a frozen and hashable
`CEGPPOConfig`), `agg`, `norm_length`, `validate` and `chunk_size` are static Python values: close
over them (`functools.partial`) or pass them through `static_argnames`. `num_tokens` / `num_seqs`
may be traced. Gradients come from `jax.grad` and equal the reference's analytic ones (spec S4);
the functions compose with `jax.jit`, `jax.grad`, `jax.vmap`, sharded arrays
(`jax.sharding.NamedSharding`) and `shard_map` (`global_counts`). Numerics follow docs/spec.md
clause S9: log-space ratio, select-then-exponentiate, masked garbage ignored, empty batch 0,
bf16/fp16 computed in float32, float64 kept with `jax.config.update("jax_enable_x64", True)`.

Only this subpackage imports jax.
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "jax", ["jax", "jaxlib"])  # first: a missing one is named with its extra

from cegppo import presets
from cegppo._aggregation_modes import AGG_MODES
from cegppo._cispo import CISPOCapConfig, CISPOConfig
from cegppo._config import CEGPPOConfig
from cegppo._estimators import ADVANTAGE_ESTIMATORS
from cegppo._family import FamilyMember
from cegppo._gspo import GSPOConfig
from cegppo._metrics import FUSED_METRIC_KEYS
from cegppo._sapo import SAPOConfig

from ._advantages import GRPO_EPS, drgrpo_advantages, group_advantages, grpo_advantages, rloo_advantages
from ._aggregation import aggregate_loss, aggregation_weights, global_counts, local_counts
from ._family import (
    FAMILY,
    cispo_grad_weight,
    cispo_per_token_objective,
    family_grad_weight,
    family_metrics,
    family_per_token_objective,
    family_policy_loss,
    gspo_grad_weight,
    gspo_per_token_objective,
    gspo_sequence_log_ratio,
    sapo_grad_weight,
    sapo_per_token_objective,
)
from ._fused import fused_linear_policy_loss
from ._logits import entropy, entropy_change_first_order, token_log_probs
from ._loss import METRIC_KEYS, policy_loss, policy_metrics
from ._objective import TokenRegions, grad_weight, per_token_objective, token_regions

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "FAMILY",
    "FUSED_METRIC_KEYS",
    "GRPO_EPS",
    "METRIC_KEYS",
    "CEGPPOConfig",
    "CISPOCapConfig",
    "CISPOConfig",
    "FamilyMember",
    "GSPOConfig",
    "SAPOConfig",
    "TokenRegions",
    "aggregate_loss",
    "aggregation_weights",
    "cispo_grad_weight",
    "cispo_per_token_objective",
    "drgrpo_advantages",
    "entropy",
    "entropy_change_first_order",
    "family_grad_weight",
    "family_metrics",
    "family_per_token_objective",
    "family_policy_loss",
    "fused_linear_policy_loss",
    "global_counts",
    "grad_weight",
    "group_advantages",
    "grpo_advantages",
    "gspo_grad_weight",
    "gspo_per_token_objective",
    "gspo_sequence_log_ratio",
    "local_counts",
    "per_token_objective",
    "policy_loss",
    "policy_metrics",
    "presets",
    "rloo_advantages",
    "sapo_grad_weight",
    "sapo_per_token_objective",
    "token_log_probs",
    "token_regions",
]
