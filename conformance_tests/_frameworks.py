"""The RL frameworks' own policy losses as conformance ports: one table, `FRAMEWORK_LOSSES`.

Each framework calls its losses through its own signature (verl: ``fn(old_log_prob, log_prob,
advantages, response_mask, loss_agg_mode, config)``; OpenRLHF: a ``PolicyLoss`` class; SkyRL: a
``PolicyLossRegistry`` entry; tunix: ``fn(model, train_example, algo_config, pad_id, eos_id)``; TRL: a
``GRPOTrainer`` ``loss_type``). Its
integration, `cegppo.integrations.<framework>`, turns such a loss into a standard port (`kit_port`);
the ``port_from_*`` functions here pick the loss by name, and the table tells the command line
(``cegppo-conformance check --framework-loss FRAMEWORK [--loss [MODULE:]NAME]``, ``--verl-loss NAME``
for short) which framework each port runs in and how a reproducer rebuilds it.

Importing this module imports no framework; building a port imports the framework and its integration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._targets import import_target

__all__ = ["FRAMEWORK_LOSSES", "FrameworkLoss", "port_from_openrlhf", "port_from_skyrl", "port_from_trl",
           "port_from_tunix", "port_from_verl_loss"]

def _registered(loss: str | Callable[..., Any] | None, default: str) -> str | Callable[..., Any]:
    """What to look up in a framework's registry: `loss` itself (a function), NAME of ``[MODULE:]NAME`` after
    importing MODULE, which may register NAME, or the integration's own name `default` for None."""
    if loss is None:
        return default
    if callable(loss):
        return loss
    return import_target(loss)[1]


def port_from_verl_loss(loss: str | Callable[..., Any] | None = None, *,
                        objective: str = "ce_gppo") -> Callable[..., Any]:
    """A standard port wrapping a verl policy loss: None for ``ce_gppo``, a registered name (``vanilla``,
    ``cispo``, ...), ``MODULE:NAME`` (MODULE imported first so that it can register NAME) or the function itself.

    verl registers losses as ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
    config) -> (pg_loss, *metrics)``; the port builds verl's actor config from the kit's keywords and
    calls the loss with the objective's paper aggregation, or the mode the kit passes
    (`cegppo.integrations.verl.verl_port`). The port takes `objective`'s keywords (``port.objective``):
    ``objective="cispo"`` for verl's ``cispo``, ``"sapo"`` and ``"gspo"`` for its ``sapo`` and ``gspo``.

    Raises:
        ValueError: no verl policy loss is registered under the name.
    """
    from cegppo.integrations.verl import (  # imports torch and verl (and registers ce_gppo)
        LOSS_NAME,
        verl_port,
    )

    return verl_port(_registered(loss, LOSS_NAME), objective=objective)


def port_from_openrlhf(loss: str | type[Any] | None = None) -> Callable[..., Any]:
    """A standard port wrapping an OpenRLHF ``PolicyLoss``-like class.

    Args:
        loss: None for cegppo's `CEGPPOPolicyLoss`; a class; or ``[MODULE:]NAME``: the class NAME of
            MODULE (imported first; the current directory is importable), or without MODULE a name
            of `cegppo.integrations.openrlhf`: ``CEGPPOPolicyLoss``, or ``PolicyLoss`` (OpenRLHF's
            own PPO loss, ``openrlhf.models.loss.PolicyLoss``).

    The port builds the class with the kit's eps and dual clip (and betas, when its constructor takes
    ``beta_low``/``beta_high``), calls it as OpenRLHF's actor does without global normaliser, and
    returns the loss (`cegppo.integrations.openrlhf.openrlhf_port`). A class is looked up in MODULE,
    not in a registry: OpenRLHF has none.

    Raises:
        ValueError: a NAME that MODULE (or the integration) does not have.
        TypeError: what NAME names is not a class.
    """
    from cegppo.integrations import openrlhf as integration  # imports torch and OpenRLHF's loss layer

    if loss is None or isinstance(loss, type):
        return integration.openrlhf_port(loss)
    module, name = import_target(loss)
    cls = getattr(module or integration, name, None)
    if cls is None:
        where = loss.rpartition(":")[0] or "cegppo.integrations.openrlhf (CEGPPOPolicyLoss, PolicyLoss)"
        raise ValueError(f"no OpenRLHF policy loss class {name!r} in {where}")
    return integration.openrlhf_port(cls)


