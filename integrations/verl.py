"""CE-GPPO as a verl policy loss (docs/integrations.md, "verl").

Importing this module registers ``ce_gppo`` in verl's policy-loss registry
(``verl.trainer.ppo.core_algos.register_policy_loss``), so a verl run selects it with

    actor_rollout_ref.actor.policy_loss.loss_mode=ce_gppo

The loss has verl's signature and return value (``(loss, metrics)``), honours
``actor.loss_agg_mode`` and verl's global batch info (``dp_size``, ``batch_num_tokens``,
``global_batch_size``, ``loss_scale_factor``), and reads its hyperparameters from verl's actor
config:

==========================  ===========================================  ===============================
CE-GPPO (spec S1)           verl config key (under actor_rollout_ref.)   default
==========================  ===========================================  ===============================
eps_low                     actor.clip_ratio_low (else actor.clip_ratio)  0.2
eps_high                    actor.clip_ratio_high (else actor.clip_ratio) 0.2
dual_clip c                 actor.clip_ratio_c                            3.0 (verl's); 10 in the paper's
                                                                          scripts
beta_low (beta_1)           actor.policy_loss.beta_low                    0.5 (paper, 1.5B)
beta_high (beta_2)          actor.policy_loss.beta_high                   1.0 (paper)
dual clip on/off            actor.policy_loss.use_dual_clip               True (as verl's vanilla loss)
==========================  ===========================================  ===============================

verl converts ``actor.policy_loss`` into the dataclass named by its ``_target_``; verl's own
``PolicyLossConfig`` has no beta fields, so point ``_target_`` at `CEGPPOPolicyLossConfig` (which
adds them) and add the keys with Hydra's ``+``::

    actor_rollout_ref.actor.policy_loss._target_=cegppo.integrations.verl.CEGPPOPolicyLossConfig \\
    actor_rollout_ref.actor.policy_loss.loss_mode=ce_gppo \\
    +actor_rollout_ref.actor.policy_loss.beta_low=0.75 \\
    +actor_rollout_ref.actor.policy_loss.beta_high=1.0

Naming that class also makes every Ray worker import this module (and so register the loss)
when it builds its config. The package also declares a ``verl.plugins`` entry point, which
verl (>= 0.9) loads on ``import verl`` in every process.

Conventions (verl's, kept exactly): the returned loss is multiplied by ``dp_size`` because
FSDP/DDP average gradients over data-parallel ranks (verl's ``agg_loss`` does the same);
``rollout_is_weights`` (verl's rollout-correction weights, >= 0) scale each token's loss, which
for CE-GPPO equals scaling its advantage (J_t is positively homogeneous in A_t, regions depend on
the sign of A_t only). Metrics are Python floats: verl's names ``actor/pg_clipfrac`` (= our
``clip_frac``), ``actor/ppo_kl`` (= ``approx_kl_k1``), ``actor/pg_clipfrac_lower`` (= our
``dual_clip_frac``), plus every key of `cegppo.METRIC_KEYS` under ``actor/ce_gppo/``.

Pinned and tested against verl 0.9.1 (the ``integrations`` extra).
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "integrations", ["torch", "verl"])  # first: a missing one is named with its extra

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cegppo.torch as cg
import torch
from cegppo import CEGPPOConfig
from verl.trainer.ppo.core_algos import get_policy_loss_fn, register_policy_loss
from verl.workers.config import ActorConfig, PolicyLossConfig

from ._common import AGG_TABLE, DEFAULT, cegppo_config, host_floats, registered_loss

__all__ = [
    "FAMILY_LOSSES",
    "LOSS_NAME",
    "METRIC_PREFIX",
    "CEGPPOPolicyLossConfig",
    "actor_config",
    "cegppo_config_from_verl",
    "compute_policy_loss_ce_gppo",
    "verl_port",
]

LOSS_NAME = "ce_gppo"
"""The name registered in verl's policy-loss registry (``policy_loss.loss_mode``)."""

FAMILY_LOSSES: dict[str, str] = {"cispo": "cispo", "sapo": "sapo", "gspo": "gspo"}
"""verl's own losses of the family's members (docs/spec.md S14) -> the objective (a key of
`cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS`) they compute: ``verl_port(NAME, objective=...)``."""

METRIC_PREFIX = "actor/ce_gppo/"
"""Prefix of our metrics (`cegppo.METRIC_KEYS`) in the dict the loss returns."""

_log = logging.getLogger(__name__)

_BATCH_INFO_KEY = {"num_tokens": "batch_num_tokens", "num_seqs": "global_batch_size"}
"""verl's ``global_batch_info`` key of each global normalizer (spec S8.2)."""


