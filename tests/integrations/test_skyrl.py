"""cegppo.integrations.skyrl against the real skyrl package (0.3.0; CPU, loss layer only).

- registration: importing the module registers ``ce_gppo`` in SkyRL's ``PolicyLossRegistry``
  (idempotently), and SkyRL's own ``validate_cfg`` accepts a config selecting it; the documented
  command-line overrides (``trainer.override_entrypoint=...``, the betas) parse into
  `CEGPPOSkyRLTrainConfig`;
- through a local Ray cluster, SkyRL's ``sync_registries`` hands ``ce_gppo`` to a Ray worker,
  which gets it from the registry and computes the same loss (the way SkyRL's workers get it);
- the registered loss, fed advantages scaled by SkyRL's own ``loss_reduction``
  (``apply_loss_reduction_to_advantages_minibatch``), equals `cegppo.torch.policy_loss` with the
  matching aggregation (value and gradient);
- under the PPO preset (beta 0/0) its gradient equals SkyRL's ``regular`` / ``dual_clip`` loss,
  also with SkyRL's off-policy (TIS) correction; the value differs by the constant of spec S6.1;
  ``clip_ratio`` equals SkyRL's.
"""

import os
import subprocess
import sys

import cegppo
import pytest
from framework_helpers import batch, grad_of, need_framework, ppo_offset

torch = need_framework("torch", "skyrl")
need_framework("skyrl", "skyrl")

import cegppo.torch as cg  # noqa: E402
from cegppo.integrations import skyrl as cs  # noqa: E402
from skyrl.backends.skyrl_train.utils import ppo_utils  # noqa: E402  (the real module, through cegppo's loader)
from skyrl.train.config import AlgorithmConfig, OffPolicyCorrectionConfig  # noqa: E402

# SkyRL's loss_reduction -> (our aggregation mode, the normalisers that make them the same arithmetic).
REDUCTIONS = {
    "token_mean": ("token-mean", {}),
    "sequence_mean": ("seq-mean-token-mean", {"num_seqs": "B"}),  # SkyRL counts every row, empty ones too
    "seq_mean_token_sum_norm": ("seq-mean-token-sum-norm", {"num_seqs": "B", "norm_length": "T"}),
}


# SkyRL's PPO losses exponentiate the log-ratio in float32 (`safe_exp_delta` casts to float32 before exp),
# even for float64 inputs: their ratio, value and gradient carry float32 rounding (relative ~1e-7).
SKYRL_FP32_RTOL = 1e-6


def skyrl_scaled(adv, mask, reduction: str):
    """Advantages as SkyRL's trainer scales them for `reduction` before calling the policy loss."""
    b, t = adv.shape
    return ppo_utils.apply_loss_reduction_to_advantages_minibatch(adv, mask.to(adv.dtype), reduction, b, t)


def norms(spec: dict, mask) -> dict:
    b, t = mask.shape
    return {k: {"B": b, "T": t}[v] for k, v in spec.items()}


def test_import_registers_ce_gppo() -> None:
    assert ppo_utils.PolicyLossRegistry.get("ce_gppo") is cs.compute_policy_loss_ce_gppo
    assert "ce_gppo" in ppo_utils.PolicyLossRegistry.list_available()
    cs._register()  # a second import (a Ray worker's) is a no-op
    ppo_utils.PolicyLossRegistry.unregister("ce_gppo")
    try:
        ppo_utils.PolicyLossRegistry.register("ce_gppo", ppo_utils.ppo_policy_loss)
        with pytest.raises(ValueError, match="already has a policy loss named 'ce_gppo'"):
            cs._register()
    finally:
        ppo_utils.PolicyLossRegistry.unregister("ce_gppo")
        cs._register()
    assert ppo_utils.PolicyLossRegistry.get("ce_gppo") is cs.compute_policy_loss_ce_gppo


