"""CE-GPPO in TRL's ``GRPOTrainer`` (docs/integrations.md, "TRL").

`CEGPPOTrainer` is a ``trl.GRPOTrainer`` whose policy loss is `cegppo.torch.policy_loss`
(arXiv 2509.20712, Eq. 8; docs/spec.md S3), configured by `CEGPPOTRLConfig`, a ``trl.GRPOConfig``
with the CE-GPPO fields added. Everything else (generation, rewards, group advantages, the
reference model and its KL term, logging) is TRL's own::

    from cegppo.integrations.trl import CEGPPOTRLConfig, CEGPPOTrainer
    args = CEGPPOTRLConfig(output_dir="out", beta_low=0.5, beta_high=1.0, epsilon=0.2, epsilon_high=0.2)
    trainer = CEGPPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                            processing_class=tokenizer)
    trainer.train()

==============================  =================================  ===========================================
CE-GPPO (spec S1)               `CEGPPOTRLConfig` field            default
==============================  =================================  ===========================================
eps_low                         ``epsilon`` (TRL's)                0.2
eps_high                        ``epsilon_high`` (TRL's)           ``epsilon``
beta_low (beta_1)               ``beta_low``                       0.5 (paper, 1.5B)
beta_high (beta_2)              ``beta_high``                      1.0 (paper)
dual clip c                     ``dual_clip``                      None (the official scripts use 10)
aggregation (spec S8)           ``loss_agg_mode``                  None: from TRL's ``loss_type`` (below)
==============================  =================================  ===========================================

Aggregation. With ``loss_agg_mode=None`` TRL's ``loss_type`` picks it, with TRL's normalisers:
``dapo`` (TRL's default) is ``token-mean`` over the tokens of the whole accumulated global batch
(the paper's setting); ``bnpo`` is ``token-mean`` over the micro-batch; ``grpo`` is
``seq-mean-token-mean``; ``dr_grpo`` is ``seq-mean-token-sum-norm`` with the constant
``max_completion_length``. Naming a mode in ``loss_agg_mode`` (verl's names) overrides it; the
token-mean normaliser is then the global one, and ``token-sum`` is the sum over the global batch.
Gradient accumulation and data parallelism are accounted as TRL accounts them (the loss of one
micro-batch is its share of the global loss).

Kept from TRL, applied as weights on the advantage (J_t is positively homogeneous in A_t and the
regions depend on its sign only, so this equals TRL's weighting of the per-token loss):
``top_entropy_quantile`` (entropy mask), ``off_policy_mask_threshold`` and vLLM's
importance-sampling correction. The KL term (``beta`` > 0) is TRL's k3 estimator, aggregated like
the policy loss. Refused with a ValueError: ``importance_sampling_level="sequence"`` (CE-GPPO is a
token-level objective) and the entropy bonus (``entropy_coef``, ``use_adaptive_entropy``): CE-GPPO
steers entropy through beta_low/beta_high, and the paper trains without a bonus.

Logged metrics (per logging step, averaged over the global batch): every key of
`cegppo.METRIC_KEYS` as ``ce_gppo/<key>`` (region fractions, ratio statistics, approximate KL,
mean |F_t|), TRL's ``clip_ratio/low_mean``, ``clip_ratio/high_mean`` and
``clip_ratio/region_mean`` (= ``clip_low_frac``, ``clip_high_frac``, ``clip_frac``), ``entropy``,
and ``kl`` when ``beta`` > 0.

`trl_port` makes TRL's own ``loss_type="cispo"`` and ``"sapo"`` conformance-kit ports of CISPO's cap form
and SAPO (docs/conformance.md, "Family verdicts"), run through ``GRPOTrainer.compute_loss`` on a tiny model
(`cegppo.integrations._trl_harness`).

Pinned and tested against trl 1.16.0 (the ``integrations`` extra). The hook is TRL's
``compute_loss`` (the ``transformers.Trainer`` method GRPOTrainer implements); the log-probs come
from GRPOTrainer's ``_get_per_token_logps_and_entropies``, exactly as TRL's own loss gets them.
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "integrations", ["torch", "trl"])  # first: a missing one is named with its extra

import functools
from dataclasses import dataclass, field
from typing import Any

import cegppo
import cegppo.torch as cg
import torch
from trl import GRPOConfig, GRPOTrainer

from ._common import AGG_TABLE, DEFAULT, cegppo_config

__all__ = ["FAMILY_LOSSES", "LOSS_TYPE_AGG", "METRIC_PREFIX", "CEGPPOTRLConfig", "CEGPPOTrainer",
           "cegppo_config_from_trl", "trl_port"]

METRIC_PREFIX = "ce_gppo/"
"""Prefix of our metrics (`cegppo.METRIC_KEYS`) in the trainer's logs."""

