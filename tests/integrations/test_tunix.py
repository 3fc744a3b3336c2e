"""CE-GPPO inside tunix (google-tunix, JAX): the registered ``ce_gppo`` loss through tunix's own GRPO learner.

The run: a tiny tunix ``ToyTransformer`` (built from a config, one decoder layer, random weights) and
tunix's ``MockVocab``, tunix's ``RLCluster`` with its vanilla rollout engine, and `CEGPPOLearner`
(tunix's ``GRPOLearner`` plus our metrics) with ``policy_loss_fn="ce_gppo"``: rollouts, rewards, group
advantages, old log-probs and two jitted optimisation steps (``num_iterations=2``: the second step
reuses the rollout, so ratios move away from 1 and tokens clip), all tunix's code on CPU.

- the weights change; the loss tunix's trainer reports at each step equals `cegppo.jax.policy_loss`
  on the same batch, with log-probs computed here from the recorded weights;
- the region metrics reach tunix's metrics logger and equal `cegppo.jax.policy_metrics`;
- with the PPO preset (beta_low = beta_high = 0) the gradient with respect to every weight equals
  tunix's own clipped losses (``grpo`` and ``ppo``), on the run's batch and on one with moved old
  log-probs and a ragged mask (all regions present); with the CE-GPPO betas it does not;
- every tunix aggregation mode maps to ours; unsupported options are refused by name.
"""

from __future__ import annotations

import dataclasses

import cegppo
import numpy as np
import pytest
from integration_helpers import need, need_framework

need_framework("tunix", "tunix")
jax = need("jax")

import cegppo.jax as cg  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from cegppo.integrations import tunix as ct  # noqa: E402
from flax import nnx  # noqa: E402
from grain import python as grain  # noqa: E402
from tunix.rl import common, function_registry  # noqa: E402
from tunix.rl import rl_cluster as rl_cluster_lib  # noqa: E402
from tunix.rl.grpo import grpo_learner  # noqa: E402
from tunix.rl.ppo import ppo_learner  # noqa: E402
from tunix.rl.rollout import base_rollout  # noqa: E402
from tunix.sft import hooks  # noqa: E402
from tunix.tests import test_common as tc  # noqa: E402

PROMPTS = ["input string", "hello world", "My name", "hello there"]  # words of tunix's MockVocab
CE = {"beta_low": 0.5, "beta_high": 1.0}
PPO = {"beta_low": 0.0, "beta_high": 0.0}
COMMON = {"epsilon": 0.2, "epsilon_high": 0.28, "epsilon_c": 3.0}


class Recorder(hooks.TrainingHooks):
    """tunix training hooks: the weights at the start of each step and the loss tunix reports."""

    def __init__(self) -> None:
        self.params: list = []
        self.losses: list[float] = []

    def on_train_step_start(self, train_ctx) -> None:
        self.params.append(jax.tree.map(jnp.copy, nnx.state(train_ctx.model, nnx.Param)))

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        self.losses.append(float(train_loss))

    def on_train_start(self, train_ctx) -> None: ...
    def on_train_end(self, train_ctx) -> None: ...
    def on_eval_step_start(self, train_ctx) -> None: ...
    def on_eval_step_end(self, train_ctx, eval_loss) -> None: ...


class Prompts(grain.RandomAccessDataSource):
    def __getitem__(self, i: int) -> str:
        return PROMPTS[i]

    def __len__(self) -> int:
        return len(PROMPTS)


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def toy_model(vocab) -> nnx.Module:
    return tc.ToyTransformer(config=tc.ModelConfig(vocab_size=vocab.GetPieceSize(), num_layers=1), rngs=nnx.Rngs(0))


@dataclasses.dataclass
class Run:
    model: nnx.Module
    params0: object
    learner: object
    recorder: Recorder
    examples: list
    pad_id: int
    eos_id: int


