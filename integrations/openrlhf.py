"""CE-GPPO as a drop-in for OpenRLHF's ``PolicyLoss`` (docs/integrations.md, "OpenRLHF").

`CEGPPOPolicyLoss` is a subclass of ``openrlhf.models.loss.PolicyLoss`` with the same constructor
and call signature and the same return value, ``(loss, clip_ratio, ppo_kl, vllm_kl,
is_filter_ratio)``; its loss is `cegppo.torch.policy_loss`. OpenRLHF builds its actor loss in
``openrlhf/trainer/ray/ppo_actor.py`` (``self.actor_loss_fn = PolicyLoss(...)`` in
``ActorPPOTrainer.__init__``) and has no setting that names a loss class, so the switch is one
line of that file, the import of ``PolicyLoss``::

    from openrlhf.models import Actor, PolicyLoss, aggregate_loss           # OpenRLHF's line 15
    from cegppo.integrations.openrlhf import CEGPPOPolicyLoss as PolicyLoss  # the line to add after it

or, with the betas of your run (OpenRLHF's command line has no field for them)::

    from cegppo.integrations.openrlhf import CEGPPOPolicyLoss; PolicyLoss = CEGPPOPolicyLoss.with_betas(0.75, 1.0)

Every OpenRLHF setting the loss reads keeps its meaning:

==========================  ======================================  =====================================
CE-GPPO (spec S1)           OpenRLHF (``train_ppo_ray`` flag)       default
==========================  ======================================  =====================================
eps_low, eps_high           ``--actor.eps_clip_low_high`` (else      0.2, 0.2
                            ``--actor.eps_clip``)
dual clip c                 ``--actor.dual_clip``                   None (off); the paper's scripts use 10
beta_low, beta_high         `CEGPPOPolicyLoss.with_betas`           0.5, 1.0 (paper, 1.5B)
aggregation (spec S8)       ``--actor.loss_agg_mode``               token-mean
==========================  ======================================  =====================================

Aggregation, kept exactly as OpenRLHF's ``aggregate_loss`` does it: ``token-mean`` divides the
masked sum by the global token count ``batch_num_tokens`` and multiplies by ``dp_size`` (OpenRLHF
pre-compensates DeepSpeed's gradient averaging), or is the local masked mean when
``batch_num_tokens`` is None; ``seq-mean-token-mean`` likewise with ``global_batch_size``,
empty sequences excluded. OpenRLHF's train/rollout importance-sampling correction
(``--algo.advantage.is_correction_*``: token or sequence level, ratio / binary-KL / TV gating, mask
or clip) is computed as OpenRLHF computes it and its per-token coefficient (>= 0, a constant)
applied to the advantage, which for CE-GPPO equals OpenRLHF's scaling of the token's loss (J_t is
positively homogeneous in A_t, its region depends on the sign of A_t only). Refused with a
ValueError: ``policy_loss_type="gspo"`` (a sequence-level ratio; CE-GPPO is token-level).

Metrics: ``clip_ratio`` is `cegppo` ``clip_frac`` (clip_low + clip_high, the tokens OpenRLHF's
own ``surr2 < surr1`` counts), ``ppo_kl`` is ``approx_kl_k1``; ``vllm_kl`` and
``is_filter_ratio`` are OpenRLHF's (None without correction); all 0-d tensors, as OpenRLHF's.
Every key of `cegppo.METRIC_KEYS` of the last call is kept in ``last_metrics``.

Pinned and tested against openrlhf 0.11.2 (the ``openrlhf`` extra), on CPU, with the loss layer
only: ``openrlhf.models`` imports flash-attn (CUDA-only) on import, so where that fails the loss
module is imported without the package ``__init__`` (`cegppo.integrations._loading`).
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "openrlhf", ["torch", "openrlhf"])  # first: a missing one is named with its extra

from typing import Any, ClassVar

import cegppo
import cegppo.torch as cg
import torch

from ._common import AGG_TABLE, DEFAULT, cegppo_config
from ._loading import import_loss_module

_loss_module = import_loss_module("openrlhf.models.loss", ("openrlhf.models",))
PolicyLoss = _loss_module.PolicyLoss
_masked_mean = _loss_module.masked_mean  # OpenRLHF's own (openrlhf.models.utils), for its statistics

__all__ = ["AGG_OF_TOKEN_LEVEL", "CEGPPOPolicyLoss", "PolicyLoss", "openrlhf_port"]

AGG_OF_TOKEN_LEVEL: dict[bool, str] = {True: "token-mean", False: "seq-mean-token-mean"}
"""The aggregation mode (spec S8) of OpenRLHF's ``token_level_loss`` flag."""