FAMILY_LOSSES: dict[str, str] = {"cispo": "cispo_cap", "sapo": "sapo"}
"""TRL's own ``loss_type`` values of the family's members (docs/spec.md S14) -> the objective a port of each
takes (a key of `cegppo.conformance._port.OBJECTIVE_HYPERPARAMETERS`): ``cispo`` caps the weight at the
absolute ``epsilon_high`` (`cegppo.CISPOCapConfig`), ``sapo`` is `cegppo.SAPOConfig`."""

LOSS_TYPE_AGG: dict[str, str] = {
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "grpo": "seq-mean-token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
}
"""The aggregation mode (spec S8) each TRL ``loss_type`` stands for when ``loss_agg_mode`` is None."""


@dataclass
class CEGPPOTRLConfig(GRPOConfig):
    """``trl.GRPOConfig`` plus the CE-GPPO hyperparameters (arXiv 2509.20712, Eq. 8).

    eps_low and eps_high are TRL's ``epsilon`` and ``epsilon_high``; every GRPOConfig field keeps
    its meaning. Checked when the trainer is built (ValueError naming the field).
    """

    beta_low: float = field(
        default=DEFAULT.beta_low,
        metadata={
            "help": "beta_1: gradient scale kept for clip_low tokens (ratio < 1 - epsilon, A < 0). >= 0."
        },
    )
    beta_high: float = field(
        default=DEFAULT.beta_high,
        metadata={
            "help": "beta_2: gradient scale kept for clip_high tokens (ratio > 1 + epsilon_high, A > 0). >= 0."
        },
    )
    dual_clip: float | None = field(
        default=None,
        metadata={
            "help": "Dual-clip constant c > 1 (loss of A < 0 tokens with ratio > c is c A, no gradient); None: off."
        },
    )
    loss_agg_mode: str | None = field(
        default=None,
        metadata={"help": "Aggregation mode (cegppo.AGG_MODES, verl's names); None: derived from loss_type."},
    )


def cegppo_config_from_trl(args: GRPOConfig) -> cegppo.CEGPPOConfig:
    """The `cegppo.CEGPPOConfig` that a (CE-)GRPOConfig describes (module docstring's table).

    A plain ``GRPOConfig`` gets the paper's betas (0.5, 1.0) and no dual clip.

    Raises:
        ValueError: a value out of range, named as `cegppo.CEGPPOConfig` names it.
    """
    eps_low = float(args.epsilon)
    return cegppo_config(
        eps_low=eps_low,
        eps_high=eps_low if args.epsilon_high is None else args.epsilon_high,
        beta_low=getattr(args, "beta_low", None),
        beta_high=getattr(args, "beta_high", None),
        dual_clip=getattr(args, "dual_clip", None),
    )


def _agg_mode(args: GRPOConfig) -> str:
    mode = getattr(args, "loss_agg_mode", None)
    if mode is not None:
        if mode not in cegppo.AGG_MODES:
            raise ValueError(f"loss_agg_mode must be one of {cegppo.AGG_MODES} or None, got {mode!r}")
        return mode
    if args.loss_type not in LOSS_TYPE_AGG:
        raise ValueError(
            f"loss_type={args.loss_type!r} has no CE-GPPO counterpart; use one of {sorted(LOSS_TYPE_AGG)} "
            "or set loss_agg_mode"
        )
    return LOSS_TYPE_AGG[args.loss_type]


class CEGPPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` training with the CE-GPPO loss (`cegppo.torch.policy_loss`).

    Takes the arguments of ``GRPOTrainer``; ``args`` should be a `CEGPPOTRLConfig` (a plain
    ``GRPOConfig`` gets the paper's betas). See the module docstring for what is kept from TRL.

    Raises:
        ValueError: for ``importance_sampling_level="sequence"``, an entropy bonus, a ``loss_type``
            without a CE-GPPO counterpart, or out-of-range CE-GPPO fields.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        a = self.args
        if a.importance_sampling_level != "token":
            raise ValueError(
                f"importance_sampling_level must be 'token' for CE-GPPO (a token-level objective), "
                f"got {a.importance_sampling_level!r}"
            )
        if a.entropy_coef != 0.0 or a.use_adaptive_entropy:
            raise ValueError(
                f"entropy_coef must be 0 and use_adaptive_entropy False with CE-GPPO (got {a.entropy_coef!r}, "
                f"{a.use_adaptive_entropy!r}): beta_low/beta_high steer the entropy, the paper uses no bonus"
            )
        self.cegppo_config = cegppo_config_from_trl(a)
        """The CE-GPPO hyperparameters in use (a `cegppo.CEGPPOConfig`)."""
        self.loss_agg_mode = _agg_mode(a)
        """The aggregation mode in use (spec S8)."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """The CE-GPPO loss of one micro-batch, scaled as TRL scales its losses (see the class docstring).

            loss = sum_t c_t (-J_t)  [+ beta * sum_t c_t KL_t]

        with J_t the CE-GPPO objective of `cegppo.torch.policy_loss` on the completion tokens and
        c_t the weights of the aggregation mode with TRL's normalisers.
        """
        if return_outputs:
            raise ValueError(
                "return_outputs must be False: CEGPPOTrainer (like GRPOTrainer) returns only the loss"
            )
        return self._cegppo_loss(model, inputs)

    def _normalizers(self, mask: torch.Tensor, inputs: dict[str, Any], train: bool) -> dict[str, Any]:
        """num_tokens / num_seqs / norm_length so that one micro-batch's loss is its share of TRL's loss."""
        accum = self.current_gradient_accumulation_steps if train else 1
        rule = AGG_TABLE[self.loss_agg_mode]
        if rule.normalizer == "num_tokens":
            if self.args.loss_type == "bnpo" and self.args.loss_agg_mode is None:  # TRL: the micro-batch's own count
                return {"num_tokens": mask.sum().clamp(min=1) * accum}
            # TRL's dapo normaliser: the accumulated global batch's tokens per process.
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if train:
                normalizer = (
                    normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
                )
            return {"num_tokens": normalizer}
        out: dict[str, Any] = {}
        if rule.normalizer == "num_seqs":
            out["num_seqs"] = mask.shape[0] * accum
        if rule.by_length:
            out["norm_length"] = float(self.max_completion_length)
        return out  # token-sum: additive over micro-batches; the process count is restored in _cegppo_loss


    def _cegppo_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{k: inputs.get(k) for k in _MULTIMODAL_KEYS},
        )
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old

        # Advantages (B,) or (B, T), times TRL's per-token weights (see the module docstring).
        adv = inputs["advantages"]
        adv = adv.unsqueeze(1) if adv.dim() == 1 else adv
        adv = adv.expand_as(per_token_logps).detach()
        if self.top_entropy_quantile < 1.0:
            adv = adv * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        if self.off_policy_mask_threshold is not None:
            adv = adv * self.get_off_policy_mask(
                advantages=adv,
                per_token_logps=per_token_logps,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old),
                mask=mask,
                off_policy_threshold=self.off_policy_mask_threshold,
            )
        if self.use_vllm and self.vllm_importance_sampling_correction:
            adv = adv * inputs["importance_sampling_ratio"]

        train = self.model.training
        mode = "train" if train else "eval"
        norm = self._normalizers(mask, inputs, train)
        valid = mask.bool()
        cfg = self.cegppo_config
        loss = cg.policy_loss(per_token_logps, old, adv, valid, cfg, agg=self.loss_agg_mode, **norm)
        per_token_kl = None
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * torch.exp(per_token_logps - old)
            loss = loss + self.beta * cg.aggregate_loss(per_token_kl, valid, self.loss_agg_mode, **norm)
        if AGG_TABLE[self.loss_agg_mode].normalizer is None and self.accelerator.num_processes > 1:
            # A sum (no normalizer) over the global batch: DDP averages gradients over processes, so x num_processes.
            loss = loss * self.accelerator.num_processes
        if self.aux_loss_enabled:
            accum = self.current_gradient_accumulation_steps if train else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / accum
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(aux_loss).mean().item()
            )
        self._log_cegppo_metrics(mode, per_token_logps, old, adv, valid, entropies, per_token_kl)
        return loss

    def _log_cegppo_metrics(
        self,
        mode: str,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        valid: torch.Tensor,
        entropies: torch.Tensor,
        per_token_kl: torch.Tensor | None,
    ) -> None:
        """Global (all-process) token-weighted means of `cegppo.policy_metrics`, plus TRL's names."""
        local = cg.policy_metrics(log_prob, old_log_prob, advantages, valid, self.cegppo_config)
        n = valid.sum().to(torch.float64)
        zero = torch.zeros((), dtype=log_prob.dtype, device=log_prob.device)
        sums = [local[k].detach().to(torch.float64) * n for k in cegppo.METRIC_KEYS if k != "ratio_max"]
        sums.append(torch.where(valid, entropies.detach(), zero).sum().to(torch.float64))
        if per_token_kl is not None:
            sums.append(torch.where(valid, per_token_kl.detach(), zero).sum().to(torch.float64))
        totals = self.accelerator.reduce(torch.stack([*sums, n]), reduction="sum").tolist()  # one host sync
        count = max(totals[-1], 1.0)
        means = [s / count for s in totals[:-1]]
        names = [k for k in cegppo.METRIC_KEYS if k != "ratio_max"]
        values = dict(zip(names, means[: len(names)], strict=True))
        values["ratio_max"] = self.accelerator.gather(local["ratio_max"].detach().reshape(1)).max().item()
        for key in cegppo.METRIC_KEYS:
            self._metrics[mode][METRIC_PREFIX + key].append(values[key])
        self._metrics[mode]["clip_ratio/low_mean"].append(values["clip_low_frac"])
        self._metrics[mode]["clip_ratio/high_mean"].append(values["clip_high_frac"])
        self._metrics[mode]["clip_ratio/region_mean"].append(values["clip_frac"])
        self._metrics[mode]["entropy"].append(means[len(names)])
        if per_token_kl is not None:
            self._metrics[mode]["kl"].append(means[len(names) + 1])




_MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
"""Inputs GRPOTrainer forwards to the model when present (vision-language models)."""


def trl_port(loss_type: str) -> Any:
    """A conformance-kit port (docs/conformance.md) running TRL's own ``GRPOTrainer`` loss of ``loss_type``.

    ``loss_type`` is one of `FAMILY_LOSSES`; the port takes that member's keywords (``cispo``: ``cap``, set as
    TRL's ``epsilon_high``; ``sapo``: ``tau_pos, tau_neg``, set as ``sapo_temperature_pos/neg``), records the
    objective as ``port.objective``, and returns the loss of ``GRPOTrainer.compute_loss`` on the kit's
    log-probs, which stand in for the model's (`cegppo.integrations._trl_harness`: a trainer on a one-layer
    model, one process, no gradient accumulation). TRL's aggregation is the loss type's own (``cispo``: the
    sum over the batch's tokens divided by their count; ``sapo``: each row's token mean, then the mean over
    all rows); TRL takes (B,) or (B, T) advantages. This is what
    ``cegppo-conformance check --framework-loss trl --loss NAME`` runs.

    Raises:
        ValueError: `loss_type` is not one of TRL's family losses.
    """
    from cegppo.conformance._port import kit_port  # the kit's port contract: only a port needs the kit

    from ._trl_harness import harness_loss

    if loss_type not in FAMILY_LOSSES:
        raise ValueError(f"loss_type must be one of {sorted(FAMILY_LOSSES)} (TRL's family losses), got {loss_type!r}")
    call = functools.partial(harness_loss, loss_type)
    return kit_port(call, name=f"trl_{loss_type}", doc=f"TRL GRPOTrainer loss_type={loss_type!r} as a cegppo "
                    "conformance port.", objective=FAMILY_LOSSES[loss_type])
