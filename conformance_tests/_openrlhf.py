"""OpenRLHF ``PolicyLoss`` classes as conformance ports (the work is done by `cegppo.integrations.openrlhf`).

OpenRLHF's actor builds ``PolicyLoss(clip_eps_low, clip_eps_high, dual_clip, token_level_loss, ...)``
and calls it as ``loss_fn(log_probs, old_log_probs, advantages, action_mask=...)``, returning
``(loss, clip_ratio, ppo_kl, vllm_kl, is_filter_ratio)``. `port_from_openrlhf` is where such a class
becomes a standard port for the kit, as ``cegppo-conformance check --framework-loss openrlhf`` does.
Importing this module imports neither OpenRLHF nor torch; calling `port_from_openrlhf` does.
"""

from __future__ import annotations

from typing import Any

from ._targets import import_target

__all__ = ["port_from_openrlhf"]


def port_from_openrlhf(loss: str | type[Any] | None = None) -> Any:
    """A standard port wrapping an OpenRLHF ``PolicyLoss``-like class.

    Args:
        loss: None for cegppo's `CEGPPOPolicyLoss`; a class; or ``[MODULE:]NAME``: the class NAME of
            MODULE (imported first; the current directory is importable), or without MODULE a name
            of `cegppo.integrations.openrlhf`: ``CEGPPOPolicyLoss``, or ``PolicyLoss`` (OpenRLHF's
            own PPO loss, ``openrlhf.models.loss.PolicyLoss``).

    The port builds the class with the kit's eps and dual clip (and betas, when its constructor takes
    ``beta_low``/``beta_high``), calls it as OpenRLHF's actor does without global normaliser, and
    returns the loss (`cegppo.integrations.openrlhf.openrlhf_port`).

    Raises:
        ValueError: a NAME that MODULE (or the integration) does not have.
        TypeError: what NAME names is not a class.
    """
    from cegppo.integrations import openrlhf as integration  # imports torch and OpenRLHF's loss layer

    if loss is None or isinstance(loss, type):
        return integration.openrlhf_port(loss)
    module, name = import_target(loss)
    cls = getattr(module or integration, name, None)
    if cls is None:
        where = loss.rpartition(":")[0] or "cegppo.integrations.openrlhf (CEGPPOPolicyLoss, PolicyLoss)"
        raise ValueError(f"no OpenRLHF policy loss class {name!r} in {where}")
    return integration.openrlhf_port(cls)