def test_command_line_config_and_skyrl_validation() -> None:
    """The documented overrides parse into CEGPPOSkyRLTrainConfig, and SkyRL's validate_cfg accepts ce_gppo."""
    from skyrl.train.utils.utils import validate_cfg

    argv = [
        "trainer.override_entrypoint=cegppo.integrations.skyrl",
        "trainer.algorithm.policy_loss_type=ce_gppo",
        "trainer.algorithm.beta_low=0.75",
        "trainer.algorithm.beta_high=1.0",
        "trainer.algorithm.eps_clip_high=0.28",
        "trainer.algorithm.clip_ratio_c=10.0",
        "trainer.logger=console",
    ]
    cfg = cs.build_config(argv)
    assert isinstance(cfg, cs.CEGPPOSkyRLTrainConfig)
    assert isinstance(cfg.trainer.algorithm, cs.CEGPPOAlgorithmConfig)
    want = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.75, beta_high=1.0, dual_clip=10.0)
    assert cs.cegppo_config_from_skyrl(cfg.trainer.algorithm) == want
    validate_cfg(cfg)  # SkyRL's check: policy_loss_type is in its registry (raises otherwise)
    bad = cs.build_config([*argv[:-1], "trainer.algorithm.policy_loss_type=no_such_loss", "trainer.logger=console"])
    with pytest.raises(AssertionError, match="invalid policy_loss_type"):
        validate_cfg(bad)
    # SkyRL's stock AlgorithmConfig (no betas): the paper's defaults, dual clip with SkyRL's c = 3.
    got = cs.cegppo_config_from_skyrl(AlgorithmConfig(policy_loss_type="ce_gppo"))
    assert (got.beta_low, got.beta_high, got.dual_clip) == (0.5, 1.0, 3.0)


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("preset", ["ce_gppo_1p5b", "ce_gppo_official", "dapo"])
def test_registered_loss_with_skyrl_reduction_equals_cegppo_torch(reduction: str, preset: str) -> None:
    cfg = cegppo.presets.get(preset)
    agg, spec = REDUCTIONS[reduction]
    lp, old, adv, mask = batch(torch, 1)
    config = cs.algorithm_config(eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta_low=cfg.beta_low,
                                 beta_high=cfg.beta_high, clip_ratio_c=cfg.dual_clip)
    fn = ppo_utils.PolicyLossRegistry.get("ce_gppo")
    loss, metrics = fn(lp, old, skyrl_scaled(adv, mask, reduction), config=config, loss_mask=mask.to(lp.dtype))
    ref = cg.policy_loss(lp, old, adv, mask, cfg, agg, **norms(spec, mask))
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad_of(torch, loss, lp), grad_of(torch, ref, lp), rtol=1e-12, atol=1e-15)
    ours = cg.policy_metrics(lp, old, adv, mask, cfg)
    for key, value in ours.items():
        assert metrics[cs.METRIC_PREFIX + key] == pytest.approx(float(value), rel=1e-12, abs=0)
    assert metrics["clip_ratio"] == pytest.approx(float(ours["clip_frac"]))
    assert all(isinstance(v, float) for v in metrics.values())


def _skyrl_ppo(lp, old, adv, mask, *, dual_clip: float | None, rollout=None, opc=None):
    loss_type = "regular" if dual_clip is None else "dual_clip"
    config = AlgorithmConfig(policy_loss_type=loss_type, eps_clip_low=0.2, eps_clip_high=0.28,
                             clip_ratio_c=3.0 if dual_clip is None else dual_clip,
                             off_policy_correction=opc or OffPolicyCorrectionConfig())
    return ppo_utils.PolicyLossRegistry.get(loss_type)(lp, old, adv, config=config, loss_mask=mask.to(lp.dtype),
                                                       rollout_logprobs=rollout)


