"""cegppo: CE-GPPO (arXiv 2509.20712) as an executable NumPy reference.

``import cegppo`` needs only NumPy; it is the specification every backend is tested against
(docs/spec.md). Pick a framework by importing its backend: ``import cegppo.torch as cg`` or
``import cegppo.jax as cg`` expose the same names with autodiff gradients.
"""

from __future__ import annotations

from . import presets
from ._advantages import GRPO_EPS, drgrpo_advantages, group_advantages, grpo_advantages, rloo_advantages
from ._aggregation import aggregate_loss, aggregation_weights, local_counts
from ._aggregation_modes import AGG_MODES
from ._cispo import CISPOCapConfig, CISPOConfig, cispo_grad_weight, cispo_per_token_objective
from ._config import CEGPPOConfig
from ._estimators import ADVANTAGE_ESTIMATORS
from ._family import (
    FAMILY,
    FamilyMember,
    family_grad_weight,
    family_metrics,
    family_per_token_objective,
    family_policy_loss,
    family_policy_loss_grad,
)
from ._fused import fused_linear_policy_loss, fused_linear_policy_loss_grad
from ._gspo import GSPOConfig, gspo_grad_weight, gspo_per_token_objective, gspo_sequence_log_ratio
from ._logits import entropy, entropy_change_first_order, entropy_grad, token_log_probs, token_log_probs_grad
from ._loss import policy_loss, policy_loss_grad, policy_metrics
from ._metrics import FUSED_METRIC_KEYS, METRIC_KEYS
from ._objective import TokenRegions, grad_weight, per_token_objective, token_regions
from ._sapo import SAPOConfig, sapo_grad_weight, sapo_per_token_objective

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it; CHANGELOG.md)

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
    "__version__",
    "aggregate_loss",
    "aggregation_weights",
    "cispo_grad_weight",
    "cispo_per_token_objective",
    "drgrpo_advantages",
    "entropy",
    "entropy_change_first_order",
    "entropy_grad",
    "family_grad_weight",
    "family_metrics",
    "family_per_token_objective",
    "family_policy_loss",
    "family_policy_loss_grad",
    "fused_linear_policy_loss",
    "fused_linear_policy_loss_grad",
    "grad_weight",
    "group_advantages",
    "grpo_advantages",
    "gspo_grad_weight",
    "gspo_per_token_objective",
    "gspo_sequence_log_ratio",
    "local_counts",
    "per_token_objective",
    "policy_loss",
    "policy_loss_grad",
    "policy_metrics",
    "presets",
    "rloo_advantages",
    "sapo_grad_weight",
    "sapo_per_token_objective",
    "token_log_probs",
    "token_log_probs_grad",
    "token_regions",
]
