"""CE-GPPO as a tunix policy loss (docs/integrations.md, "tunix").

Importing this module registers ``ce_gppo`` in tunix's policy-loss registry
(``tunix.rl.function_registry.register_policy_loss_fn``). tunix's learners look their loss up by
name from ``algo_config.policy_loss_fn``, so a tunix run selects CE-GPPO with one setting:

    from cegppo.integrations.tunix import CEGPPOGRPOConfig      # GRPOConfig + the CE-GPPO fields
    algo_config = CEGPPOGRPOConfig(num_generations=4, beta=0.0, beta_low=0.5, beta_high=1.0,
                                   epsilon=0.2, epsilon_high=0.2, epsilon_c=10.0)
    learner = GRPOLearner(rl_cluster=cluster, algo_config=algo_config, reward_fns=...)

(``CEGPPOGRPOConfig`` sets ``policy_loss_fn="ce_gppo"``; with tunix's own ``GRPOConfig`` or
``PPOConfig``, set ``policy_loss_fn="ce_gppo"`` after importing this module: the betas then take
the paper's defaults, with a warning.) The loss runs `cegppo.jax.policy_loss` and
`cegppo.jax.policy_metrics` (the same jitted functions as everywhere else) on the per-token
log-probs that tunix's own ``common.compute_per_token_logps`` computes from the model.

==========================  ==========================================  =============================
CE-GPPO (spec S1)           tunix config field                          default
==========================  ==========================================  =============================
eps_low                     ``epsilon`` (PPOConfig: ``epsilon_low``)     0.2
eps_high                    ``epsilon_high`` (else eps_low)              eps_low
dual_clip c                 ``epsilon_c`` (None: no dual clip)           None (the paper's scripts: 10)
beta_low (beta_1)           ``beta_low`` (CEGPPOGRPOConfig)              0.5 (paper, 1.5B)
beta_high (beta_2)          ``beta_high`` (CEGPPOGRPOConfig)             1.0 (paper)
aggregation (spec S8)       ``loss_agg_mode`` (GRPO; PPO: token-mean)   tunix's (see `TUNIX_AGG_MODES`)
==========================  ==========================================  =============================

Kept from tunix: the KL term (GRPO: ``beta`` x the aggregated ``kl_loss_mode`` divergence against
the reference log-probs; PPO: ``kl_coef``), the rollout ``temperature``, and the truncated
importance-sampling weights (``sampler_is_weights``, >= 0), applied as weights on the advantage:
J_t is positively homogeneous in A_t and the regions depend on its sign only, so this equals
tunix's weighting of the per-token loss. Refused with a ValueError: ``loss_algo="gspo-token"``
(CE-GPPO is a token-level objective) and an entropy bonus (PPO's ``entropy_coef``: CE-GPPO
steers entropy through the betas). Unlike tunix's ``grpo`` loss, the log-ratio is never clamped
to +-20 (spec S9.1).

Metrics (in the loss's aux, 0-d arrays): tunix's ``pg_loss``, ``pg_clipfrac`` (= our
``clip_frac``), ``pg_clipfrac_lower`` (= ``dual_clip_frac``), ``ppo_kl`` (= ``approx_kl_k1``),
``kl``, ``kl_loss`` and ``entropy``, plus every key of `cegppo.METRIC_KEYS` under ``ce_gppo/``.
tunix's trainer logs only the aux keys its learner names; `log_cegppo_metrics` (called by
`CEGPPOLearner`) adds ours.

Pinned and tested against google-tunix 0.1.7 (the ``tunix`` extra).
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "tunix", ["jax", "flax", "tunix"])  # first: a missing one is named with its extra

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import cegppo
import cegppo.jax as cg
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.rl import algo_core as _algo_core  # noqa: F401  registers tunix's own losses (grpo, ppo) first
from tunix.rl import common, function_registry
from tunix.rl.grpo import grpo_learner
from tunix.rl.ppo import ppo_learner

from ._common import DEFAULT, cegppo_config, registered_loss

__all__ = [
    "LOSS_NAME",
    "METRIC_PREFIX",
    "TUNIX_AGG_MODES",
    "CEGPPOGRPOConfig",
    "CEGPPOLearner",
    "CEGPPOPPOConfig",
    "ce_gppo_policy_loss_fn",
    "cegppo_config_from_tunix",
    "log_cegppo_metrics",
    "tunix_port",
]

LOSS_NAME = "ce_gppo"
"""The name registered in tunix's policy-loss registry (``algo_config.policy_loss_fn``)."""