@pytest.fixture(scope="module")
def run() -> Run:
    with jax.enable_x64(False):  # tunix runs in float32; another test may have switched x64 on
        vocab = tc.MockVocab()
        model = toy_model(vocab)
        params0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))  # the toy model's axes
        roles = (rl_cluster_lib.Role.ACTOR, rl_cluster_lib.Role.REFERENCE, rl_cluster_lib.Role.ROLLOUT)
        cluster = rl_cluster_lib.RLCluster(
            actor=model, reference=None, tokenizer=vocab,
            cluster_config=rl_cluster_lib.ClusterConfig(
                role_to_mesh=dict.fromkeys(roles, mesh), rollout_engine="vanilla", offload_to_cpu=False,
                training_config=rl_cluster_lib.RLTrainingConfig(
                    actor_optimizer=optax.sgd(0.5), eval_every_n_steps=100, max_steps=2),
                rollout_config=base_rollout.RolloutConfig(
                    max_tokens_to_generate=6, max_prompt_length=8, kv_cache_size=64, temperature=1.0),
            ),
        )
        algo = ct.CEGPPOGRPOConfig(num_generations=2, num_iterations=2, beta=0.0, loss_agg_mode="token-mean",
                               **COMMON, **CE)
        learner = ct.CEGPPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=length_reward)
        recorder = Recorder()
        cluster.actor_trainer.with_training_hooks(recorder)
        examples: list = []
        generate = learner._generate_and_compute_advantage

        def recording(*args, **kwargs):  # records the TrainExample tunix built, unchanged
            example = generate(*args, **kwargs)
            examples.append(example)
            return example

        learner._generate_and_compute_advantage = recording
        learner.train(grain.MapDataset.source(Prompts()).batch(2).map(lambda x: {"prompts": x}))
        # RLCluster reshards the actor onto the mesh: the trainer's model is the one that trains
        return Run(cluster.actor_trainer.model, params0, learner, recorder, examples, vocab.pad_id(), vocab.eos_id())


def log_probs(run: Run, params, example) -> jax.Array:
    """Per-token log-probs of the completions, computed here: the model's logits, `cg.token_log_probs`."""
    graphdef, _, rest = nnx.split(run.model, nnx.Param, ...)
    width = example.completion_ids.shape[1]

    @jax.jit
    def compute(params, prompt_ids, completion_ids):
        model = nnx.merge(graphdef, params, rest)
        tokens, positions, attn_mask, _ = common.process_ids(prompt_ids, completion_ids, run.pad_id, run.eos_id)
        logits, _ = model(tokens, positions=positions, attention_mask=attn_mask, cache=None)
        return cg.token_log_probs(logits[:, -width - 1:-1], completion_ids)

    return compute(params, example.prompt_ids, example.completion_ids)


def test_two_real_steps_change_the_weights(run: Run) -> None:
    assert len(run.recorder.losses) == 2 and len(run.recorder.params) == 2
    assert len(run.examples) == 1  # one rollout, two iterations on it
    final = nnx.state(run.model, nnx.Param)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), run.params0, final))
    assert max(moved) > 1e-4, moved
    adv = np.asarray(run.examples[0].advantages)
    assert (adv > 0).any() and (adv < 0).any(), adv  # the reward separated the completions


def test_loss_equals_cegppo_jax_on_the_same_batch(run: Run) -> None:
    example = run.examples[0]
    cfg = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.5, beta_high=1.0, dual_clip=3.0)
    for step, (params, reported) in enumerate(zip(run.recorder.params, run.recorder.losses, strict=True)):
        lp = log_probs(run, params, example)
        want = cg.policy_loss(lp, example.old_per_token_logps, example.advantages, example.completion_mask, cfg)
        np.testing.assert_allclose(reported, float(want), rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
    # the second step's ratios moved: the loss is not -mean(A) any more
    m = np.asarray(example.completion_mask)
    first_epoch = -(np.asarray(example.advantages)[:, None] * m).sum() / m.sum()
    assert abs(run.recorder.losses[1] - first_epoch) > 1e-3, run.recorder.losses


def test_region_metrics_are_logged(run: Run) -> None:
    logger = run.learner.rl_cluster.actor_trainer.metrics_logger
    example = run.examples[0]
    cfg = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.5, beta_high=1.0, dual_clip=3.0)
    lp = log_probs(run, run.recorder.params[1], example)
    want = cg.policy_metrics(lp, example.old_per_token_logps, example.advantages, example.completion_mask, cfg)
    for key in cg.METRIC_KEYS:
        history = np.asarray(logger.get_metric_history("actor", ct.METRIC_PREFIX + key, "train"))
        assert history.shape == (2,), (key, history)
        np.testing.assert_allclose(history[1], float(want[key]), rtol=1e-5, atol=1e-6, err_msg=key)
    assert np.asarray(logger.get_metric_history("actor", "ce_gppo/clip_frac", "train"))[1] > 0  # a token clipped
    np.testing.assert_allclose(logger.get_metric_history("actor", "pg_clipfrac", "train"),
                               logger.get_metric_history("actor", "ce_gppo/clip_frac", "train"))
    assert logger.get_metric_history("actor", "entropy", "train")[0] > 0