@dataclass
class CEGPPOPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the CE-GPPO betas (arXiv 2509.20712, Eq. 8).

    Select it in a verl run with ``actor.policy_loss._target_=cegppo.integrations.verl.CEGPPOPolicyLossConfig``;
    every field of verl's class keeps its meaning.
    """

    loss_mode: str = LOSS_NAME
    """The registered loss to use; ``ce_gppo`` for this module's loss."""
    beta_low: float = DEFAULT.beta_low
    """beta_1: gradient scale kept for clip_low tokens (ratio < 1 - eps_low, A < 0). >= 0."""
    beta_high: float = DEFAULT.beta_high
    """beta_2: gradient scale kept for clip_high tokens (ratio > 1 + eps_high, A > 0). >= 0."""
    use_dual_clip: bool = True
    """Apply dual clip with c = ``actor.clip_ratio_c`` (verl's vanilla loss always does)."""


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """Read `key` from a verl dataclass config, an OmegaConf DictConfig or a plain mapping."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        try:
            value = cfg.get(key, default)
        except Exception:  # omegaconf raises on missing keys in struct mode
            value = getattr(cfg, key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def cegppo_config_from_verl(config: Any) -> CEGPPOConfig:
    """The `CEGPPOConfig` that a verl actor config describes (see the module docstring's table).

    Args:
        config: verl's ``ActorConfig`` (or an OmegaConf/dict with the same keys).

    Raises:
        ValueError: when `config` is None, or a value is out of range (named as CEGPPOConfig names it).
    """
    if config is None:
        raise ValueError("config must be verl's actor config (got None): the loss reads eps, c and the betas from it")
    clip_ratio = _get(config, "clip_ratio", DEFAULT.eps_low)
    policy_loss = _get(config, "policy_loss")
    dual_clip = _get(config, "clip_ratio_c", 3.0) if bool(_get(policy_loss, "use_dual_clip", True)) else None
    return cegppo_config(
        eps_low=_get(config, "clip_ratio_low", clip_ratio),
        eps_high=_get(config, "clip_ratio_high", clip_ratio),
        beta_low=_get(policy_loss, "beta_low"),
        beta_high=_get(policy_loss, "beta_high"),
        dual_clip=None if dual_clip == float("inf") else dual_clip,  # verl's c = inf: no dual clip
        log=_log,
        missing_betas=f"actor.policy_loss has no beta_low/beta_high (use _target_={__name__}.CEGPPOPolicyLossConfig)",
    )


def _batch_info(config: Any, loss_agg_mode: str) -> tuple[int, dict[str, Any]]:
    """(dp_size, the normalizers of `cegppo.torch.policy_loss`) from verl's ``config.global_batch_info``."""
    info = _get(config, "global_batch_info", {}) or {}
    dp_size = int(_get(info, "dp_size", 1))
    norm = {ours: _get(info, theirs) for ours, theirs in _BATCH_INFO_KEY.items()}
    norm["norm_length"] = _get(info, "loss_scale_factor", _get(config, "loss_scale_factor"))
    # Under data parallelism a local count would make each rank divide by its own share; verl's agg_loss
    # refuses that, and so do we. An unknown mode is left to policy_loss, whose error names the modes.
    needed = AGG_TABLE[loss_agg_mode].normalizer if loss_agg_mode in AGG_TABLE else None
    if dp_size > 1 and needed is not None and norm[needed] is None:
        raise ValueError(f"global_batch_info[{_BATCH_INFO_KEY[needed]!r}] is required when dp_size > 1 ({loss_agg_mode})")
    return dp_size, norm


@register_policy_loss(LOSS_NAME)  # type: ignore[arg-type]
def compute_policy_loss_ce_gppo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: ActorConfig | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CE-GPPO's clipped policy loss in verl's policy-loss signature (arXiv 2509.20712, Eq. 8; spec S3, S8).

        loss = dp_size * sum_t c_t (-J_t)

    with J_t the CE-GPPO objective (clip_low: beta_low (1-eps_low) A, clip_high: beta_high (1+eps_high) A,
    both with gradient kept; dual_clip: c A; inside: delta A) and c_t the weights of `loss_agg_mode`
    with verl's global normalisers (spec S8, `cegppo.aggregation_weights`). Computed by
    `cegppo.torch.policy_loss` (log space, no clamping of log-ratios, masked garbage inert).

    Args:
        old_log_prob: (B, T) log-probs at rollout.
        log_prob: (B, T) log-probs under the current policy (differentiable).
        advantages: (B, T) advantages.
        response_mask: (B, T) mask of valid response tokens (bool or 0/1).
        loss_agg_mode: verl's mode (token-mean, token-sum, seq-mean-token-mean, seq-mean-token-sum,
            seq-mean-token-sum-norm).
        config: verl's ``ActorConfig``: eps, c, the betas and ``global_batch_info``.
        rollout_is_weights: optional (B, T) non-negative rollout-correction weights (constants).

    Returns:
        (loss, metrics): a 0-d tensor and a dict of floats (verl's names plus ``actor/ce_gppo/*``).
    """
    cfg = cegppo_config_from_verl(config)
    dp_size, norm = _batch_info(config, loss_agg_mode)
    adv = advantages if rollout_is_weights is None else advantages * rollout_is_weights.detach()
    loss = cg.policy_loss(log_prob, old_log_prob, adv, response_mask, cfg, agg=loss_agg_mode, **norm)
    if dp_size != 1:
        loss = loss * dp_size
    ours = host_floats(cg.policy_metrics(log_prob, old_log_prob, advantages, response_mask, cfg))
    out: dict[str, Any] = {
        "actor/pg_clipfrac": ours["clip_frac"],
        "actor/ppo_kl": ours["approx_kl_k1"],
        "actor/pg_clipfrac_lower": ours["dual_clip_frac"],
    }
    out.update({METRIC_PREFIX + k: v for k, v in ours.items()})
    return loss, out


def actor_config(
    *,
    eps_low: float = DEFAULT.eps_low,
    eps_high: float = DEFAULT.eps_high,
    beta_low: float = DEFAULT.beta_low,
    beta_high: float = DEFAULT.beta_high,
    clip_ratio_c: float | None = 3.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    loss_mode: str = LOSS_NAME,
    loss_agg_mode: str = "token-mean",
    loss_scale_factor: int | None = None,
    global_batch_info: dict[str, Any] | None = None,
) -> ActorConfig:
    """A verl ``ActorConfig`` carrying CE-GPPO hyperparameters (for tests, the conformance kit, notebooks).

    ``clip_ratio_c=None`` turns dual clip off (``use_dual_clip=False``; verl's own losses then see
    c = inf, i.e. no dual clip either). verl's ``cispo`` and ``gspo`` read the same ``clip_ratio_low/high``
    (the eps of `cegppo.CISPOConfig` and `cegppo.GSPOConfig`); its ``sapo`` reads ``tau_pos`` / ``tau_neg``
    (`cegppo.SAPOConfig`'s temperatures; the defaults are verl's and the paper's).
    """
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=eps_low,
        clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
        clip_ratio_c=float("inf") if clip_ratio_c is None else clip_ratio_c,
        tau_pos=tau_pos,
        tau_neg=tau_neg,
        loss_agg_mode=loss_agg_mode,
        loss_scale_factor=loss_scale_factor,
        policy_loss=CEGPPOPolicyLossConfig(
            loss_mode=loss_mode, beta_low=beta_low, beta_high=beta_high, use_dual_clip=clip_ratio_c is not None
        ),
    )
    if global_batch_info:
        cfg.global_batch_info.update(global_batch_info)
    return cfg


def verl_port(name: str | Callable[..., Any], *, objective: str = "ce_gppo") -> Callable[..., torch.Tensor]:
    """A conformance-kit port (docs/conformance.md) that calls the verl policy loss registered as `name`.

    `name` may also be the loss function itself (verl's signature), registered or not.

    The port takes the keywords of `objective` (``cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS``;
    verl's ``cispo``, ``sapo`` and ``gspo`` are checked as their own member with ``objective=NAME``,
    `FAMILY_LOSSES`) and records it as ``port.objective``. A CE-GPPO port is
    ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low, beta_high,
    clip_ratio_c)``; a CISPO or GSPO port takes ``eps_low, eps_high``, a SAPO port ``tau_pos, tau_neg``.
    The hyperparameters reach the verl loss through an ``ActorConfig`` (see `actor_config`): eps as
    ``clip_ratio_low/high``, c as ``clip_ratio_c``, the betas as ``policy_loss.beta_low/beta_high``
    (where a user-written CE-GPPO loss should read them too), the temperatures as ``tau_pos/tau_neg``.
    This is what ``cegppo-conformance check --verl-loss NAME`` runs.

    Without a mode from the kit the port asks verl for the objective's paper aggregation (token-mean for
    CE-GPPO and CISPO, seq-mean-token-mean for SAPO and GSPO). Checked with the kit's ``agg=`` declaration,
    the port takes ``loss_agg_mode=`` (handed to the loss as verl's ``loss_agg_mode``) and, with
    ``global_normalizers=True``, ``num_tokens=`` / ``num_seqs=`` (handed over as verl's
    ``global_batch_info`` ``batch_num_tokens`` / ``global_batch_size``, with ``dp_size`` 1).

    Raises:
        ValueError: when no verl policy loss is registered under `name`, or `objective` is not one.
    """
    from cegppo.conformance._port import agg_kit_port  # the kit's port contract: only a port needs the kit
    fn, name = registered_loss(name, get_policy_loss_fn)  # verl's lookup raises ValueError listing the names

    def call(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, *, loss_agg_mode: str, num_tokens: Any, num_seqs: Any,
             **hyper: Any) -> torch.Tensor:
        given = {"num_tokens": num_tokens, "num_seqs": num_seqs}
        info = {_BATCH_INFO_KEY[k]: v for k, v in given.items() if v is not None}
        config = actor_config(**hyper, loss_mode=str(name), loss_agg_mode=loss_agg_mode, global_batch_info=info)
        loss, _ = fn(
            old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages, response_mask=response_mask,
            loss_agg_mode=loss_agg_mode, config=config,
        )
        return loss

    return agg_kit_port(call, name=f"verl_{name}", doc=f"verl policy loss {name!r} as a cegppo conformance port.",
                        token_advantages=True, objective=objective)
