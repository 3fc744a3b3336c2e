"""cegppo.integrations.openrlhf against the real openrlhf package (0.11.2; CPU, loss layer only).

- the drop-in: `CEGPPOPolicyLoss` subclasses OpenRLHF's ``PolicyLoss`` and takes every argument of its
  constructor and call with OpenRLHF's defaults; built and called exactly as OpenRLHF's actor does
  in ``openrlhf/trainer/ray/ppo_actor.py`` (read from the installed package), with the batch
  info of OpenRLHF's own ``get_loss_batch_info``; the documented one-line swaps run;
- its loss equals `cegppo.torch.policy_loss` (value and gradient) for both of OpenRLHF's
  aggregations, with and without global normalisers and dp_size;
- under the PPO preset (beta 0/0) its gradient equals OpenRLHF's own ``PolicyLoss`` (with and
  without dual clip), its value differs by the constant of spec S6.1, and its metrics equal
  OpenRLHF's ``clip_ratio`` and ``ppo_kl``;
- OpenRLHF's train/rollout importance-sampling correction (every level, gating and mode): with
  beta 0 the gradient, with beta 1 the value (spec S6.2) equal OpenRLHF's, and ``vllm_kl`` and
  ``is_filter_ratio`` are OpenRLHF's;
- what it refuses: GSPO, out-of-range hyperparameters.
"""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import cegppo
import pytest
from framework_helpers import batch, grad_of, need_framework, ppo_offset

torch = need_framework("torch", "openrlhf")
openrlhf = need_framework("openrlhf", "openrlhf")

import cegppo.torch as cg  # noqa: E402
from cegppo.integrations import openrlhf as co  # noqa: E402
from cegppo.integrations._loading import import_loss_module  # noqa: E402
from openrlhf.models.loss import PolicyLoss  # noqa: E402  (the real class, through cegppo's loader)

# OpenRLHF's own batch info (dp_size, batch_num_tokens, global_batch_size); `openrlhf.utils` imports its
# strategy and math grading stacks on import, so its loss_utils module is loaded the same way.
get_loss_batch_info = import_loss_module("openrlhf.utils.loss_utils", ("openrlhf.utils",)).get_loss_batch_info

# OpenRLHF's seq-mean divides each row by (n_i + 1e-8), ours by n_i exactly: relative difference <= 1e-8 / n_i.
RTOL = {True: 1e-12, False: 1e-7}
PPO_ACTOR = Path(os.path.dirname(openrlhf.__file__)) / "trainer" / "ray" / "ppo_actor.py"
OPENRLHF_IMPORT = "from openrlhf.models import Actor, PolicyLoss, aggregate_loss"
SWAP = "from cegppo.integrations.openrlhf import CEGPPOPolicyLoss as PolicyLoss"
SWAP_WITH_BETAS = "from cegppo.integrations.openrlhf import CEGPPOPolicyLoss; PolicyLoss = CEGPPOPolicyLoss.with_betas(0.75, 1.0)"


def test_is_the_real_policy_loss() -> None:
    assert PolicyLoss is co.PolicyLoss
    assert PolicyLoss.__module__ == "openrlhf.models.loss"
    assert inspect.getsourcefile(PolicyLoss).startswith(os.path.dirname(openrlhf.__file__))
    assert issubclass(co.CEGPPOPolicyLoss, PolicyLoss)


def test_same_signature_as_policy_loss() -> None:
    """Every parameter of OpenRLHF's constructor and forward, in order, with its default."""
    for method in ("__init__", "forward"):
        theirs = inspect.signature(getattr(PolicyLoss, method)).parameters
        ours = inspect.signature(getattr(co.CEGPPOPolicyLoss, method)).parameters
        assert list(ours)[: len(theirs)] == list(theirs), method
        for name, p in theirs.items():
            assert ours[name].default == p.default, (method, name)
            assert ours[name].kind == p.kind, (method, name)


def _call_site() -> tuple[list[str], int, list[str]]:
    """From OpenRLHF's ppo_actor.py: the keywords of ``PolicyLoss(...)`` and the shape of ``actor_loss_fn(...)``."""
    tree = ast.parse(PPO_ACTOR.read_text(encoding="utf-8"))
    ctor = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "PolicyLoss"]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "actor_loss_fn"]
    assert len(ctor) == 1 and len(calls) == 1, "OpenRLHF's ppo_actor.py changed: revisit the integration"
    kwargs = [k.arg for k in calls[0].keywords if k.arg is not None]
    has_star = any(k.arg is None for k in calls[0].keywords)
    assert has_star, "OpenRLHF no longer passes **loss_batch_info"
    return [k.arg for k in ctor[0].keywords], len(calls[0].args), kwargs


