"""User-written OpenRLHF PolicyLoss classes for `cegppo-conformance check --framework-loss openrlhf --loss MODULE:CLASS`.

- ``SwappedBetasPolicyLoss``: a plausible porting bug, beta_low and beta_high read the wrong way round;
- ``UserPolicyLoss``: a correct user port (delegates to cegppo.torch, OpenRLHF's constructor plus the betas).
"""

from __future__ import annotations

from cegppo.integrations.openrlhf import CEGPPOPolicyLoss


class UserPolicyLoss(CEGPPOPolicyLoss):
    """A correct port: cegppo's drop-in under another name."""


class SwappedBetasPolicyLoss(CEGPPOPolicyLoss):
    """The bug: beta_low and beta_high swapped on the way into the config."""

    def __init__(self, *args, beta_low=None, beta_high=None, **kwargs) -> None:
        super().__init__(*args, beta_low=beta_high, beta_high=beta_low, **kwargs)
