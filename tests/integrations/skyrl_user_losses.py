"""User-written SkyRL policy losses for `cegppo-conformance check --framework-loss skyrl --loss MODULE:NAME`.

Importing this module registers them with SkyRL, as a user's own module would:

- ``ce_gppo_swapped_betas``: a plausible porting bug, beta_low and beta_high read the wrong way round;
- ``ce_gppo_user_port``: a correct user port (cegppo.torch with SkyRL's config, a masked sum).
"""

from __future__ import annotations

import cegppo.torch as cg
from cegppo.integrations.skyrl import PolicyLossRegistry, cegppo_config_from_skyrl


def _loss(cfg, log_probs, old_log_probs, advantages, loss_mask):
    return cg.policy_loss(log_probs, old_log_probs, advantages, loss_mask != 0, cfg, agg="token-sum"), {}


def swapped_betas(log_probs, old_log_probs, advantages, config, loss_mask=None, rollout_logprobs=None):
    cfg = cegppo_config_from_skyrl(config)
    cfg = cfg.replace(beta_low=cfg.beta_high, beta_high=cfg.beta_low)  # the bug
    return _loss(cfg, log_probs, old_log_probs, advantages, loss_mask)


def user_port(log_probs, old_log_probs, advantages, config, loss_mask=None, rollout_logprobs=None):
    return _loss(cegppo_config_from_skyrl(config), log_probs, old_log_probs, advantages, loss_mask)


for _name, _fn in (("ce_gppo_swapped_betas", swapped_betas), ("ce_gppo_user_port", user_port)):
    if _name not in PolicyLossRegistry.list_available():
        PolicyLossRegistry.register(_name, _fn)