def test_openrlhf_call_site_and_one_line_swap() -> None:
    """Built with the keywords OpenRLHF's actor passes and called as it calls its loss: the drop-in fits."""
    source = PPO_ACTOR.read_text(encoding="utf-8")
    assert OPENRLHF_IMPORT in source  # the line the documented swap follows
    ctor_kwargs, n_positional, call_kwargs = _call_site()
    assert set(ctor_kwargs) <= set(inspect.signature(co.CEGPPOPolicyLoss).parameters)
    assert n_positional == 3 and set(call_kwargs) == {"action_mask", "rollout_log_probs"}

    # OpenRLHF's CLI defaults for what the actor reads (train_ppo_ray.py), dual clip set as in the paper's runs.
    values = {
        "clip_eps_low": 0.2, "clip_eps_high": 0.28, "dual_clip": 10.0, "token_level_loss": True,
        "policy_loss_type": "ppo", "is_correction_level": "off", "is_correction_mode": "mask",
        "is_correction_gating": "ratio", "is_correction_threshold": [0.5, 5.0],
    }
    namespace: dict = {}
    exec(SWAP, namespace)  # the documented line, as it stands in ppo_actor.py after the swap
    loss_fn = namespace["PolicyLoss"](**{k: values[k] for k in ctor_kwargs})
    lp, old, adv, mask = batch(torch, 1)
    loss_batch_info = get_loss_batch_info(None, mask)  # OpenRLHF's own: dp_size, batch_num_tokens, global_batch_size
    actor_loss, clip_ratio, ppo_kl, vllm_kl, is_filter_ratio = loss_fn(
        lp, old, adv, action_mask=mask, rollout_log_probs=None, **loss_batch_info
    )
    cfg = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.5, beta_high=1.0, dual_clip=10.0)
    torch.testing.assert_close(actor_loss, cg.policy_loss(lp, old, adv, mask, cfg), rtol=1e-12, atol=0)
    assert vllm_kl is None and is_filter_ratio is None
    assert clip_ratio.dim() == 0 and ppo_kl.dim() == 0

    exec(SWAP_WITH_BETAS, namespace)
    swapped = namespace["PolicyLoss"](**{k: values[k] for k in ctor_kwargs})
    assert isinstance(swapped, PolicyLoss)
    assert (swapped.cegppo_config.beta_low, swapped.cegppo_config.beta_high) == (0.75, 1.0)


@pytest.mark.parametrize("token_level_loss", [True, False])
@pytest.mark.parametrize("preset", ["ce_gppo_1p5b", "ce_gppo_official", "dapo"])
@pytest.mark.parametrize("global_info", [False, True])
def test_loss_equals_cegppo_torch(token_level_loss: bool, preset: str, global_info: bool) -> None:
    cfg = cegppo.presets.get(preset)
    agg = co.AGG_OF_TOKEN_LEVEL[token_level_loss]
    lp, old, adv, mask = batch(torch, 2)
    loss_fn = co.CEGPPOPolicyLoss(cfg.eps_low, cfg.eps_high, cfg.dual_clip, token_level_loss,
                                  beta_low=cfg.beta_low, beta_high=cfg.beta_high)
    if global_info:  # a 4-rank run whose global batch has 3x this micro-batch's tokens and sequences
        n_tok, n_seq = (int(x) for x in cegppo.local_counts(mask.numpy()))
        info = {"dp_size": 4, "batch_num_tokens": torch.tensor(3.0 * n_tok), "global_batch_size": torch.tensor(3.0 * n_seq)}
        ref = 4 * cg.policy_loss(lp, old, adv, mask, cfg, agg, num_tokens=3 * n_tok, num_seqs=3 * n_seq)
    else:
        info = {}
        ref = cg.policy_loss(lp, old, adv, mask, cfg, agg)
    loss, clip_ratio, ppo_kl, _, _ = loss_fn(lp, old, adv, action_mask=mask, **info)
    torch.testing.assert_close(loss, ref, rtol=RTOL[token_level_loss], atol=0)
    torch.testing.assert_close(grad_of(torch, loss, lp), grad_of(torch, ref, lp), rtol=RTOL[token_level_loss], atol=0)
    metrics = cg.policy_metrics(lp, old, adv, mask, cfg)
    assert set(loss_fn.last_metrics) == set(cegppo.METRIC_KEYS)
    torch.testing.assert_close(clip_ratio, metrics["clip_frac"])
    torch.testing.assert_close(ppo_kl, metrics["approx_kl_k1"])