_TOKEN_LEVEL_OF_AGG = {mode: level for level, mode in AGG_OF_TOKEN_LEVEL.items()}

_BATCH_INFO_ARG = {"num_tokens": "batch_num_tokens", "num_seqs": "global_batch_size"}
"""OpenRLHF's ``forward`` argument holding each global normalizer (spec S8.2)."""


def _valid_mask(action_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """OpenRLHF's action mask (bool or 0/1, None = every token) as the bool mask cegppo.torch takes."""
    if action_mask is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    return action_mask if action_mask.dtype == torch.bool else action_mask != 0


class CEGPPOPolicyLoss(PolicyLoss):  # type: ignore[misc, valid-type]
    """OpenRLHF's ``PolicyLoss`` computing CE-GPPO (arXiv 2509.20712, Eq. 8; spec S3, S8).

    Takes OpenRLHF's arguments, plus ``beta_low`` and ``beta_high`` (keyword-only; default: the
    class's, i.e. 0.5 and 1.0 unless made by `with_betas`).

    Raises:
        ValueError: ``policy_loss_type`` other than ``ppo``, or hyperparameters out of range (named
            as `cegppo.CEGPPOConfig` names them, or by OpenRLHF's own checks).
    """

    default_beta_low: ClassVar[float] = DEFAULT.beta_low
    default_beta_high: ClassVar[float] = DEFAULT.beta_high

    def __init__(
        self,
        clip_eps_low: float = 0.2,
        clip_eps_high: float = 0.2,
        dual_clip: float | None = None,
        token_level_loss: bool = True,
        policy_loss_type: str = "ppo",
        is_correction_level: str = "off",
        is_correction_mode: str = "mask",
        is_correction_gating: str = "ratio",
        is_correction_threshold: Any = (0.5, 5.0),
        *,
        beta_low: float | None = None,
        beta_high: float | None = None,
    ) -> None:
        if policy_loss_type != "ppo":
            raise ValueError(
                f"policy_loss_type must be 'ppo' for CE-GPPO (a token-level objective), got {policy_loss_type!r}"
            )
        config = cegppo_config(  # checked before OpenRLHF's assert on dual_clip
            eps_low=clip_eps_low,
            eps_high=clip_eps_high,
            beta_low=self.default_beta_low if beta_low is None else beta_low,
            beta_high=self.default_beta_high if beta_high is None else beta_high,
            dual_clip=dual_clip,
        )
        super().__init__(
            clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high, dual_clip=dual_clip,
            token_level_loss=token_level_loss, policy_loss_type=policy_loss_type,
            is_correction_level=is_correction_level, is_correction_mode=is_correction_mode,
            is_correction_gating=is_correction_gating, is_correction_threshold=is_correction_threshold,
        )
        self.cegppo_config = config
        """The CE-GPPO hyperparameters in use (a `cegppo.CEGPPOConfig`, checked on construction)."""
        self.agg = AGG_OF_TOKEN_LEVEL[bool(token_level_loss)]
        """The aggregation mode in use (spec S8)."""
        self.last_metrics: dict[str, torch.Tensor] = {}
        """`cegppo.torch.policy_metrics` of the last call (detached 0-d tensors, keys `cegppo.METRIC_KEYS`)."""

    @classmethod
    def with_betas(cls, beta_low: float, beta_high: float) -> type[CEGPPOPolicyLoss]:
        """A subclass whose default betas are these: the class to put in OpenRLHF's place of ``PolicyLoss``.

        Raises:
            ValueError: a beta out of range (checked now, not at OpenRLHF's first step).
        """
        cegppo.CEGPPOConfig(beta_low=beta_low, beta_high=beta_high)  # validates
        return type(
            f"CEGPPOPolicyLoss_{beta_low:g}_{beta_high:g}".replace(".", "p").replace("-", "m"),
            (cls,),
            {"default_beta_low": float(beta_low), "default_beta_high": float(beta_high),
             "__module__": cls.__module__, "__doc__": cls.__doc__},
        )

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        rollout_log_probs: torch.Tensor | None = None,
        dp_size: int = 1,
        batch_num_tokens: Any = None,
        global_batch_size: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The CE-GPPO loss of a micro-batch with OpenRLHF's aggregation (module docstring).

            loss = dp_size * sum_t c_t (-J_t)           (global normaliser given)
            loss = sum_t c_t (-J_t)                     (local mean: normaliser None)

        with J_t the CE-GPPO objective (clip_low: beta_low (1-eps_low) A, clip_high:
        beta_high (1+eps_high) A, both with gradient kept; dual_clip: c A; inside: delta A) and c_t
        the token-mean or seq-mean-token-mean weights with OpenRLHF's normaliser.

        Args:
            log_probs: (B, T) log-probs under the current policy (differentiable).
            old_log_probs: (B, T) log-probs at rollout.
            advantages: (B, T) advantages.
            action_mask: (B, T) bool or 0/1 mask of response tokens; None: every token.
            rollout_log_probs: vLLM's log-probs, for the importance-sampling correction (required
                when ``is_correction_level`` is not ``off``; ignored otherwise, as by OpenRLHF).
            dp_size, batch_num_tokens, global_batch_size: OpenRLHF's ``get_loss_batch_info``.

        Returns:
            ``(loss, clip_ratio, ppo_kl, vllm_kl, is_filter_ratio)`` like ``PolicyLoss``; the last two
            are None without correction.
        """
        valid = _valid_mask(action_mask, log_probs)
        cfg = self.cegppo_config
        vllm_kl = is_filter_ratio = None
        adv = advantages
        if self.is_correction_level != "off":
            if rollout_log_probs is None:
                raise ValueError(f"rollout_log_probs is required with is_correction_level={self.is_correction_level!r}")
            coef, vllm_kl, is_filter_ratio = self._is_correction(old_log_probs, rollout_log_probs, action_mask)
            adv = advantages.detach() * coef
        given = {"num_tokens": batch_num_tokens, "num_seqs": global_batch_size}  # spec S8.2's names
        norm = {name: value for name, value in given.items() if name == AGG_TABLE[self.agg].normalizer}
        # A global normalizer comes with OpenRLHF's dp_size pre-compensation; a local mean has none.
        scale = dp_size if any(value is not None for value in norm.values()) else 1
        loss = cg.policy_loss(log_probs, old_log_probs, adv, valid, cfg, agg=self.agg, **norm)
        if scale != 1:
            loss = loss * scale
        self.last_metrics = cg.policy_metrics(log_probs, old_log_probs, advantages, valid, cfg)
        return loss, self.last_metrics["clip_frac"], self.last_metrics["approx_kl_k1"], vllm_kl, is_filter_ratio

    def _is_correction(
        self, old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, action_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """OpenRLHF's train/rollout importance-sampling correction (``PolicyLoss.forward``, openrlhf 0.11.2).

        The statistic per unit (a token, or a sequence's mean): the ratio pi_train / pi_rollout
        (``ratio`` gating), or the binary KL / total variation between the rollout's and the
        trainer's probability of the sampled token. ``mask`` mode keeps units inside
        [low, high] with their per-token ratio as weight (0 elsewhere); ``clip`` mode weights by the
        clamped statistic. Returns (coefficient >= 0 per token, vllm_kl, is_filter_ratio).
        """
        low, high = self.is_correction_threshold
        seq_level = self.is_correction_level == "seq"
        is_log_ratio = (old_log_probs - rollout_log_probs).detach()  # log(pi_train / pi_rollout)
        token_is = is_log_ratio.exp()
        if self.is_correction_gating == "ratio":
            stat = _masked_mean(is_log_ratio, action_mask, dim=-1).unsqueeze(-1) if seq_level else is_log_ratio
            stat = stat.exp()
        else:
            p = rollout_log_probs.detach().exp().clamp(1e-6, 1 - 1e-6)
            q = old_log_probs.detach().exp().clamp(1e-6, 1 - 1e-6)
            if self.is_correction_gating == "binary_kl":
                stat = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
            else:  # tv
                stat = (p - q).abs()
            if seq_level:
                stat = _masked_mean(stat, action_mask, dim=-1).unsqueeze(-1)
        if self.is_correction_mode == "clip":
            coef = stat.clamp(min=low, max=high)
            filtered = (stat < low) | (stat > high)
        else:
            keep = (stat >= low) & (stat <= high)
            coef = torch.where(keep, token_is, torch.zeros((), dtype=token_is.dtype, device=token_is.device))
            filtered = ~keep
        coef = coef.expand(old_log_probs.shape)
        if seq_level:
            is_filter_ratio = filtered.float().mean()
        else:
            is_filter_ratio = _masked_mean(filtered.float(), action_mask, dim=None)
        vllm_kl = _masked_mean(rollout_log_probs - old_log_probs, action_mask, dim=None)
        return coef, vllm_kl, is_filter_ratio


def openrlhf_port(loss_cls: type[Any] | None = None) -> Any:
    """A conformance-kit port (docs/conformance.md) calling an OpenRLHF ``PolicyLoss``-like class.

    The port has the kit's signature ``port(log_prob, old_log_prob, advantages, response_mask, *,
    eps_low, eps_high, beta_low, beta_high, clip_ratio_c)``: it builds ``loss_cls(clip_eps_low=eps_low,
    clip_eps_high=eps_high, dual_clip=clip_ratio_c, token_level_loss=True)`` (plus ``beta_low`` and
    ``beta_high`` when the class's constructor takes them, as `CEGPPOPolicyLoss`'s does), calls it
    the way OpenRLHF's actor does with no global normaliser (the local token mean) and returns the
    loss. Default class: `CEGPPOPolicyLoss`; pass ``openrlhf.models.loss.PolicyLoss`` to check
    OpenRLHF's own PPO loss. This is what ``cegppo-conformance check --framework-loss openrlhf`` runs.

    Checked with the kit's ``agg=`` declaration (``token-mean`` and ``seq-mean-token-mean``, the two
    modes of OpenRLHF's ``token_level_loss``), the port also takes ``loss_agg_mode=`` and, with
    ``global_normalizers=True``, ``num_tokens=`` / ``num_seqs=``, handed to ``forward`` as OpenRLHF's
    ``batch_num_tokens`` / ``global_batch_size`` (``dp_size`` 1).

    Raises:
        TypeError: `loss_cls` is not a class.
    """
    import inspect

    from cegppo.conformance._port import agg_kit_port  # the kit's port contract: only a port needs the kit

    cls = CEGPPOPolicyLoss if loss_cls is None else loss_cls
    if not isinstance(cls, type):
        raise TypeError(f"loss_cls must be a PolicyLoss class, got {type(cls).__name__}")
    params = inspect.signature(cls).parameters
    takes_betas = "beta_low" in params and "beta_high" in params

    def call(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, *, loss_agg_mode: str, num_tokens: Any, num_seqs: Any,
             **hyper: Any) -> torch.Tensor:
        if loss_agg_mode not in _TOKEN_LEVEL_OF_AGG:
            raise ValueError(f"loss_agg_mode must be one of {sorted(_TOKEN_LEVEL_OF_AGG)} (OpenRLHF's "
                             f"token_level_loss), got {loss_agg_mode!r}")
        betas = {"beta_low": hyper["beta_low"], "beta_high": hyper["beta_high"]} if takes_betas else {}
        loss_fn = cls(clip_eps_low=hyper["eps_low"], clip_eps_high=hyper["eps_high"], dual_clip=hyper["clip_ratio_c"],
                      token_level_loss=_TOKEN_LEVEL_OF_AGG[loss_agg_mode], **betas)
        given = {"num_tokens": num_tokens, "num_seqs": num_seqs}
        info = {_BATCH_INFO_ARG[k]: v for k, v in given.items() if v is not None}
        return loss_fn(log_prob, old_log_prob, advantages, action_mask=response_mask, **info)[0]

    return agg_kit_port(call, name=f"openrlhf_{cls.__name__}", token_advantages=True,
                        doc=f"OpenRLHF policy loss {cls.__module__}.{cls.__qualname__} as a cegppo conformance port.")
