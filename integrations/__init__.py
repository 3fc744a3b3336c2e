"""cegppo.integrations: CE-GPPO inside the RL frameworks people already train with (docs/integrations.md).

Import the submodule for your framework; nothing here imports a framework you did not ask for:

- ``cegppo.integrations.verl``: registers the ``ce_gppo`` policy loss in verl's registry
  (``actor_rollout_ref.actor.policy_loss.loss_mode=ce_gppo``).
- ``cegppo.integrations.trl``: ``CEGPPOTrainer`` / ``CEGPPOConfig``, TRL's ``GRPOTrainer`` and
  ``GRPOConfig`` with the CE-GPPO loss and its betas.
- ``cegppo.integrations.openrlhf``: ``CEGPPOPolicyLoss``, a drop-in for OpenRLHF's ``PolicyLoss``
  (a one-line swap of its import in OpenRLHF's ``ppo_actor.py``).
- ``cegppo.integrations.skyrl``: registers the ``ce_gppo`` policy loss in SkyRL's registry
  (``trainer.algorithm.policy_loss_type=ce_gppo``), with ``CEGPPOSkyRLTrainConfig`` for the betas.

JAX users need no adapter: ``cegppo.jax.policy_loss`` is a pure function to put in an optax step
(docs/integrations.md, "JAX and optax").
"""

from __future__ import annotations

__all__: list[str] = []
