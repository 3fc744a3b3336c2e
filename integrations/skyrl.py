"""CE-GPPO as a SkyRL policy loss (docs/integrations.md, "SkyRL").

Importing this module registers ``ce_gppo`` in SkyRL's policy-loss registry
(``skyrl.backends.skyrl_train.utils.ppo_utils.PolicyLossRegistry``), the registry SkyRL's workers
look ``trainer.algorithm.policy_loss_type`` up in. SkyRL's ``AlgorithmConfig`` has no field for
the betas, so the config class to train with is `CEGPPOSkyRLTrainConfig` (SkyRL's
``SkyRLTrainConfig`` whose ``trainer.algorithm`` is a `CEGPPOAlgorithmConfig`). SkyRL's own
entrypoint hands over to a module named by ``trainer.override_entrypoint``, and this module's
`main` parses with that config, so a run selects CE-GPPO on SkyRL's command line::

    python -m skyrl.train.entrypoints.main_base trainer.override_entrypoint=cegppo.integrations.skyrl \\
        trainer.algorithm.policy_loss_type=ce_gppo \\
        trainer.algorithm.beta_low=0.75 trainer.algorithm.beta_high=1.0 ...

`main` imports this module in the driver before SkyRL's ``initialize_ray``, whose
``sync_registries`` copies ``ce_gppo`` to SkyRL's registry actor, from which every worker reads it.

==========================  ==========================================  ==============================
CE-GPPO (spec S1)           SkyRL key (under ``trainer.algorithm.``)    default
==========================  ==========================================  ==============================
eps_low, eps_high           ``eps_clip_low``, ``eps_clip_high``         0.2, 0.2
dual clip c                 ``clip_ratio_c``                            3.0 (SkyRL's); paper's scripts 10
dual clip on/off            ``use_dual_clip``                           True
beta_low (beta_1)           ``beta_low``                                0.5 (paper, 1.5B)
beta_high (beta_2)          ``beta_high``                               1.0 (paper)
==========================  ==========================================  ==============================

Conventions (SkyRL's, kept exactly): the loss is the masked *sum* of the per-token losses, because
SkyRL applies ``trainer.algorithm.loss_reduction`` (token_mean, sequence_mean, ...) by scaling the
advantages beforehand (``apply_loss_reduction_to_advantages_minibatch``); the loss mask's values
weight the tokens; SkyRL's off-policy correction (``off_policy_correction``: TIS ratios, sequence
and outlier masks, computed by SkyRL's own ``compute_off_policy_correction``) weights and masks the
tokens as in SkyRL's ``regular`` loss. Weights (>= 0) are applied to the advantage, which for
CE-GPPO equals weighting the token's loss (J_t is positively homogeneous in A_t and its region
depends on the sign of A_t only). Metrics are floats: SkyRL's ``clip_ratio`` (= our
``clip_frac``), the off-policy correction's, and every key of `cegppo.METRIC_KEYS` under
``ce_gppo/``.

Pinned and tested against skyrl 0.3.0 (the ``skyrl`` extra), on CPU, with the loss layer only:
``skyrl.backends`` imports SkyRL's Tinker API types on import, which pydantic refuses on
Python < 3.12, so there the loss module is imported without that package ``__init__``
(`cegppo.integrations._loading`).
"""

# No `from __future__ import annotations`: SkyRL builds nested configs from the dataclass fields'
# runtime types (`build_nested_dataclass`), which string annotations would hide.

from cegppo._extras import require

require(__name__, "skyrl", ["torch", "skyrl"])  # first: a missing one is named with its extra

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cegppo
import cegppo.torch as cg
import torch

from ._common import DEFAULT, cegppo_config, host_floats, registered_loss
from ._loading import import_loss_module

_ppo_utils = import_loss_module("skyrl.backends.skyrl_train.utils.ppo_utils", ("skyrl.backends",))
_off_policy = import_loss_module("skyrl.backends.skyrl_train.utils.off_policy_correction_utils", ("skyrl.backends",))
PolicyLossRegistry = _ppo_utils.PolicyLossRegistry

from skyrl.train.config import AlgorithmConfig, CISPOConfig, SAPOConfig, SkyRLTrainConfig, TrainerConfig

__all__ = [
    "FAMILY_LOSSES",
    "LOSS_NAME",
    "LOSS_REDUCTIONS",
    "METRIC_PREFIX",
    "CEGPPOAlgorithmConfig",
    "CEGPPOSkyRLTrainConfig",
    "CEGPPOTrainerConfig",
    "algorithm_config",
    "build_config",
    "cegppo_config_from_skyrl",
    "compute_policy_loss_ce_gppo",
    "main",
    "skyrl_port",
]