METRIC_PREFIX = "ce_gppo/"
"""Prefix of our metrics (`cegppo.METRIC_KEYS`) in the aux dict the loss returns."""

TUNIX_AGG_MODES: dict[str, str] = {
    "token-mean": "token-mean",
    "sequence-mean-token-mean": "seq-mean-token-mean",
    # tunix: sum_i (sum_t l_it) / T / S, i.e. Dr.GRPO's constant length L = T (spec S8)
    "sequence-mean-token-scale": "seq-mean-token-sum-norm",
    "seq-mean-token-sum": "seq-mean-token-sum",
    # tunix: sum_it l_it / S (its default norm is the number of non-empty rows)
    "sequence-mean-token-sum-norm": "seq-mean-token-sum",
}
"""tunix's ``loss_agg_mode`` names -> ours (spec S8); each gives the value of tunix's
``common.aggregate_loss`` with its default normaliser (tested)."""

_log = logging.getLogger(__name__)

_TUNIX_NAME_OF_AGG = {ours: theirs for theirs, ours in reversed(TUNIX_AGG_MODES.items())}
"""Our mode -> a tunix ``loss_agg_mode`` that computes it (the first, where two do)."""
_FAMILY_AGG: dict[str, tuple[str, ...]] = {"grpo": tuple(_TUNIX_NAME_OF_AGG), "ppo": ("token-mean",)}
"""The modes (ours) each tunix config family's loss can compute: tunix's ``ppo`` loss is token-mean only."""


def _check_ce_gppo_fields(config: Any) -> None:
    """The CE-GPPO values of a tunix config are valid (ValueError naming the tunix field)."""
    try:
        cegppo_config_from_tunix(config)
    except ValueError as exc:
        raise ValueError(f"{type(config).__name__}: {exc}") from exc


@dataclasses.dataclass(kw_only=True)
class CEGPPOGRPOConfig(grpo_learner.GRPOConfig):
    """tunix's ``GRPOConfig`` with the CE-GPPO loss and its fields (arXiv 2509.20712, Eq. 8).

    Every field of tunix's class keeps its meaning; note that ``beta`` stays tunix's KL
    coefficient (default 0.04; the paper trains without KL: ``beta=0.0``), and the CE-GPPO
    gradient scales are ``beta_low`` / ``beta_high``.
    """

    policy_loss_fn: str = LOSS_NAME
    """The registered loss; ``ce_gppo`` for this module's loss."""
    epsilon_high: float | None = None
    """eps_high: upper clip bound is 1 + epsilon_high (None: ``epsilon``)."""
    epsilon_c: float | None = None
    """Dual-clip constant c > 1 for A < 0 (None: no dual clip)."""
    beta_low: float = DEFAULT.beta_low
    """beta_1: gradient scale kept for clip_low tokens (ratio < 1 - eps_low, A < 0). >= 0."""
    beta_high: float = DEFAULT.beta_high
    """beta_2: gradient scale kept for clip_high tokens (ratio > 1 + eps_high, A > 0). >= 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epsilon_high is None:  # tunix's grpo loss reads epsilon_high as a number when present
            self.epsilon_high = self.epsilon
        _check_ce_gppo_fields(self)


@dataclasses.dataclass(slots=True, kw_only=True)
class CEGPPOPPOConfig(ppo_learner.PPOConfig):
    """tunix's ``PPOConfig`` (actor-critic PPO, GAE advantages) with the CE-GPPO loss and betas.

    eps_low/eps_high are tunix's ``epsilon_low`` / ``epsilon_high`` (default ``epsilon``), c is
    ``epsilon_c``; aggregation is token-mean, as in tunix's ``ppo`` loss.
    """

    policy_loss_fn: str = LOSS_NAME
    """The registered loss; ``ce_gppo`` for this module's loss."""
    beta_low: float = DEFAULT.beta_low
    """beta_1: gradient scale kept for clip_low tokens. >= 0."""
    beta_high: float = DEFAULT.beta_high
    """beta_2: gradient scale kept for clip_high tokens. >= 0."""

    def __post_init__(self) -> None:
        ppo_learner.PPOConfig.__post_init__(self)  # (zero-argument super() fails in slots dataclasses)
        _check_ce_gppo_fields(self)


