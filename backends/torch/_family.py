"""CISPO, SAPO and GSPO beside CE-GPPO in PyTorch (docs/spec.md clause S14), on tensors of any device.

Autograd gives the analytic gradients of the spec; nothing reads a tensor back to the host unless
`validate=True`, so `torch.compile(..., fullgraph=True)` compiles each member without a graph break.
The functions are the backends' shared ones (`cegppo._backend_family`) bound to torch's primitive
table and to this backend's CE-GPPO functions; each keeps the reference's signature and docstring.
"""

from __future__ import annotations

from cegppo._backend_family import FamilyFunctions, family_functions

from ._loss import metrics_from_regions, policy_loss, policy_metrics
from ._objective import grad_weight, per_token_objective, token_regions
from ._ops import OPS

__all__ = list(FamilyFunctions._fields)

# The reference's names, in the order of FamilyFunctions. FAMILY maps a config type to its row
# (`cegppo.FamilyMember`) with this backend's per-token functions.
(
    FAMILY, cispo_per_token_objective, cispo_grad_weight, sapo_per_token_objective, sapo_grad_weight,
    gspo_per_token_objective, gspo_grad_weight, gspo_sequence_log_ratio, family_per_token_objective,
    family_grad_weight, family_policy_loss, family_metrics,
) = family_functions(
    OPS, __name__.rpartition(".")[0], policy_loss=policy_loss, per_token_objective=per_token_objective,
    grad_weight=grad_weight, token_regions=token_regions, policy_metrics=policy_metrics,
    metrics_from_regions=metrics_from_regions,
)  # fmt: skip