@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("seed", [4, 5])
def test_ppo_preset_gradient_equals_skyrl_ppo(dual_clip, seed: int) -> None:
    """beta 0/0: SkyRL's regular/dual_clip loss and ours have the same gradient; value differs by S6.1's constant."""
    cfg = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.0, beta_high=0.0, dual_clip=dual_clip)
    lp, old, adv, mask = batch(torch, seed, spread=1.6)
    scaled = skyrl_scaled(adv, mask, "token_mean")
    theirs, tmetrics = _skyrl_ppo(lp, old, scaled, mask, dual_clip=dual_clip)
    config = cs.algorithm_config(eps_low=0.2, eps_high=0.28, beta_low=0.0, beta_high=0.0, clip_ratio_c=dual_clip)
    ours, ometrics = cs.compute_policy_loss_ce_gppo(lp, old, scaled, config, loss_mask=mask.to(lp.dtype))
    r = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cfg)
    m = mask.numpy()
    assert r.clip_low[m].any() and r.clip_high[m].any() and (dual_clip is None or r.dual_clip[m].any())
    torch.testing.assert_close(grad_of(torch, ours, lp), grad_of(torch, theirs, lp), rtol=SKYRL_FP32_RTOL, atol=1e-12)
    offset = ppo_offset(lp, old, scaled, mask, cfg, "token-sum")
    assert offset != 0.0
    assert theirs.item() == pytest.approx(ours.item() + offset, rel=SKYRL_FP32_RTOL, abs=1e-12)
    assert ometrics["clip_ratio"] == pytest.approx(tmetrics["clip_ratio"], rel=1e-6)


def test_off_policy_correction_like_skyrl() -> None:
    """SkyRL's token TIS ratio and outlier mask, applied as SkyRL's regular loss applies them (beta 0: same gradient)."""
    lp, old, adv, mask = batch(torch, 6, spread=1.6)
    g = torch.Generator().manual_seed(3)
    rollout = old + (torch.rand(old.shape, generator=g, dtype=old.dtype) - 0.5) * 1.5
    opc = OffPolicyCorrectionConfig(tis_ratio_type="token", token_tis_ratio_clip_high=1.5,
                                    outlier_token_is_threshold_high=1.8)
    scaled = skyrl_scaled(adv, mask, "token_mean")
    theirs, tmetrics = _skyrl_ppo(lp, old, scaled, mask, dual_clip=3.0, rollout=rollout, opc=opc)
    config = cs.algorithm_config(eps_low=0.2, eps_high=0.28, beta_low=0.0, beta_high=0.0, clip_ratio_c=3.0)
    config.off_policy_correction = opc
    ours, ometrics = cs.compute_policy_loss_ce_gppo(lp, old, scaled, config, loss_mask=mask.to(lp.dtype),
                                                    rollout_logprobs=rollout)
    g_theirs, g_ours = grad_of(torch, theirs, lp), grad_of(torch, ours, lp)
    torch.testing.assert_close(g_ours, g_theirs, rtol=SKYRL_FP32_RTOL, atol=1e-12)
    plain, _ = cs.compute_policy_loss_ce_gppo(lp, old, scaled, config, loss_mask=mask.to(lp.dtype))
    assert not torch.allclose(grad_of(torch, plain, lp), g_ours)  # the correction really changed something
    for key, value in tmetrics.items():
        if key != "clip_ratio":
            assert ometrics[key] == pytest.approx(value), key


def test_ce_gppo_differs_from_skyrl_ppo_where_beta_is_not_zero() -> None:
    lp, old, adv, mask = batch(torch, 7, spread=1.6)
    scaled = skyrl_scaled(adv, mask, "token_mean")
    theirs, _ = _skyrl_ppo(lp, old, scaled, mask, dual_clip=None)
    ours, _ = cs.compute_policy_loss_ce_gppo(lp, old, scaled, cs.algorithm_config(clip_ratio_c=None),
                                             loss_mask=mask.to(lp.dtype))
    g_theirs, g_ours = grad_of(torch, theirs, lp), grad_of(torch, ours, lp)
    r = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cegppo.CEGPPOConfig())
    clipped = torch.as_tensor((r.clip_low | r.clip_high) & mask.numpy())
    assert clipped.any()
    assert torch.all(g_theirs[clipped] == 0) and torch.all(g_ours[clipped] != 0)