def port_from_skyrl(loss: str | Callable[..., Any] | None = None, *,
                    objective: str = "ce_gppo") -> Callable[..., Any]:
    """A standard port wrapping a SkyRL policy loss: None for ``ce_gppo`` (registered by
    `cegppo.integrations.skyrl`), a registered name (``regular``, ``dual_clip``, ``cispo``, ...),
    ``MODULE:NAME`` (MODULE imported first so that it can register NAME) or the loss function itself.
    The port takes `objective`'s keywords (``port.objective``): ``objective="cispo"``, ``"sapo"``, ``"gspo"``
    for SkyRL's losses of those names (CISPO's eps go to SkyRL's ``cispo.cispo_eps_clip_low/high``, SAPO's
    temperatures to ``sapo.tau_pos/neg``).

    SkyRL registers losses as ``fn(log_probs, old_log_probs, advantages, config, loss_mask,
    rollout_logprobs) -> (loss, metrics)``, a masked sum over advantages scaled for its
    ``loss_reduction``. The port passes the kit's hyperparameters in SkyRL's algorithm config (eps as
    ``eps_clip_low/high``, c as ``clip_ratio_c``, the betas as ``beta_low/beta_high``) and advantages
    scaled by SkyRL's own ``loss_reduction`` for the objective's paper aggregation or the mode the kit passes
    (`cegppo.integrations.skyrl.skyrl_port`).

    Raises:
        ValueError: no SkyRL policy loss is registered under the name.
    """
    from cegppo.integrations.skyrl import LOSS_NAME, skyrl_port  # imports torch and SkyRL's loss layer

    return skyrl_port(_registered(loss, LOSS_NAME), objective=objective)


def port_from_trl(loss: str | None = None, *, objective: str | None = None) -> Callable[..., Any]:
    """A standard port running TRL's own ``GRPOTrainer`` loss of ``loss_type`` `loss`: ``cispo`` (a port of
    ``cispo_cap``) or ``sapo`` (`cegppo.integrations.trl.trl_port`; ``port.objective`` names the member).
    `objective`, when given, must be that member: TRL's loss types compute one member each.

    Raises:
        ValueError: `loss` is None or not one of TRL's family losses, or `objective` is not its member.
    """
    if loss is None:
        raise ValueError("--framework-loss trl needs --loss cispo or --loss sapo (TRL's own family losses; "
                         "cegppo's TRL integration is a trainer, not a loss)")
    from cegppo.integrations.trl import trl_port  # imports torch, transformers and TRL

    port = trl_port(loss)
    if objective not in (None, port.objective):
        raise ValueError(f"TRL's loss_type={loss!r} computes {port.objective}, not objective {objective!r}")
    return port


def port_from_tunix(loss: str | Callable[..., Any] | None = None, *, learner: str | None = None) -> Callable[..., Any]:
    """A standard JAX port wrapping a tunix policy loss: None for ``ce_gppo``, a registered name, ``MODULE:NAME``
    (MODULE imported first so that it can register NAME) or the function itself.

    tunix registers losses as ``fn(model, train_example, algo_config, pad_id, eos_id) -> (loss, aux)``
    and computes the log-probs from the model inside the loss: the kit's log-probs stand in for the
    model's. The port builds a tunix config of `learner`'s family (``"grpo"``: ``epsilon``,
    ``epsilon_high``, ``epsilon_c``, ``beta_low``, ``beta_high``, token-mean; ``"ppo"``: ``epsilon_low``
    instead of ``epsilon``; default ``"ppo"`` for tunix's ``ppo`` loss, else ``"grpo"``) and returns the
    loss's value (`cegppo.integrations.tunix.tunix_port`).

    Raises:
        ValueError: when no tunix policy loss is registered under `loss`.
    """
    from cegppo.integrations.tunix import LOSS_NAME, tunix_port  # imports jax and tunix only when asked for

    return tunix_port(_registered(loss, LOSS_NAME), learner=learner)


