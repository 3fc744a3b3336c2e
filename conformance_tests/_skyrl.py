"""SkyRL policy losses as conformance ports (the work is done by `cegppo.integrations.skyrl.skyrl_port`).

SkyRL registers policy losses as ``fn(log_probs, old_log_probs, advantages, config, loss_mask,
rollout_logprobs) -> (loss, metrics)`` in its ``PolicyLossRegistry``; the loss is a masked sum over
advantages that SkyRL has scaled for its ``loss_reduction``. `port_from_skyrl` is where such a
function becomes a standard port for the kit, as ``cegppo-conformance check --framework-loss
skyrl`` does. Importing this module imports neither SkyRL nor torch; calling `port_from_skyrl` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._targets import import_target

__all__ = ["port_from_skyrl"]


def port_from_skyrl(loss: str | Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A standard port wrapping a SkyRL policy loss.

    Args:
        loss: None for ``ce_gppo`` (registered by `cegppo.integrations.skyrl`); a registered name
            (``regular``, ``dual_clip``, ...); ``MODULE:NAME``, MODULE imported first so that it can
            register NAME (the current directory is importable); or the loss function itself.

    The port passes the kit's hyperparameters in SkyRL's algorithm config (eps as
    ``eps_clip_low/high``, c as ``clip_ratio_c``, the betas as ``beta_low/beta_high``) and
    advantages scaled for SkyRL's ``token_mean`` reduction, and returns the loss.

    Raises:
        ValueError: no SkyRL policy loss is registered under the name.
    """
    from cegppo.integrations.skyrl import LOSS_NAME, skyrl_port  # imports torch and SkyRL's loss layer

    if loss is None:
        return skyrl_port(LOSS_NAME)
    if callable(loss):
        return skyrl_port(loss)
    _, name = import_target(loss)  # MODULE may register `name` with SkyRL
    return skyrl_port(name)
