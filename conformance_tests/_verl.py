"""verl-signature losses as conformance ports (the work is done by `cegppo.integrations.verl.verl_port`).

verl registers policy losses as ``fn(old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode, config) -> (pg_loss, *metrics)``. `port_from_verl_loss` is where such a function
becomes a standard port for the kit, as ``cegppo-conformance check --verl-loss NAME`` does.
Importing this module imports neither verl nor torch; calling `port_from_verl_loss` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["port_from_verl_loss"]


def port_from_verl_loss(loss: str | Callable[..., Any]) -> Callable[..., Any]:
    """A standard port wrapping a verl policy loss (a registered name or the function itself).

    The returned callable must take ``(log_prob, old_log_prob, advantages, response_mask, *,
    eps_low, eps_high, beta_low, beta_high, clip_ratio_c)``, build verl's actor config from the
    keywords, call the loss with ``loss_agg_mode="token-mean"`` and return ``pg_loss``.
    """
    from cegppo.integrations.verl import verl_port  # imports torch and verl only when asked for

    return verl_port(loss)
