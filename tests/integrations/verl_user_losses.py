"""User-written verl policy losses for `cegppo-conformance check --verl-loss MODULE:NAME` tests.

Importing this module registers them with verl, as a user's own module would:

- ``ce_gppo_swapped_betas``: a plausible porting bug, beta_low and beta_high read the wrong way round;
- ``ce_gppo_user_port``: a correct user port (delegates to cegppo.torch with verl's config).
"""

from __future__ import annotations

from typing import Any

import cegppo.torch as cg
import torch
from cegppo.integrations.verl import cegppo_config_from_verl
from verl.trainer.ppo.core_algos import register_policy_loss


def _loss(cfg, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode) -> tuple[torch.Tensor, dict]:
    return cg.policy_loss(log_prob, old_log_prob, advantages, response_mask, cfg, agg=loss_agg_mode), {}


@register_policy_loss("ce_gppo_swapped_betas")  # type: ignore[arg-type]
def swapped_betas(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                  config: Any = None, rollout_is_weights=None):
    cfg = cegppo_config_from_verl(config)
    cfg = cfg.replace(beta_low=cfg.beta_high, beta_high=cfg.beta_low)  # the bug
    return _loss(cfg, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode)


@register_policy_loss("ce_gppo_user_port")  # type: ignore[arg-type]
def user_port(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
              config: Any = None, rollout_is_weights=None):
    return _loss(cegppo_config_from_verl(config), old_log_prob, log_prob, advantages, response_mask, loss_agg_mode)