@dataclass(frozen=True)
class FrameworkLoss:
    """One row of `FRAMEWORK_LOSSES`: a framework whose policy losses the kit checks through its own signature.

    Attributes:
        framework: the framework the ports run in (``torch`` or ``jax``).
        build: the ``port_from_*`` function: the ``--loss`` value (None: cegppo's integration) -> a port.
        losses: what ``--loss`` names, for the help.
        rebuild: how a reproducer rebuilds the port of a named loss, a format string of ``{name}`` (NAME of
            ``[MODULE:]NAME``, MODULE being imported first) and ``{objective}`` (``, objective='...'`` for a
            member other than CE-GPPO); default ``cegppo.conformance.<build>(LOSS)``.
        objectives: the objectives (``--objective``) whose ports `build` makes: CE-GPPO's only, unless a
            row says otherwise; `build` of a row with several takes the one to make as ``objective=``.
    """

    framework: str
    build: Callable[[str | None], Callable[..., Any]]
    losses: str
    rebuild: str = ""
    objectives: tuple[str, ...] = ("ce_gppo",)

    def port(self, loss: str | None, objective: str = "ce_gppo") -> Callable[..., Any]:
        """The port of `loss` (the ``--loss`` value) computing `objective`, one of `objectives`."""
        if objective not in self.objectives:
            raise ValueError(f"objective must be one of {self.objectives} for these losses, got {objective!r}")
        if self.objectives == ("ce_gppo",):
            return self.build(loss)
        return self.build(loss, objective=objective)  # type: ignore[call-arg]

    def port_name(self, framework_loss: str, loss: str | None, objective: str = "ce_gppo") -> str:
        """The report's name for the port of `loss`: what it is and how to rebuild it (pasted into reproducers)."""
        module_name, _, name = (loss or "").rpartition(":")
        first = f"import {module_name}; " if module_name else ""
        label = "(cegppo's integration)" if loss is None else repr(name)
        member = "" if objective == "ce_gppo" else f"objective={objective!r}"
        if self.rebuild and loss is not None:
            call = self.rebuild.format(name=repr(name), objective=f", {member}" if member else "")
        else:
            given = [repr(loss)] if loss is not None else []
            call = f"cegppo.conformance.{self.build.__name__}({', '.join(given + ([member] if member else []))})"
        return f"<{framework_loss} policy loss {label}: {first}port = {call}>"


FRAMEWORK_LOSSES: dict[str, FrameworkLoss] = {
    # verl's port is rebuilt by the integration's own function, the one docs/integrations.md names.
    "verl": FrameworkLoss("torch", port_from_verl_loss,
                          "a name in verl's policy-loss registry: ce_gppo (default), vanilla, cispo, sapo, gspo, ... or "
                          "MODULE:NAME",
                          rebuild="cegppo.integrations.verl.verl_port({name}{objective})",
                          objectives=("ce_gppo", "cispo", "sapo", "gspo")),
    "openrlhf": FrameworkLoss("torch", port_from_openrlhf,
                              "a PolicyLoss class: CEGPPOPolicyLoss (default), PolicyLoss (OpenRLHF's own) or "
                              "MODULE:CLASS"),
    "skyrl": FrameworkLoss("torch", port_from_skyrl,
                           "a name in SkyRL's PolicyLossRegistry: ce_gppo (default), regular, dual_clip, cispo, sapo, "
                           "gspo, ... or MODULE:NAME", objectives=("ce_gppo", "cispo", "sapo", "gspo")),
    "trl": FrameworkLoss("torch", port_from_trl,
                         "a GRPOTrainer loss_type of the family: cispo (--objective cispo_cap) or sapo (--objective sapo)",
                         rebuild="cegppo.integrations.trl.trl_port({name})", objectives=("cispo_cap", "sapo")),
    "tunix": FrameworkLoss("jax", port_from_tunix,
                           "a name in tunix's policy-loss registry: ce_gppo (default), grpo, ppo, ... or MODULE:NAME"),
}
"""``--framework-loss NAME`` -> how its losses become ports. ``--verl-loss NAME`` is ``--framework-loss verl --loss NAME``."""