def cegppo_config_from_tunix(algo_config: Any) -> cegppo.CEGPPOConfig:
    """The `cegppo.CEGPPOConfig` that a tunix algorithm config describes (module docstring's table).

    Raises:
        ValueError: when `algo_config` is None, or a value is out of range (as CEGPPOGRPOConfig names it).
    """
    if algo_config is None:
        raise ValueError("algo_config must be tunix's algorithm config (got None): the loss reads eps, c and "
                         "the betas from it")
    eps_low = getattr(algo_config, "epsilon_low", None)
    if eps_low is None:
        eps_low = algo_config.epsilon
    eps_high = getattr(algo_config, "epsilon_high", None)
    return cegppo_config(
        eps_low=eps_low,
        eps_high=eps_low if eps_high is None else eps_high,
        beta_low=getattr(algo_config, "beta_low", None),
        beta_high=getattr(algo_config, "beta_high", None),
        dual_clip=getattr(algo_config, "epsilon_c", None),
        log=_log,
        missing_betas=f"{type(algo_config).__name__} has no beta_low/beta_high (use {__name__}.CEGPPOGRPOConfig)",
    )


def _aggregation(algo_config: Any) -> str:
    """Our aggregation mode for the config's ``loss_agg_mode`` (tunix's PPO loss: token-mean)."""
    mode = getattr(algo_config, "loss_agg_mode", "token-mean")
    if mode not in TUNIX_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {sorted(TUNIX_AGG_MODES)}, got {mode!r}")
    return TUNIX_AGG_MODES[mode]


def _refuse_unsupported(algo_config: Any) -> None:
    """ValueError naming the field for tunix options CE-GPPO does not have."""
    if getattr(algo_config, "loss_algo", "grpo") != "grpo":
        raise ValueError(f"loss_algo={algo_config.loss_algo!r}: CE-GPPO is a token-level objective "
                         "(loss_algo='grpo'); sequence-level ratios (gspo-token) are not part of it")
    entropy_coef = getattr(algo_config, "entropy_coef", None)
    if entropy_coef:
        raise ValueError(f"entropy_coef={entropy_coef!r}: CE-GPPO steers entropy through beta_low/beta_high and "
                         "trains without an entropy bonus; set entropy_coef=None")


def _kl_penalty(
    algo_config: Any, log_prob: jax.Array, ref_log_prob: jax.Array | None, mask: jax.Array, agg: str
) -> tuple[jax.Array | float, jax.Array | float, jax.Array | float]:
    """(coefficient, kl_loss, kl mean) of tunix's KL term, kept as tunix computes it.

    GRPO-family configs: ``beta`` x the ``kl_loss_mode`` divergence aggregated like the policy
    loss; PPOConfig: ``kl_coef`` (if set) x the token mean of ``kl``, as tunix's ``ppo`` loss
    (PPOConfig's ``beta`` is a reward penalty applied by its learner, not a loss term).
    """
    if ref_log_prob is None:
        return 0.0, 0.0, 0.0
    ppo = isinstance(algo_config, ppo_learner.PPOConfig)
    coef = getattr(algo_config, "kl_coef", 0.0) if ppo else getattr(algo_config, "beta", 0.0)
    method = "kl" if ppo else algo_config.kl_loss_mode
    kl = common.compute_kl_divergence(
        log_prob, ref_log_prob, method, clamp_value=getattr(algo_config, "kl_clamp_value", None)
    )
    kl_loss = cg.aggregate_loss(kl, mask, "token-mean" if ppo else agg)
    kl_mean = cg.aggregate_loss(jax.lax.stop_gradient(kl), mask, "token-mean")
    return (coef or 0.0), kl_loss, kl_mean