@pytest.mark.parametrize("token_level_loss", [True, False])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("seed", [4, 5])
def test_ppo_preset_gradient_equals_openrlhf_policy_loss(token_level_loss: bool, dual_clip, seed: int) -> None:
    """beta 0/0: OpenRLHF's PolicyLoss and ours have the same gradient; the value differs by S6.1's constant."""
    cfg = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.0, beta_high=0.0, dual_clip=dual_clip)
    agg = co.AGG_OF_TOKEN_LEVEL[token_level_loss]
    lp, old, adv, mask = batch(torch, seed, spread=1.6)  # ratios up to e^1.6 ~ 5 > c = 3: dual clip is hit
    info = get_loss_batch_info(None, mask)
    theirs = PolicyLoss(0.2, 0.28, dual_clip, token_level_loss)(lp, old, adv, action_mask=mask, **info)
    ours = co.CEGPPOPolicyLoss(0.2, 0.28, dual_clip, token_level_loss, beta_low=0.0, beta_high=0.0)(
        lp, old, adv, action_mask=mask, **info
    )
    regions = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cfg)
    m = mask.numpy()
    assert regions.clip_low[m].any() and regions.clip_high[m].any()
    assert dual_clip is None or regions.dual_clip[m].any()
    rtol = RTOL[token_level_loss]
    torch.testing.assert_close(grad_of(torch, ours[0], lp), grad_of(torch, theirs[0], lp), rtol=rtol, atol=1e-15)
    norm = {"num_tokens": float(info["batch_num_tokens"]), "num_seqs": float(info["global_batch_size"])}
    offset = ppo_offset(lp, old, adv, mask, cfg, agg, **norm)
    assert offset != 0.0  # the constant is really there: the two values are NOT equal
    assert theirs[0].item() == pytest.approx(ours[0].item() + offset, rel=rtol, abs=1e-14)
    torch.testing.assert_close(ours[1], theirs[1].to(ours[1].dtype))  # clip_ratio
    torch.testing.assert_close(ours[2], theirs[2].to(ours[2].dtype))  # ppo_kl


def test_ce_gppo_differs_from_openrlhf_where_beta_is_not_zero() -> None:
    """With the paper's betas the gradient of clipped tokens is kept: not OpenRLHF's PPO gradient."""
    lp, old, adv, mask = batch(torch, 6, spread=1.6)
    theirs = PolicyLoss(0.2, 0.2)(lp, old, adv, action_mask=mask)[0]
    ours = co.CEGPPOPolicyLoss(0.2, 0.2)(lp, old, adv, action_mask=mask)[0]
    g_theirs, g_ours = grad_of(torch, theirs, lp), grad_of(torch, ours, lp)
    r = cegppo.token_regions(lp.detach().numpy(), old.numpy(), adv.numpy(), cegppo.CEGPPOConfig())
    clipped = torch.as_tensor((r.clip_low | r.clip_high) & mask.numpy())
    assert clipped.any()
    assert torch.all(g_theirs[clipped] == 0) and torch.all(g_ours[clipped] != 0)
    torch.testing.assert_close(g_ours[~clipped], g_theirs[~clipped], rtol=1e-12, atol=1e-15)


