"""cegppo.torch: CE-GPPO in PyTorch, with autograd gradients (docs/backends.md).

Same names and signatures as the NumPy reference (`import cegppo`), taking and returning
torch tensors on any device:

    import cegppo, cegppo.torch as cg
    cfg = cegppo.presets.ce_gppo_7b()
    loss = cg.policy_loss(log_prob, old_log_prob, advantages, mask, cfg, agg="token-mean")

Numerics follow docs/spec.md clause S9 (log space, select-then-exponentiate, masked garbage is
inert, bf16/fp16 computed in float32, float64 kept). For data parallelism, `global_counts` gives
the global normalizers with one all-reduce; see its docstring for the DDP/FSDP gradient factor.
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "torch", ["torch"])  # first: a missing one is named with its extra

from cegppo import presets
from cegppo._aggregation_modes import AGG_MODES
from cegppo._cispo import CISPOCapConfig, CISPOConfig
from cegppo._config import CEGPPOConfig
from cegppo._estimators import ADVANTAGE_ESTIMATORS
from cegppo._family import FamilyMember
from cegppo._gspo import GSPOConfig
from cegppo._metrics import FUSED_METRIC_KEYS
from cegppo._objective import TokenRegions
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
from ._objective import grad_weight, per_token_objective, token_regions

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
