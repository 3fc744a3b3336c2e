"""tunix-signature losses as conformance ports (the work is done by `cegppo.integrations.tunix.tunix_port`).

tunix registers policy losses as ``fn(model, train_example, algo_config, pad_id, eos_id) ->
(loss, aux)`` and computes the log-probs from the model inside the loss. `port_from_tunix` is where
such a function becomes a standard JAX port for the kit, as ``cegppo-conformance check
--framework-loss tunix [--loss [MODULE:]NAME]`` does: the kit's log-probs stand in for the model's, the kit's
hyperparameters reach the loss through a tunix config. Importing this module imports neither jax
nor tunix; calling `port_from_tunix` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._targets import import_target

__all__ = ["port_from_tunix"]


def port_from_tunix(loss: str | Callable[..., Any] | None = None, *, learner: str | None = None) -> Callable[..., Any]:
    """A standard JAX port wrapping a tunix policy loss: None for ``ce_gppo``, a registered name, ``MODULE:NAME``
    (MODULE imported first so that it can register NAME) or the function itself.

    The returned callable takes ``(log_prob, old_log_prob, advantages, response_mask, *, eps_low,
    eps_high, beta_low, beta_high, clip_ratio_c)``, builds a tunix config of `learner`'s family
    (``"grpo"``: ``epsilon``, ``epsilon_high``, ``epsilon_c``, ``beta_low``, ``beta_high``,
    token-mean; ``"ppo"``: ``epsilon_low`` instead of ``epsilon``; default ``"ppo"`` for tunix's
    ``ppo`` loss, else ``"grpo"``) and returns the loss's value. Importing
    `cegppo.integrations.tunix` first registers ``ce_gppo``.

    Raises:
        ValueError: when no tunix policy loss is registered under `loss`.
    """
    from cegppo.integrations.tunix import tunix_port  # imports jax and tunix only when asked for

    if loss is None:
        loss = "ce_gppo"
    if isinstance(loss, str):
        _, loss = import_target(loss)  # MODULE may register the name with tunix
    return tunix_port(loss, learner=learner)
