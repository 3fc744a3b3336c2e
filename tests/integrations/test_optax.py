"""A full optax training step of a plain-JAX policy with `cegppo.jax.policy_loss` under `jit`.

The worked example of docs/integrations.md ("JAX and optax"), with checks: a bigram policy samples
groups of sequences, GRPO advantages score them with a toy reward, and a jitted step (loss,
gradient by `jax.value_and_grad`, `optax.adam` update) runs several PPO epochs on that rollout.

- the loss falls at every epoch and the advantage-weighted log-likelihood rises;
- the rewarded token becomes more likely (the update goes the right way);
- later epochs have clipped tokens, and inside `jit` the gradient with respect to the log-probs
  equals the NumPy reference's analytic gradient (`cegppo.policy_loss_grad`, spec S4) there;
- CE-GPPO's update differs from PPO's (beta = 0) once tokens are clipped.
"""

from __future__ import annotations

import itertools

import cegppo
import numpy as np
import pytest
from integration_helpers import need

jax = need("jax")
optax = need("optax")

import cegppo.jax as cg  # noqa: E402
import jax.numpy as jnp  # noqa: E402

V, D, B, T, G = 8, 16, 16, 6, 4  # vocab, width, sequences (4 prompts x 4 samples), length, group size
TARGET = 3  # toy reward: the fraction of generated tokens equal to TARGET


def init(key):
    k1, k2 = jax.random.split(key)
    return {"emb": 0.1 * jax.random.normal(k1, (V, D)), "out": 0.1 * jax.random.normal(k2, (D, V))}


def logits_fn(params, prev):
    """A bigram policy: the logits of token t given token t - 1. (..., ) ids -> (..., V)."""
    return jnp.tanh(params["emb"][prev]) @ params["out"]


def sample(params, key, first):
    def step(tok, k):
        nxt = jax.random.categorical(k, logits_fn(params, tok))
        return nxt, nxt

    _, toks = jax.lax.scan(step, first, jax.random.split(key, T))
    return toks.T  # (B, T)


def log_probs(params, prev, tokens):
    return cg.token_log_probs(logits_fn(params, prev), tokens)  # (B, T)


def make_step(cfg: cegppo.CEGPPOConfig, opt):
    @jax.jit
    def train_step(params, opt_state, batch):
        def loss_fn(p):
            lp = log_probs(p, batch["prev"], batch["tokens"])
            loss = cg.policy_loss(lp, batch["old_log_prob"], batch["advantages"], batch["mask"], cfg)
            return loss, cg.policy_metrics(lp, batch["old_log_prob"], batch["advantages"], batch["mask"], cfg)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    return train_step


def rollout(params):
    first = jnp.repeat(jnp.arange(B // G) % V, G)  # 4 prompts (first tokens), 4 samples each
    tokens = sample(params, jax.random.PRNGKey(1), first)
    prev = jnp.concatenate([first[:, None], tokens[:, :-1]], axis=1)
    mask = jnp.ones((B, T), bool).at[1, 4:].set(False)  # one shorter response
    rewards = jnp.sum((tokens == TARGET) & mask, axis=1) / jnp.sum(mask, axis=1)
    return {
        "prev": prev,
        "tokens": tokens,
        "mask": mask,
        "old_log_prob": log_probs(params, prev, tokens),
        "advantages": cg.grpo_advantages(rewards, group_size=G),
    }


def weighted_logp(params, batch) -> float:
    lp = log_probs(params, batch["prev"], batch["tokens"])
    return float(jnp.sum(jnp.where(batch["mask"], batch["advantages"][:, None] * lp, 0.0)))


def target_prob(params) -> float:
    return float(jnp.mean(jax.nn.softmax(logits_fn(params, jnp.arange(V)))[:, TARGET]))


def train(cfg, epochs=6):
    params = init(jax.random.PRNGKey(0))
    opt = optax.adam(3e-2)
    opt_state = opt.init(params)
    batch = rollout(params)
    step = make_step(cfg, opt)
    history = []
    for _ in range(epochs):
        before = params
        params, opt_state, loss, metrics = step(params, opt_state, batch)
        history.append((before, float(loss), {k: float(v) for k, v in metrics.items()}))
    return init(jax.random.PRNGKey(0)), params, batch, history


@pytest.fixture(scope="module")
def run():
    return train(cegppo.presets.ce_gppo_1p5b(dual_clip=10.0))


def test_rollout_has_signal(run) -> None:
    _, _, batch, _ = run
    adv = np.asarray(batch["advantages"])
    assert (adv > 0).any() and (adv < 0).any(), adv


def test_loss_falls_and_update_goes_the_right_way(run) -> None:
    params0, params, batch, history = run
    losses = [loss for _, loss, _ in history]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    # Epoch 0 scores its own rollout: ratio 1 everywhere, so the loss is -mean over valid tokens of A.
    m, adv = np.asarray(batch["mask"]), np.asarray(batch["advantages"])
    np.testing.assert_allclose(losses[0], -(adv[:, None] * m).sum() / m.sum(), rtol=1e-5, atol=1e-7)
    assert weighted_logp(params, batch) > weighted_logp(params0, batch)
    assert target_prob(params) > target_prob(params0)


def test_clipped_epochs_and_jit_gradient_equals_reference(run) -> None:
    _, _, batch, history = run
    before, _, metrics = history[-1]
    assert metrics["clip_frac"] > 0, metrics
    cfg = cegppo.presets.ce_gppo_1p5b(dual_clip=10.0)
    lp = log_probs(before, batch["prev"], batch["tokens"])

    @jax.jit
    def grad_lp(lp):
        return jax.grad(cg.policy_loss)(lp, batch["old_log_prob"], batch["advantages"], batch["mask"], cfg)

    args = [np.asarray(x, np.float64) for x in (lp, batch["old_log_prob"], batch["advantages"])]
    want = cegppo.policy_loss_grad(*args, np.asarray(batch["mask"]), cfg)
    np.testing.assert_allclose(np.asarray(grad_lp(lp)), want, rtol=1e-5, atol=1e-7)
    regions = cegppo.token_regions(*args, cfg)
    assert (regions.clip_low | regions.clip_high)[np.asarray(batch["mask"])].any()


def test_cegppo_update_differs_from_ppo_once_clipped(run) -> None:
    _, params, _, _ = run
    _, params_ppo, _, history = train(cegppo.presets.ppo(dual_clip=10.0))
    assert history[-1][2]["clip_frac"] > 0
    diff = max(float(jnp.max(jnp.abs(params[k] - params_ppo[k]))) for k in params)
    assert diff > 1e-5, diff