@function_registry.register_policy_loss_fn(LOSS_NAME)
def ce_gppo_policy_loss_fn(
    model: nnx.Module,
    train_example: Any,
    algo_config: Any,
    pad_id: int,
    eos_id: int,
    **kwargs: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """CE-GPPO's clipped policy loss in tunix's policy-loss signature (arXiv 2509.20712, Eq. 8; spec S3, S8).

        loss = sum_t c_t (-J_t) [+ KL term]

    with J_t the CE-GPPO objective (clip_low: beta_low (1-eps_low) A, clip_high: beta_high
    (1+eps_high) A, both with gradient kept; dual_clip: c A; inside: delta A) and c_t the weights
    of the config's ``loss_agg_mode`` (spec S8). The per-token log-probs come from tunix's
    ``common.compute_per_token_logps`` (with the rollout temperature); the loss and the metrics
    from `cegppo.jax.policy_loss` and `cegppo.jax.policy_metrics` (log space, no clamping of
    log-ratios, masked garbage inert).

    Args:
        model: the policy (a flax nnx module), as tunix's trainer passes it.
        train_example: tunix's ``TrainExample`` (prompt/completion ids and masks, ``advantages``
            (B,) or (B, T), ``old_per_token_logps`` (None: this policy's, detached, as tunix),
            ``ref_per_token_logps``, optional ``sampler_is_weights``).
        algo_config: tunix's algorithm config (`CEGPPOGRPOConfig`, `CEGPPOPPOConfig`, or tunix's own).
        pad_id: the tokenizer's pad id.
        eos_id: the tokenizer's eos id.
        **kwargs: ignored (tunix's losses take them too).

    Returns:
        (loss, aux): a 0-d array and a dict of 0-d arrays (module docstring, "Metrics").

    Raises:
        ValueError: for an unsupported option (``loss_algo='gspo-token'``, ``entropy_coef``), an
            unknown ``loss_agg_mode``, or out-of-range CE-GPPO values; at trace time.
    """
    del kwargs
    _refuse_unsupported(algo_config)
    cfg = cegppo_config_from_tunix(algo_config)
    agg = _aggregation(algo_config)
    graphdef, state = nnx.split(model)
    log_prob, logits = common.compute_per_token_logps(
        graphdef,
        state,
        prompt_tokens=train_example.prompt_ids,
        completion_tokens=train_example.completion_ids,
        pad_id=pad_id,
        eos_id=eos_id,
        stop_gradient=False,
        return_logits=True,
        segment_ids=getattr(train_example, "segment_ids", None),
        segment_positions=getattr(train_example, "segment_positions", None),
        temperature=getattr(algo_config, "temperature", 1.0),
    )
    mask = train_example.completion_mask
    old_log_prob = train_example.old_per_token_logps
    if old_log_prob is None:  # one iteration per rollout: the ratio is 1, as in tunix's losses
        old_log_prob = jax.lax.stop_gradient(log_prob)
    advantages = train_example.advantages
    weights = getattr(train_example, "sampler_is_weights", None)
    weighted = advantages
    if weights is not None:  # J_t(w A) = w J_t(A) for w >= 0: tunix's per-token weighting, on A
        adv2d = advantages if advantages.ndim == 2 else jnp.broadcast_to(advantages[:, None], log_prob.shape)
        weighted = adv2d * jax.lax.stop_gradient(weights).astype(adv2d.dtype)
    loss = cg.policy_loss(log_prob, old_log_prob, weighted, mask, cfg, agg=agg)
    metrics = cg.policy_metrics(log_prob, old_log_prob, advantages, mask, cfg)
    coef, kl_loss, kl_mean = _kl_penalty(algo_config, log_prob, train_example.ref_per_token_logps, mask, agg)
    aux: dict[str, Any] = {
        "pg_loss": jax.lax.stop_gradient(loss),
        "pg_clipfrac": metrics["clip_frac"],
        "pg_clipfrac_lower": metrics["dual_clip_frac"],
        "ppo_kl": metrics["approx_kl_k1"],
        "kl": kl_mean,
        "kl_loss": jax.lax.stop_gradient(kl_loss),
        "entropy": cg.aggregate_loss(cg.entropy(jax.lax.stop_gradient(logits)), mask, "token-mean"),
    }
    aux.update({METRIC_PREFIX + k: v for k, v in metrics.items()})
    if coef:
        loss = loss + coef * kl_loss
    return loss, aux


def log_cegppo_metrics(learner: Any) -> None:
    """Make tunix's actor trainer log our metrics (``ce_gppo/*`` and ``entropy``) besides the learner's own.

    tunix's trainer logs only the aux keys in its ``rl_metrics_to_log``, which each learner sets
    in its constructor (GRPO: ``kl``, ``pg_clipfrac``); call this after constructing the learner.
    """
    trainer = learner.rl_cluster.actor_trainer
    wanted = dict(trainer.rl_metrics_to_log)
    wanted.update({METRIC_PREFIX + k: np.mean for k in cg.METRIC_KEYS})
    wanted["entropy"] = np.mean
    trainer.with_rl_metrics_to_log(wanted)


class CEGPPOLearner(grpo_learner.GRPOLearner):
    """tunix's ``GRPOLearner`` that also logs the CE-GPPO metrics (`log_cegppo_metrics`).

    Takes tunix's arguments; ``algo_config.policy_loss_fn`` must be ``ce_gppo`` (`CEGPPOGRPOConfig`'s
    default), else a ValueError: the metrics it logs exist only in this loss's aux.
    """

    def __init__(self, rl_cluster: Any, algo_config: Any, reward_fns: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(algo_config, "policy_loss_fn", None) != LOSS_NAME:  # before tunix wires the loss in
            raise ValueError(f"algo_config.policy_loss_fn must be {LOSS_NAME!r} for CEGPPOLearner, got "
                             f"{getattr(algo_config, 'policy_loss_fn', None)!r} (use CEGPPOGRPOConfig, or tunix's "
                             "GRPOLearner)")
        super().__init__(rl_cluster, algo_config, reward_fns, *args, **kwargs)
        log_cegppo_metrics(self)


# ----------------------------------------------------------------------------- the conformance kit


class _NoModel(nnx.Module):
    """The policy a kit port hands tunix's loss: log-probs are supplied, not computed."""


@contextlib.contextmanager
def _supplied_log_probs(log_prob: Any) -> Iterator[None]:
    """Make ``common.compute_per_token_logps`` return `log_prob` (and (B, T, 1) zero logits) for a while.

    tunix's losses compute the log-probs from a model inside the loss; the kit hands them in.
    Everything after that call (ratios, clipping, dual clip, aggregation, KL) is the loss's own code.
    """
    real = common.compute_per_token_logps

    def supplied(*args: Any, stop_gradient: bool = True, return_logits: bool = False, **kw: Any) -> Any:
        lp = jax.lax.stop_gradient(log_prob) if stop_gradient else log_prob
        return (lp, jnp.zeros((*lp.shape, 1), lp.dtype)) if return_logits else lp

    common.compute_per_token_logps = supplied
    try:
        yield
    finally:
        common.compute_per_token_logps = real


def _port_config(learner: str, name: str, loss_agg_mode: str, *, eps_low: float, eps_high: float, beta_low: float,
                 beta_high: float, clip_ratio_c: float | None) -> Any:
    if loss_agg_mode not in _FAMILY_AGG[learner]:
        raise ValueError(f"loss_agg_mode must be one of {sorted(_FAMILY_AGG[learner])} with tunix's {learner} "
                         f"config (those its loss computes), got {loss_agg_mode!r}")
    if learner == "ppo":
        return CEGPPOPPOConfig(policy_loss_fn=name, epsilon=eps_low, epsilon_low=eps_low, epsilon_high=eps_high,
                               epsilon_c=clip_ratio_c, beta_low=beta_low, beta_high=beta_high)
    config = CEGPPOGRPOConfig(policy_loss_fn=name, loss_agg_mode=_TUNIX_NAME_OF_AGG[loss_agg_mode], beta=0.0,
                              epsilon=eps_low, epsilon_high=eps_high, epsilon_c=clip_ratio_c, beta_low=beta_low,
                              beta_high=beta_high)
    config.temperature = 1.0  # set by GRPOLearner from the rollout config; tunix's grpo loss reads it
    return config


def _registered_tunix_loss(name: str) -> Callable[..., Any]:
    """tunix's policy loss registered as `name` (ValueError listing the registered names)."""
    try:
        return function_registry.get_policy_loss_fn(name)
    except LookupError as exc:
        known = function_registry.default_registry.list_functions("policy_loss_fn")
        raise ValueError(f"no tunix policy loss named {name!r} (registered: {sorted(known)})") from exc


def tunix_port(loss: str | Callable[..., Any] = LOSS_NAME, *, learner: str | None = None) -> Callable[..., Any]:
    """A conformance-kit port (docs/conformance.md) that calls the tunix policy loss registered as `loss`.

    `loss` may also be the loss function itself (tunix's signature), registered or not.

    The port has the kit's signature ``port(log_prob, old_log_prob, advantages, response_mask, *,
    eps_low, eps_high, beta_low, beta_high, clip_ratio_c)`` and returns the loss's value. The
    hyperparameters reach the loss through a tunix config of `learner`'s family: ``"grpo"``
    (`CEGPPOGRPOConfig`: ``epsilon``, ``epsilon_high``, ``epsilon_c``, ``beta_low``, ``beta_high``,
    ``loss_agg_mode="token-mean"``, KL ``beta=0``) or ``"ppo"`` (`CEGPPOPPOConfig`:
    ``epsilon_low``, ``epsilon_high``, ``epsilon_c``, the betas); default ``"ppo"`` for tunix's
    ``ppo`` loss, else ``"grpo"``. The kit's log-probs replace the model's
    (``common.compute_per_token_logps``); the rest is the loss's code. This is what
    ``cegppo-conformance check --framework-loss tunix --loss NAME`` runs.

    Checked with the kit's ``agg=`` declaration, the port also takes ``loss_agg_mode=`` (verl's names),
    set as the ``grpo`` config's ``loss_agg_mode`` under tunix's name for it (`TUNIX_AGG_MODES`;
    ``token-sum`` has none, and the ``ppo`` family is token-mean only). tunix's losses take no global
    normalizers: declaring ``global_normalizers=True`` makes the port raise.

    Raises:
        ValueError: when no tunix policy loss is registered under `loss`, or `learner` is unknown.
    """
    from cegppo.conformance._port import agg_kit_port  # the kit's port contract: only a port needs the kit
    fn, name = registered_loss(loss, _registered_tunix_loss)
    registered = LOSS_NAME if callable(loss) else name
    family = learner or ("ppo" if registered == "ppo" else "grpo")
    if family not in ("grpo", "ppo"):
        raise ValueError(f"learner must be 'grpo' or 'ppo', got {learner!r}")
    model = _NoModel()

    def call(log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *, loss_agg_mode: str,
             num_tokens: Any, num_seqs: Any, **hyper: Any) -> Any:
        if num_tokens is not None or num_seqs is not None:
            raise ValueError("tunix's losses take no global normalizers (num_tokens, num_seqs): declare "
                             "global_normalizers=False")
        config = _port_config(family, registered, loss_agg_mode, **hyper)
        b = log_prob.shape[0]
        example = grpo_learner.TrainExample(
            prompt_ids=jnp.zeros((b, 0), jnp.int32),
            prompt_mask=jnp.zeros((b, 0), bool),
            completion_ids=jnp.zeros(log_prob.shape, jnp.int32),
            completion_mask=response_mask,
            advantages=advantages,
            ref_per_token_logps=None,
            old_per_token_logps=old_log_prob,
        )
        with _supplied_log_probs(log_prob):
            out, _ = fn(model, example, algo_config=config, pad_id=0, eos_id=1)
        return out

    return agg_kit_port(call, name=f"tunix_{name}",
                        doc=f"tunix policy loss {name!r} ({family} config) as a cegppo conformance port.")
