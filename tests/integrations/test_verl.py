"""cegppo.integrations.verl against the real verl package (CPU, loss layer only).

- registration: `import cegppo.integrations.verl` and the `verl.plugins` entry point register `ce_gppo`;
- the registered loss equals `cegppo.torch.policy_loss` (value and autograd gradient) for every
  `loss_agg_mode`, with verl's global batch info (dp_size, batch_num_tokens, global_batch_size,
  loss_scale_factor) and rollout-correction weights;
- verl's `vanilla` loss equals ours with the `dual_clip_ppo` preset: gradient equal everywhere,
  value equal up to the constant of spec S6.1 (PPO keeps (1 -/+ eps) A in the clipped regions,
  beta = 0 keeps 0), metrics equal;
- the hyperparameters come from verl's real Hydra config with the documented overrides.
"""

from __future__ import annotations

import os
import subprocess
import sys

import cegppo
import pytest
from framework_helpers import batch, grad_of, ppo_offset
from integration_helpers import need

torch = need("torch")
need("verl")

import cegppo.torch as cg  # noqa: E402
from cegppo.integrations import verl as cv  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

AGG_MODES = cegppo.AGG_MODES
# verl's seq-mean-token-mean divides each row by (n_i + 1e-8) (core_algos.agg_loss), ours by n_i exactly:
# a relative difference of at most 1e-8 / n_i. Every other mode is the same arithmetic.
VERL_SEQ_MEAN_EPS_RTOL = {"seq-mean-token-mean": 1e-7}


def test_import_registers_ce_gppo() -> None:
    assert core_algos.get_policy_loss_fn("ce_gppo") is cv.compute_policy_loss_ce_gppo
    assert cv.LOSS_NAME == "ce_gppo"


def test_verl_plugin_entry_point_registers_on_import_verl() -> None:
    """`import verl` alone (as a Ray worker does) registers ce_gppo through the verl.plugins entry point."""
    code = (
        "import sys, verl\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "assert 'ce_gppo' in POLICY_LOSS_REGISTRY, sorted(POLICY_LOSS_REGISTRY)\n"
        "assert 'cegppo.integrations.verl' in sys.modules\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("preset", ["ce_gppo_1p5b", "ce_gppo_official", "dapo"])
def test_registered_loss_equals_cegppo_torch(agg: str, preset: str) -> None:
    cfg = cegppo.presets.get(preset)
    lp, old, adv, mask = batch(torch, 1)
    config = cv.actor_config(
        eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta_low=cfg.beta_low, beta_high=cfg.beta_high,
        clip_ratio_c=cfg.dual_clip, loss_agg_mode=agg,
    )
    loss, metrics = core_algos.get_policy_loss_fn("ce_gppo")(
        old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode=agg, config=config
    )
    ref = cg.policy_loss(lp, old, adv, mask, cfg, agg)
    torch.testing.assert_close(loss, ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_of(torch, loss, lp), grad_of(torch, ref, lp), rtol=1e-13, atol=0)
    ours = cg.policy_metrics(lp, old, adv, mask, cfg)
    for key, value in ours.items():
        assert metrics[cv.METRIC_PREFIX + key] == pytest.approx(float(value), rel=1e-12, abs=0)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(float(ours["clip_frac"]))
    assert metrics["actor/ppo_kl"] == pytest.approx(float(ours["approx_kl_k1"]))
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(float(ours["dual_clip_frac"]))
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("agg", AGG_MODES)
def test_global_batch_info_and_micro_batches(agg: str) -> None:
    """verl's global normalisers and dp_size factor: micro-batch losses sum to dp_size x the full-batch loss."""
    cfg = cegppo.presets.ce_gppo_7b(dual_clip=10.0)
    lp, old, adv, mask = batch(torch, 2, b=8)
    num_tokens, num_seqs = (int(x) for x in cegppo.local_counts(mask.numpy()))
    dp_size = 4
    info = {"dp_size": dp_size, "batch_num_tokens": num_tokens, "global_batch_size": num_seqs,
            "loss_scale_factor": 16}
    config = cv.actor_config(beta_low=0.75, clip_ratio_c=10.0, loss_agg_mode=agg, global_batch_info=info)
    fn = core_algos.get_policy_loss_fn("ce_gppo")
    parts = [
        fn(old_log_prob=old[s], log_prob=lp[s], advantages=adv[s], response_mask=mask[s], loss_agg_mode=agg,
           config=config)[0]
        for s in (slice(0, 3), slice(3, 8))
    ]
    total = parts[0] + parts[1]
    full = cg.policy_loss(lp, old, adv, mask, cfg, agg, num_tokens, num_seqs, norm_length=16) * dp_size
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad_of(torch, total, lp), grad_of(torch, full, lp), rtol=1e-12, atol=1e-15)