def test_loss_mask_weights_and_none() -> None:
    """SkyRL sums loss x loss_mask: a weighted mask weights the tokens; None means every token."""
    lp, old, adv, mask = batch(torch, 8)
    config = cs.algorithm_config()
    cfg = cs.cegppo_config_from_skyrl(config)
    w = mask.to(lp.dtype) * torch.linspace(0.5, 2.0, mask.shape[1], dtype=lp.dtype)
    loss, _ = cs.compute_policy_loss_ce_gppo(lp, old, adv, config, loss_mask=w)
    ref = (-cg.per_token_objective(lp, old, adv, cfg) * w)[mask].sum()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-15)
    full, _ = cs.compute_policy_loss_ce_gppo(lp, old, adv, config)
    ref_full = cg.policy_loss(lp, old, adv, torch.ones_like(mask), cfg, "token-sum")
    torch.testing.assert_close(full, ref_full, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="config"):
        cs.compute_policy_loss_ce_gppo(lp, old, adv, None, loss_mask=w)
    with pytest.raises(ValueError, match="beta_low"):
        cs.cegppo_config_from_skyrl(cs.algorithm_config(beta_low=-1.0))


def test_skyrl_port_matches_token_mean() -> None:
    cfg = cegppo.presets.ce_gppo_official()
    lp, old, adv, mask = batch(torch, 9)
    kw = {"eps_low": cfg.eps_low, "eps_high": cfg.eps_high, "beta_low": cfg.beta_low, "beta_high": cfg.beta_high,
          "clip_ratio_c": cfg.dual_clip}
    got = cs.skyrl_port("ce_gppo")(lp, old, adv, mask, **kw)
    torch.testing.assert_close(got, cg.policy_loss(lp, old, adv, mask, cfg), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="no_such_loss"):
        cs.skyrl_port("no_such_loss")


RAY_WORKER = r"""
import ray, torch
import cegppo.integrations.skyrl as cs  # the driver registers ce_gppo, as cs.main does before initialize_ray
from skyrl.backends.skyrl_train.utils.ppo_utils import sync_registries

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
sync_registries()  # what SkyRL's initialize_ray does after ray.init

@ray.remote
def worker_loss(lp, old, adv, mask):
    from skyrl.backends.skyrl_train.utils.ppo_utils import PolicyLossRegistry  # a worker's lookup, by name
    fn = PolicyLossRegistry.get("ce_gppo")
    return fn.__module__, fn(lp, old, adv, config=cs.algorithm_config(beta_low=0.75), loss_mask=mask)[0].item()

g = torch.Generator().manual_seed(0)
old = -torch.rand(3, 5, generator=g, dtype=torch.float64) - 0.1
lp = old + (torch.rand(3, 5, generator=g, dtype=torch.float64) - 0.5) * 2
adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
mask = torch.ones(3, 5, dtype=torch.float64)
module, value = ray.get(worker_loss.remote(lp, old, adv, mask))
local = cs.compute_policy_loss_ce_gppo(lp, old, adv, cs.algorithm_config(beta_low=0.75), loss_mask=mask)[0].item()
assert module == "cegppo.integrations.skyrl", module
assert value == local, (value, local)
print("RAY_OK", value)
ray.shutdown()
"""


def test_ray_worker_gets_ce_gppo_from_skyrl_registry(tmp_path) -> None:
    """The registration reaches a Ray worker through SkyRL's registry actor (a fresh interpreter, a local cluster)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run([sys.executable, "-c", RAY_WORKER], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0 and "RAY_OK" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