LOSS_NAME = "ce_gppo"
"""The name registered in SkyRL's policy-loss registry (``trainer.algorithm.policy_loss_type``)."""

FAMILY_LOSSES: dict[str, str] = {"cispo": "cispo", "sapo": "sapo", "gspo": "gspo"}
"""SkyRL's own losses of the family's members (docs/spec.md S14) -> the objective (a key of
`cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS`) they compute: ``skyrl_port(NAME, objective=...)``."""

LOSS_REDUCTIONS: dict[str, str] = {
    "token-mean": "token_mean",
    "seq-mean-token-mean": "sequence_mean",
    "seq-mean-token-sum-norm": "seq_mean_token_sum_norm",
}
"""The aggregation modes (spec S8, verl's names) that SkyRL's ``trainer.algorithm.loss_reduction`` has, under
SkyRL's name. SkyRL applies them to the advantages before its loss sums the tokens."""

METRIC_PREFIX = "ce_gppo/"
"""Prefix of our metrics (`cegppo.METRIC_KEYS`) in the dict the loss returns."""

_log = logging.getLogger(__name__)


@dataclass
class CEGPPOAlgorithmConfig(AlgorithmConfig):
    """SkyRL's ``AlgorithmConfig`` plus the CE-GPPO betas (arXiv 2509.20712, Eq. 8); ``ce_gppo`` selected."""

    policy_loss_type: str = LOSS_NAME
    beta_low: float = DEFAULT.beta_low
    """beta_1: gradient scale kept for clip_low tokens (ratio < 1 - eps_clip_low, A < 0). >= 0."""
    beta_high: float = DEFAULT.beta_high
    """beta_2: gradient scale kept for clip_high tokens (ratio > 1 + eps_clip_high, A > 0). >= 0."""
    use_dual_clip: bool = True
    """Apply dual clip with c = ``clip_ratio_c`` (as SkyRL's ``dual_clip`` loss does)."""


@dataclass
class CEGPPOTrainerConfig(TrainerConfig):
    """SkyRL's ``TrainerConfig`` whose ``algorithm`` is a `CEGPPOAlgorithmConfig`."""

    algorithm: CEGPPOAlgorithmConfig = field(default_factory=CEGPPOAlgorithmConfig)


@dataclass
class CEGPPOSkyRLTrainConfig(SkyRLTrainConfig):
    """SkyRL's ``SkyRLTrainConfig`` with `CEGPPOTrainerConfig`: parses ``trainer.algorithm.beta_low`` etc."""

    trainer: CEGPPOTrainerConfig = field(default_factory=CEGPPOTrainerConfig)


def cegppo_config_from_skyrl(config: Any) -> cegppo.CEGPPOConfig:
    """The `cegppo.CEGPPOConfig` a SkyRL algorithm config describes (module docstring's table).

    A plain ``AlgorithmConfig`` (no betas) gets the paper's betas, with one warning.

    Raises:
        ValueError: `config` is None, or a value is out of range (named as CEGPPOConfig names it).
    """
    if config is None:
        raise ValueError("config must be SkyRL's algorithm config (got None): the loss reads eps, c and the betas")
    return cegppo_config(
        eps_low=config.eps_clip_low,
        eps_high=config.eps_clip_high,
        beta_low=getattr(config, "beta_low", None),
        beta_high=getattr(config, "beta_high", None),
        dual_clip=config.clip_ratio_c if bool(getattr(config, "use_dual_clip", True)) else None,
        log=_log,
        missing_betas=f"trainer.algorithm has no beta_low/beta_high (use {__name__}.CEGPPOSkyRLTrainConfig)",
    )