def _grads(fn, model, example, config, pad_id, eos_id):
    """d loss / d weights of a tunix-signature loss (eager: faster than compiling each variant here)."""

    def loss(m):
        return fn(m, example, algo_config=config, pad_id=pad_id, eos_id=eos_id)[0]

    return nnx.grad(loss)(model)


def _moved_batch(example, lp):
    """The run's batch with old log-probs moved so that every region occurs, and a ragged mask.

    old = lp + shift, shifts cycling over (+0.5, -0.5, -1.5, 0) along each row: ratios 0.61 (clip_low
    for A < 0), 1.65 (clip_high for A > 0), 4.5 (dual clip, c = 3, for A < 0) and 1 (inside).
    """
    shifts = np.resize(np.array([0.5, -0.5, -1.5, 0.0]), lp.shape[1])
    mask = np.ones(lp.shape, bool)
    mask[0, 5:] = False
    mask[2, 4:] = False
    return example.replace(old_per_token_logps=lp + jnp.asarray(shifts, lp.dtype),
                           completion_mask=jnp.asarray(mask))


def _max_rel_diff(a, b) -> float:
    num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    return num / max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(a))


@pytest.mark.parametrize("batch", ["run", "moved"])
def test_ppo_preset_gradient_equals_tunix_losses(run: Run, batch: str) -> None:
    example = run.examples[0]
    with jax.enable_x64(False):
        model = nnx.merge(*nnx.split(run.model))
        nnx.update(model, run.recorder.params[1])
        lp = log_probs(run, run.recorder.params[1], example)
        if batch == "moved":
            example = _moved_batch(example, lp)
        regions = cegppo.token_regions(*(np.asarray(x, np.float64) for x in (
            lp, example.old_per_token_logps, np.broadcast_to(np.asarray(example.advantages)[:, None], lp.shape))),
            cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, dual_clip=3.0))
        valid = np.asarray(example.completion_mask)
        assert (regions.clip_low | regions.clip_high)[valid].any()
        if batch == "moved":
            assert all(r[valid].any() for r in (regions.clip_low, regions.clip_high, regions.dual_clip))

        grpo_cfg = ct.CEGPPOGRPOConfig(num_generations=2, beta=0.0, loss_agg_mode="token-mean", **COMMON, **PPO)
        grpo_cfg.temperature = 1.0
        ours = _grads(ct.ce_gppo_policy_loss_fn, model, example, grpo_cfg, run.pad_id, run.eos_id)
        tunix_grpo = _grads(function_registry.get_policy_loss_fn("grpo"), model, example, grpo_cfg, run.pad_id,
                            run.eos_id)
        assert _max_rel_diff(tunix_grpo, ours) < 1e-5

        token_adv = jnp.broadcast_to(example.advantages[:, None], lp.shape)  # PPO takes (B, T) advantages (GAE)
        ppo_example = ppo_learner.TrainExample(**{f.name: getattr(example, f.name) for f in dataclasses.fields(
            example)}).replace(advantages=token_adv)
        ppo_cfg = ct.CEGPPOPPOConfig(epsilon=0.2, epsilon_high=0.28, epsilon_c=3.0, **PPO)
        ours = _grads(ct.ce_gppo_policy_loss_fn, model, ppo_example, ppo_cfg, run.pad_id, run.eos_id)
        theirs = _grads(function_registry.get_policy_loss_fn("ppo"), model, ppo_example, ppo_cfg, run.pad_id,
                        run.eos_id)
        assert _max_rel_diff(theirs, ours) < 1e-5

        # CE-GPPO's betas keep the clipped tokens' gradient: not tunix's any more
        ce_cfg = dataclasses.replace(grpo_cfg, **CE)
        ce_cfg.temperature = 1.0
        ce = _grads(ct.ce_gppo_policy_loss_fn, model, example, ce_cfg, run.pad_id, run.eos_id)
        assert _max_rel_diff(tunix_grpo, ce) > 1e-3


