"""The gradient-preserving family in JAX: CISPO, SAPO and GSPO beside CE-GPPO (docs/spec.md clause S14).

The reference's family names and signatures, on JAX arrays, with `jax.grad` gradients equal to the
analytic ones of the spec. Pure functions: `cfg` (a frozen, hashable config), `agg`, `norm_length`
and `validate` are static under `jax.jit`. The arithmetic is the backends' shared one
(`cegppo._backend_family`, over this backend's primitive table); each function's docstring is the
reference's, whose contract it implements. No host sync unless `validate=True`.
"""

from __future__ import annotations

from cegppo._backend_family import FamilyFunctions, family_functions

from ._common import check_array
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
    array_type=check_array,
)  # fmt: skip