def test_dp_without_global_count_is_refused() -> None:
    lp, old, adv, mask = batch(torch, 3)
    config = cv.actor_config(global_batch_info={"dp_size": 2})
    with pytest.raises(ValueError, match="batch_num_tokens"):
        cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", config)
    with pytest.raises(ValueError, match="config"):
        cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", None)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", [4, 5])
def test_verl_vanilla_equals_dual_clip_ppo(agg: str, seed: int) -> None:
    """verl's vanilla loss = ours with presets.dual_clip_ppo: same gradient, value up to the S6.1 constant."""
    cfg = cegppo.presets.dual_clip_ppo()
    lp, old, adv, mask = batch(torch, seed, spread=1.6)  # ratios up to e^1.6 ~ 5 > c = 3: dual clip is hit
    config = cv.actor_config(beta_low=0.0, beta_high=0.0, clip_ratio_c=3.0, loss_agg_mode=agg, loss_mode="vanilla")
    vanilla, vmetrics = core_algos.compute_policy_loss_vanilla(
        old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode=agg, config=config
    )
    ours, ometrics = cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, agg, config)
    regions = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cfg)
    assert regions.clip_low[mask.numpy()].any() and regions.clip_high[mask.numpy()].any()
    assert regions.dual_clip[mask.numpy()].any()
    rtol = VERL_SEQ_MEAN_EPS_RTOL.get(agg, 1e-12)
    torch.testing.assert_close(grad_of(torch, vanilla, lp), grad_of(torch, ours, lp), rtol=rtol, atol=1e-15)
    offset = ppo_offset(lp, old, adv, mask, cfg, agg)
    assert offset != 0.0  # the constant is really there: the two values are NOT equal
    assert vanilla.item() == pytest.approx(ours.item() + offset, rel=rtol, abs=1e-14)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert ometrics[key] == pytest.approx(vmetrics[key], rel=1e-6), key


def test_verl_vanilla_value_equal_without_clipped_tokens() -> None:
    """Where verl is plain PPO (no token clipped; dual-clip tokens allowed) the values agree exactly."""
    cfg = cegppo.presets.dual_clip_ppo()
    lp, old, adv, mask = batch(torch, 6, spread=0.15)  # |logr| < log(1.2): nothing clipped
    lp.data[3, :] = old[3, :] + 1.5  # ratio e^1.5 > c: dual clip for A < 0, clip_high for A > 0
    adv[3, :] = -adv[3, :].abs() - 0.1
    config = cv.actor_config(beta_low=0.0, beta_high=0.0, clip_ratio_c=3.0)
    vanilla, _ = core_algos.compute_policy_loss_vanilla(old, lp, adv, mask, "token-mean", config)
    ours, _ = cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", config)
    r = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cfg)
    assert not (r.clip_low | r.clip_high)[mask.numpy()].any() and r.dual_clip[mask.numpy()].any()
    torch.testing.assert_close(vanilla, ours, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_of(torch, vanilla, lp), grad_of(torch, ours, lp), rtol=1e-13, atol=0)


def test_rollout_is_weights_scale_token_losses_like_verl() -> None:
    """verl multiplies each token loss by its rollout-correction weight; so do we (as weight x advantage)."""
    lp, old, adv, mask = batch(torch, 7, spread=1.6)
    w = torch.rand(adv.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    w[0, 0] = 0.0
    config = cv.actor_config(beta_low=0.0, beta_high=0.0, clip_ratio_c=3.0)
    vanilla, _ = core_algos.compute_policy_loss_vanilla(old, lp, adv, mask, "token-mean", config, w)
    ours, _ = cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", config, w)
    torch.testing.assert_close(grad_of(torch, vanilla, lp), grad_of(torch, ours, lp), rtol=1e-12, atol=1e-15)
    ce = cegppo.presets.ce_gppo_official()
    config = cv.actor_config(beta_low=ce.beta_low, beta_high=ce.beta_high, clip_ratio_c=ce.dual_clip)
    ours, _ = cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", config, w)
    # Reference: the weighted per-token objective, aggregated (sum_t c_t w_t (-J_t)).
    per_token = -cg.per_token_objective(lp, old, adv, ce) * w
    ref = cg.aggregate_loss(per_token, mask, "token-mean")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad_of(torch, ours, lp), grad_of(torch, ref, lp), rtol=1e-12, atol=1e-15)