def test_kl_term_and_sampler_weights_as_tunix(run: Run) -> None:
    """With the PPO preset, tunix's KL term (beta > 0, reference log-probs) and its truncated importance
    weights give our gradient equal to tunix's grpo loss, under a sequence-level aggregation."""
    with jax.enable_x64(False):
        model = nnx.merge(*nnx.split(run.model))
        nnx.update(model, run.recorder.params[1])
        lp = log_probs(run, run.recorder.params[1], run.examples[0])
        rng = np.random.default_rng(2)
        example = _moved_batch(run.examples[0], lp).replace(
            ref_per_token_logps=lp + jnp.asarray(rng.normal(0.0, 0.3, lp.shape), lp.dtype),
            sampler_is_weights=jnp.asarray(rng.uniform(0.2, 1.5, lp.shape), lp.dtype))
        cfg = ct.CEGPPOGRPOConfig(num_generations=2, beta=0.04, loss_agg_mode="sequence-mean-token-mean", **COMMON, **PPO)
        cfg.temperature = 1.0
        ours = _grads(ct.ce_gppo_policy_loss_fn, model, example, cfg, run.pad_id, run.eos_id)
        theirs = _grads(function_registry.get_policy_loss_fn("grpo"), model, example, cfg, run.pad_id, run.eos_id)
        assert _max_rel_diff(theirs, ours) < 1e-5
        without = _grads(ct.ce_gppo_policy_loss_fn, model, example.replace(sampler_is_weights=None), cfg,
                         run.pad_id, run.eos_id)
        assert _max_rel_diff(theirs, without) > 1e-3  # the weights matter, so the equality above is about them


@pytest.mark.parametrize("mode", sorted(ct.TUNIX_AGG_MODES))
def test_every_tunix_aggregation_maps_to_ours(mode: str) -> None:
    rng = np.random.default_rng(1)
    loss = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
    mask = rng.random((5, 7)) > 0.4
    mask[3] = False  # an empty row
    want = common.aggregate_loss(loss, jnp.asarray(mask), mode)
    got = cg.aggregate_loss(loss, jnp.asarray(mask), ct.TUNIX_AGG_MODES[mode])
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_registered_and_selected_by_name() -> None:
    assert function_registry.get_policy_loss_fn("ce_gppo") is ct.ce_gppo_policy_loss_fn
    config = ct.CEGPPOGRPOConfig(num_generations=2)
    assert config.policy_loss_fn == "ce_gppo" and config.epsilon_high == config.epsilon
    assert ct.cegppo_config_from_tunix(ct.CEGPPOGRPOConfig(num_generations=2, epsilon=0.1, epsilon_high=0.3,
                                                       epsilon_c=10.0, beta_low=0.75)) == cegppo.CEGPPOConfig(
        eps_low=0.1, eps_high=0.3, beta_low=0.75, beta_high=1.0, dual_clip=10.0)
    assert ct.cegppo_config_from_tunix(ct.CEGPPOPPOConfig(epsilon=0.3)).eps_high == 0.3


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: ct.CEGPPOGRPOConfig(num_generations=2, beta_low=-1.0), "beta_low"),
        (lambda: ct.CEGPPOGRPOConfig(num_generations=2, epsilon_c=0.5), "dual_clip"),
        (lambda: ct.CEGPPOPPOConfig(beta_high=-0.1), "beta_high"),
        (lambda: ct.cegppo_config_from_tunix(None), "algo_config"),
    ],
)
def test_bad_values_are_refused(make, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make()


def _call(config) -> None:
    b, t = 2, 3
    example = grpo_learner.TrainExample(
        prompt_ids=jnp.zeros((b, 0), jnp.int32), prompt_mask=jnp.zeros((b, 0), bool),
        completion_ids=jnp.zeros((b, t), jnp.int32), completion_mask=jnp.ones((b, t), bool),
        advantages=jnp.ones((b,)), ref_per_token_logps=None, old_per_token_logps=None)
    ct.ce_gppo_policy_loss_fn(tc.ToyTransformer(config=tc.ModelConfig(vocab_size=8, num_layers=1),
                                                rngs=nnx.Rngs(0)), example, config, pad_id=0, eos_id=1)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (lambda: ct.CEGPPOGRPOConfig(num_generations=2, loss_algo="gspo-token"), "loss_algo='gspo-token'"),
        (lambda: ct.CEGPPOPPOConfig(entropy_coef=0.01), "entropy_coef"),
        (lambda: dataclasses.replace(ct.CEGPPOGRPOConfig(num_generations=2), loss_agg_mode="token-sum"),
         "loss_agg_mode"),
    ],
)
def test_unsupported_options_are_refused(config, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _call(config())


def test_learner_needs_the_ce_gppo_loss(run: Run) -> None:
    cluster = run.learner.rl_cluster
    with pytest.raises(ValueError, match="policy_loss_fn must be 'ce_gppo'"):
        ct.CEGPPOLearner(rl_cluster=cluster, reward_fns=length_reward,
                         algo_config=ct.CEGPPOGRPOConfig(num_generations=2, policy_loss_fn="grpo"))