def test_float_and_missing_masks() -> None:
    lp, old, adv, mask = batch(torch, 7)
    loss_fn = co.CEGPPOPolicyLoss()
    ref = loss_fn(lp, old, adv, action_mask=mask)[0]
    torch.testing.assert_close(loss_fn(lp, old, adv, action_mask=mask.float())[0], ref, rtol=0, atol=0)
    full = torch.ones_like(mask)
    torch.testing.assert_close(loss_fn(lp, old, adv)[0], loss_fn(lp, old, adv, action_mask=full)[0], rtol=0, atol=0)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="policy_loss_type"):
        co.CEGPPOPolicyLoss(policy_loss_type="gspo")
    with pytest.raises(ValueError, match="rollout_log_probs"):
        lp, old, adv, mask = batch(torch, 3)
        co.CEGPPOPolicyLoss(is_correction_level="token")(lp, old, adv, action_mask=mask)
    with pytest.raises(ValueError, match="beta_low"):
        co.CEGPPOPolicyLoss(beta_low=-1.0)
    with pytest.raises(ValueError, match="dual_clip"):
        co.CEGPPOPolicyLoss(dual_clip=0.5)  # a ValueError, not OpenRLHF's assert
    with pytest.raises(ValueError, match="beta_high"):
        co.CEGPPOPolicyLoss.with_betas(0.5, -2.0)
    with pytest.raises(TypeError, match="loss_cls"):
        co.openrlhf_port(co.CEGPPOPolicyLoss())


def test_port_matches_token_mean() -> None:
    cfg = cegppo.presets.ce_gppo_official()
    lp, old, adv, mask = batch(torch, 9)
    kw = {"eps_low": cfg.eps_low, "eps_high": cfg.eps_high, "beta_low": cfg.beta_low, "beta_high": cfg.beta_high,
          "clip_ratio_c": cfg.dual_clip}
    got = co.openrlhf_port()(lp, old, adv, mask, **kw)
    torch.testing.assert_close(got, cg.policy_loss(lp, old, adv, mask, cfg), rtol=1e-13, atol=0)
    vanilla = co.openrlhf_port(PolicyLoss)(lp, old, adv, mask, **kw)  # betas not taken: OpenRLHF's PPO
    torch.testing.assert_close(vanilla, PolicyLoss(cfg.eps_low, cfg.eps_high, cfg.dual_clip)(lp, old, adv, mask)[0])


IS_CORRECTIONS = [  # (level, mode, gating, threshold): bands that filter some units of the batch below
    ("token", "mask", "ratio", [0.8, 1.25]),
    ("token", "clip", "ratio", [0.8, 1.25]),
    ("seq", "mask", "ratio", [0.9, 1.1]),
    ("token", "mask", "binary_kl", [0.0, 0.02]),
    ("seq", "mask", "tv", [0.0, 0.05]),
]


@pytest.mark.parametrize(("level", "mode", "gating", "threshold"), IS_CORRECTIONS)
def test_importance_sampling_correction_like_openrlhf(level, mode, gating, threshold) -> None:
    """OpenRLHF's IS correction: beta 0 gives its gradient, beta 1 its value (S6.2); vllm_kl, is_filter_ratio equal."""
    lp, old, adv, mask = batch(torch, 11, spread=1.6)
    g = torch.Generator().manual_seed(5)
    rollout = old + (torch.rand(old.shape, generator=g, dtype=old.dtype) - 0.5) * 0.8
    is_kw = {"is_correction_level": level, "is_correction_mode": mode, "is_correction_gating": gating,
             "is_correction_threshold": threshold}
    info = get_loss_batch_info(None, mask)
    theirs = PolicyLoss(0.2, 0.28, 3.0, True, **is_kw)(lp, old, adv, action_mask=mask, rollout_log_probs=rollout,
                                                       **info)
    assert 0.0 < float(theirs[4]) < 1.0  # the band filters some units, not all
    g_theirs = grad_of(torch, theirs[0], lp)
    for beta, what in ((0.0, "gradient"), (1.0, "value")):
        ours = co.CEGPPOPolicyLoss(0.2, 0.28, 3.0, True, **is_kw, beta_low=beta, beta_high=beta)(
            lp, old, adv, action_mask=mask, rollout_log_probs=rollout, **info
        )
        if what == "gradient":
            torch.testing.assert_close(grad_of(torch, ours[0], lp), g_theirs, rtol=1e-12, atol=1e-15)
        else:
            torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ours[3], theirs[3])  # vllm_kl
        torch.testing.assert_close(ours[4], theirs[4])  # is_filter_ratio
    plain = co.CEGPPOPolicyLoss(0.2, 0.28, 3.0, True, beta_low=0.0, beta_high=0.0)(lp, old, adv, action_mask=mask,
                                                                                   **info)
    assert not torch.allclose(grad_of(torch, plain[0], lp), g_theirs)  # the correction acts