def test_masked_garbage_is_inert() -> None:
    cfg = cegppo.presets.ce_gppo_official()
    lp, old, adv, mask = batch(torch, 8)
    config = cv.actor_config(beta_low=cfg.beta_low, beta_high=cfg.beta_high, clip_ratio_c=cfg.dual_clip)
    clean, _ = cv.compute_policy_loss_ce_gppo(old, lp, adv, mask, "token-mean", config)
    g_clean = grad_of(torch, clean, lp)
    dirty_lp = torch.where(mask, lp, torch.tensor(float("nan"), dtype=lp.dtype))
    dirty_old = torch.where(mask, old, torch.tensor(float("inf"), dtype=lp.dtype))
    dirty, _ = cv.compute_policy_loss_ce_gppo(dirty_old, dirty_lp, adv, mask, "token-mean", config)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    torch.testing.assert_close(grad_of(torch, dirty, lp), g_clean, rtol=0, atol=0)


def test_hyperparameters_from_verl_hydra_config() -> None:
    """The documented command-line overrides, composed with verl's own ppo_trainer.yaml, reach the loss."""
    hydra = need("hydra")
    import verl
    from verl.utils.config import omega_conf_to_dataclass

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    overrides = [
        "actor_rollout_ref.actor.policy_loss._target_=cegppo.integrations.verl.CEGPPOPolicyLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=ce_gppo",
        "+actor_rollout_ref.actor.policy_loss.beta_low=0.75",
        "+actor_rollout_ref.actor.policy_loss.beta_high=1.0",
        "actor_rollout_ref.actor.clip_ratio_low=0.2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.clip_ratio_c=10.0",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    ]
    with hydra.initialize_config_dir(config_dir=config_dir, version_base=None):
        composed = hydra.compose(config_name="ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(composed.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, cv.CEGPPOPolicyLossConfig)
    assert actor.policy_loss.get("loss_mode") == "ce_gppo"
    want = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.75, beta_high=1.0, dual_clip=10.0)
    assert cv.cegppo_config_from_verl(actor) == want
    # The DictConfig (before conversion) reads the same.
    assert cv.cegppo_config_from_verl(composed.actor_rollout_ref.actor) == want
    # verl's stock PolicyLossConfig (no betas): the paper's defaults, eps from clip_ratio.
    from verl.workers.config import PolicyLossConfig

    stock = cv.actor_config()
    object.__setattr__(stock, "policy_loss", PolicyLossConfig(loss_mode="ce_gppo"))  # verl configs are frozen
    got = cv.cegppo_config_from_verl(stock)
    assert (got.beta_low, got.beta_high, got.dual_clip) == (0.5, 1.0, 3.0)


def test_use_dual_clip_false_and_bad_values() -> None:
    config = cv.actor_config(clip_ratio_c=None)
    assert cv.cegppo_config_from_verl(config).dual_clip is None
    with pytest.raises(ValueError, match="beta_low"):
        cv.cegppo_config_from_verl(cv.actor_config(beta_low=-1.0))
    with pytest.raises(ValueError, match="eps_low"):
        cv.cegppo_config_from_verl(cv.actor_config(eps_low=1.5))


def test_verl_port_matches_token_mean() -> None:
    port = cv.verl_port("ce_gppo")
    cfg = cegppo.presets.ce_gppo_official()
    lp, old, adv, mask = batch(torch, 9)
    got = port(lp, old, adv, mask, eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta_low=cfg.beta_low,
               beta_high=cfg.beta_high, clip_ratio_c=cfg.dual_clip)
    torch.testing.assert_close(got, cg.policy_loss(lp, old, adv, mask, cfg), rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="no_such_loss"):
        cv.verl_port("no_such_loss")