def compute_policy_loss_ce_gppo(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    config: Any,
    loss_mask: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE-GPPO's clipped policy loss in SkyRL's policy-loss signature (arXiv 2509.20712, Eq. 8; spec S3).

        loss = sum_t w_t (-J_t)

    with J_t the CE-GPPO objective (clip_low: beta_low (1-eps_low) A, clip_high: beta_high
    (1+eps_high) A, both with gradient kept; dual_clip: c A; inside: delta A) and w_t the loss mask
    times SkyRL's off-policy TIS ratio (when enabled). SkyRL has already scaled the advantages for
    its ``loss_reduction``. Computed by `cegppo.torch.policy_loss` (``agg="token-sum"``).

    Args:
        log_probs: (B, T) log-probs under the current policy (differentiable).
        old_log_probs: (B, T) log-probs at rollout.
        advantages: (B, T) advantages, pre-scaled by SkyRL.
        config: SkyRL's ``AlgorithmConfig`` (`CEGPPOAlgorithmConfig` for the betas).
        loss_mask: (B, T) mask or non-negative weights of the tokens; None: every token, weight 1.
        rollout_logprobs: the inference engine's log-probs, for SkyRL's off-policy correction.

    Returns:
        (loss, metrics): a 0-d tensor and a dict of floats.
    """
    cfg = cegppo_config_from_skyrl(config)
    if loss_mask is None:
        loss_mask = torch.ones(log_probs.shape, dtype=log_probs.dtype, device=log_probs.device)
    metric_mask = loss_mask != 0  # SkyRL's clip_ratio is taken before the off-policy masks
    weight = loss_mask
    out: dict[str, float] = {}
    if rollout_logprobs is not None:
        tis, off_metrics, weight = _off_policy.compute_off_policy_correction(
            old_log_probs, rollout_logprobs, loss_mask, config.off_policy_correction
        )
        if tis is not None:
            weight = weight * tis.detach()
        out.update(off_metrics)
    adv = advantages.detach() * weight.detach()
    loss = cg.policy_loss(log_probs, old_log_probs, adv, weight != 0, cfg, agg="token-sum")
    ours = host_floats(cg.policy_metrics(log_probs, old_log_probs, advantages, metric_mask, cfg))
    result: dict[str, float] = {"clip_ratio": ours["clip_frac"], **out}
    result.update({METRIC_PREFIX + k: v for k, v in ours.items()})
    return loss, result


def _register() -> None:
    """Register `compute_policy_loss_ce_gppo` as ``ce_gppo`` (idempotent: a Ray worker imports this module too)."""
    current = PolicyLossRegistry._functions.get(LOSS_NAME)  # the local table; `list_available` would sync Ray
    if current is compute_policy_loss_ce_gppo:
        return
    if current is not None:
        raise ValueError(f"SkyRL already has a policy loss named {LOSS_NAME!r} ({current!r}); unregister it first")
    PolicyLossRegistry.register(LOSS_NAME, compute_policy_loss_ce_gppo)


_register()


def algorithm_config(
    *,
    eps_low: float = DEFAULT.eps_low,
    eps_high: float = DEFAULT.eps_high,
    beta_low: float = DEFAULT.beta_low,
    beta_high: float = DEFAULT.beta_high,
    clip_ratio_c: float | None = 3.0,
    policy_loss_type: str = LOSS_NAME,
) -> CEGPPOAlgorithmConfig:
    """A `CEGPPOAlgorithmConfig` with these hyperparameters (tests, the conformance kit, notebooks).

    ``clip_ratio_c=None`` turns dual clip off (``use_dual_clip=False``, and SkyRL's own losses see
    ``policy_loss_type`` as given: use ``regular`` for PPO without dual clip).
    """
    return CEGPPOAlgorithmConfig(
        policy_loss_type=policy_loss_type, eps_clip_low=eps_low, eps_clip_high=eps_high,
        clip_ratio_c=3.0 if clip_ratio_c is None else float(clip_ratio_c),
        beta_low=beta_low, beta_high=beta_high, use_dual_clip=clip_ratio_c is not None,
    )


def build_config(argv: Sequence[str]) -> CEGPPOSkyRLTrainConfig:
    """`CEGPPOSkyRLTrainConfig` from SkyRL's command-line overrides (``trainer.override_entrypoint=`` dropped)."""
    args = [a for a in argv if not a.startswith("trainer.override_entrypoint=")]
    return CEGPPOSkyRLTrainConfig.from_cli_overrides(args)


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - needs GPUs, vLLM and a Ray cluster
    """SkyRL's ``main_base.main`` with `CEGPPOSkyRLTrainConfig` (``trainer.override_entrypoint=cegppo.integrations.skyrl``)."""
    import ray
    from skyrl.train.entrypoints.main_base import skyrl_entrypoint
    from skyrl.train.utils.utils import initialize_ray, validate_cfg

    cfg = build_config(sys.argv[1:] if argv is None else argv)
    validate_cfg(cfg)
    initialize_ray(cfg)  # ray.init, then sync_registries: ce_gppo (registered on import) reaches the workers
    ray.get(skyrl_entrypoint.remote(cfg))


def _member_config(objective: str, policy_loss_type: str, hyper: dict[str, Any]) -> CEGPPOAlgorithmConfig:
    """The algorithm config in which SkyRL's loss `policy_loss_type` reads the kit's keywords `hyper` of `objective`.

    SkyRL keeps CE-GPPO's and GSPO's eps in ``eps_clip_low/high``, CISPO's in ``cispo.cispo_eps_clip_low/high``
    and SAPO's temperatures in ``sapo.tau_pos/tau_neg``.
    """
    if objective == "ce_gppo":
        return algorithm_config(**hyper, policy_loss_type=policy_loss_type)
    config = algorithm_config(policy_loss_type=policy_loss_type, clip_ratio_c=None)
    if objective == "gspo":
        config.eps_clip_low, config.eps_clip_high = hyper["eps_low"], hyper["eps_high"]
    elif objective == "cispo":
        config.cispo = CISPOConfig(cispo_eps_clip_low=hyper["eps_low"], cispo_eps_clip_high=hyper["eps_high"])
    elif objective == "sapo":
        config.sapo = SAPOConfig(tau_pos=hyper["tau_pos"], tau_neg=hyper["tau_neg"])
    else:
        raise ValueError(f"objective must be one of ce_gppo, {', '.join(sorted(FAMILY_LOSSES))} (SkyRL's losses), "
                         f"got {objective!r}")
    return config


def reduced_advantages(advantages: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """`advantages` scaled by SkyRL's own ``apply_loss_reduction_to_advantages_minibatch`` for `loss_agg_mode`
    (`LOSS_REDUCTIONS`), so that SkyRL's masked sum is that mode's loss over this batch (one micro-batch, the
    padded length T as Dr.GRPO's constant).

    Scaled in at least float32, as SkyRL's advantages are: a float16 division would round them.

    Raises:
        ValueError: a mode SkyRL has no reduction for (token-sum, seq-mean-token-sum).
    """
    if loss_agg_mode not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_agg_mode must be one of {sorted(LOSS_REDUCTIONS)} (SkyRL's loss_reduction), "
                         f"got {loss_agg_mode!r}")
    wide = torch.promote_types(advantages.dtype, torch.float32)
    b, t = loss_mask.shape
    return _ppo_utils.apply_loss_reduction_to_advantages_minibatch(
        advantages.to(wide), loss_mask.to(wide), LOSS_REDUCTIONS[loss_agg_mode], micro_batch_size=b, max_seq_len=t,
    )


def skyrl_port(name: str | Callable[..., Any], *, objective: str = "ce_gppo") -> Callable[..., torch.Tensor]:
    """A conformance-kit port (docs/conformance.md) calling the SkyRL policy loss registered as `name`.

    `name` may also be the loss function itself (SkyRL's signature). The port takes the keywords of
    `objective` (``cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS``; SkyRL's ``cispo``, ``sapo`` and
    ``gspo`` are checked as their own member with ``objective=NAME``, `FAMILY_LOSSES`) and records it as
    ``port.objective``. A CE-GPPO port has the kit's signature ``port(log_prob, old_log_prob, advantages,
    response_mask, *, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)``: the hyperparameters reach
    the loss through a `CEGPPOAlgorithmConfig` (eps as ``eps_clip_low/high``, c as ``clip_ratio_c``, the
    betas as ``beta_low/beta_high``); with ``clip_ratio_c=None`` SkyRL's ``dual_clip`` loss is called as
    ``regular``. A family port's keywords go where SkyRL's loss reads them (`_member_config`).

    The advantages are scaled as SkyRL's ``loss_reduction`` scales them (`reduced_advantages`), so the
    loss SkyRL sums is the aggregated loss: the mode the kit passes as ``loss_agg_mode`` (declared with
    ``agg=``: token-mean, seq-mean-token-mean or seq-mean-token-sum-norm), else the objective's paper
    aggregation (token-mean for CE-GPPO and CISPO, seq-mean-token-mean for SAPO and GSPO). SkyRL has no
    global normalizer. This is what ``cegppo-conformance check --framework-loss skyrl`` runs.

    Raises:
        ValueError: when no SkyRL policy loss is registered under `name`.
    """
    from cegppo.conformance._port import agg_kit_port  # the kit's port contract: only a port needs the kit
    fn, name = registered_loss(name, PolicyLossRegistry.get)  # SkyRL's lookup: ValueError listing the names

    def call(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, *, loss_agg_mode: str, num_tokens: Any, num_seqs: Any,
             **hyper: Any) -> torch.Tensor:
        if num_tokens is not None or num_seqs is not None:
            raise ValueError("SkyRL's loss reductions take no global normalizer (num_tokens, num_seqs)")
        loss_type = str(name)
        if loss_type == "dual_clip" and hyper.get("clip_ratio_c", 0.0) is None:
            loss_type = "regular"  # SkyRL's PPO without dual clip
        mask = response_mask.to(log_prob.dtype) if response_mask.dtype == torch.bool else response_mask
        scaled = reduced_advantages(advantages, mask, loss_agg_mode)
        config = _member_config(objective, loss_type, hyper)
        config.loss_reduction = LOSS_REDUCTIONS[loss_agg_mode]  # what SkyRL's trainer would have scaled them for
        loss, _ = fn(log_prob, old_log_prob, scaled, config=config, loss_mask=mask)
        return loss

    return agg_kit_port(call, name=f"skyrl_{name}", doc=f"SkyRL policy loss {name!r} as a cegppo conformance port.",
                        token_advantages=True, objective=objective)
