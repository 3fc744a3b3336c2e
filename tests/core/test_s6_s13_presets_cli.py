"""Presets (docs/spec.md S6, S7, S13), the `python -m cegppo` demo and import isolation (S9.5, docs/design.md "Layout")."""

from __future__ import annotations

import subprocess
import sys

import cegppo
import pytest
from cegppo import presets

EXPECTED = {
    # name: (eps_low, eps_high, beta_low, beta_high, dual_clip)
    "ppo": (0.2, 0.2, 0.0, 0.0, None),
    "dual_clip_ppo": (0.2, 0.2, 0.0, 0.0, 3.0),
    "dapo": (0.2, 0.28, 0.0, 0.0, None),
    "gppo": (0.2, 0.2, 1.0, 1.0, None),
    "ce_gppo_1p5b": (0.2, 0.2, 0.5, 1.0, None),
    "ce_gppo_7b": (0.2, 0.2, 0.75, 1.0, None),
    # recipe/dapo/1_5B_perf_run_gppo_v1_beta1_05_beta2_1_ours_math.sh in Kwai-Klear/CE-GPPO:
    # clip_ratio_low = clip_ratio_high = 0.2, gppo_loss_beta1 = 0.5, gppo_loss_beta2 = 1.0, clip_ratio_c = 10.0
    "ce_gppo_official": (0.2, 0.2, 0.5, 1.0, 10.0),
}

FAMILY_EXPECTED = {
    # name: the member's config, every field as the paper (or, for CISPO's two-sided widths, verl 0.9.1) sets it
    "cispo": cegppo.CISPOConfig(eps_low=0.2, eps_high=0.2),
    "sapo": cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05),
    "gspo": cegppo.GSPOConfig(eps_low=3e-4, eps_high=4e-4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_S6_S13_preset_numbers(name: str) -> None:
    cfg = presets.get(name)
    assert (cfg.eps_low, cfg.eps_high, cfg.beta_low, cfg.beta_high, cfg.dual_clip) == EXPECTED[name]
    assert presets.PRESETS[name]() == cfg
    assert getattr(presets, name).__doc__, f"preset {name} must say where its numbers come from"


@pytest.mark.parametrize("name", sorted(FAMILY_EXPECTED))
def test_S14_family_preset_configs(name: str) -> None:
    cfg = presets.get(name)
    assert type(cfg) is type(FAMILY_EXPECTED[name]) and cfg == FAMILY_EXPECTED[name]
    assert presets.PRESETS[name]() == presets.FAMILY_PRESETS[name]() == cfg
    assert getattr(presets, name).__doc__, f"preset {name} must say where its numbers come from"


def test_presets_are_all_listed_and_overridable() -> None:
    assert set(presets.CE_GPPO_PRESETS) == set(EXPECTED)
    assert set(presets.FAMILY_PRESETS) == set(FAMILY_EXPECTED)
    assert list(presets.PRESETS) == [*presets.CE_GPPO_PRESETS, *presets.FAMILY_PRESETS]
    assert all(isinstance(presets.get(name), cegppo.CEGPPOConfig) for name in presets.CE_GPPO_PRESETS)
    assert presets.ce_gppo_7b(dual_clip=10.0).dual_clip == 10.0
    assert presets.get("ppo", eps_high=0.28) == presets.dapo()
    with pytest.raises(ValueError, match="preset"):
        presets.get("grpo")
    with pytest.raises(ValueError, match="beta_low"):
        presets.ce_gppo_official(beta_low=-1.0)
    assert presets.get("sapo", tau_neg=2.0) == cegppo.SAPOConfig(tau_pos=1.0, tau_neg=2.0)
    with pytest.raises(ValueError, match="tau_pos"):
        presets.sapo(tau_pos=0.0)
    with pytest.raises(TypeError, match="beta_low"):  # a field the member does not have
        presets.gspo(beta_low=1.0)


def test_demo_runs_and_prints_every_region() -> None:
    out = subprocess.run([sys.executable, "-m", "cegppo"], capture_output=True, text=True, timeout=60, check=True)
    for region in cegppo.TokenRegions._fields:
        assert any(line.startswith(region) for line in out.stdout.splitlines()), region
    for key in cegppo.METRIC_KEYS:
        assert key in out.stdout
    assert "loss (token-mean)" in out.stdout


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_demo_accepts_every_preset_and_mode(agg: str) -> None:
    from cegppo.__main__ import main

    for name in presets.CE_GPPO_PRESETS:
        main(["--preset", name, "--agg", agg])
    with pytest.raises(SystemExit):  # the demo sets CE-GPPO against PPO: a family member's preset is refused
        main(["--preset", "sapo"])


def test_import_cegppo_does_not_import_torch_or_jax() -> None:
    code = (
        "import sys, cegppo, cegppo.presets; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'jaxlib')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names() -> None:
    assert sorted(cegppo.__all__) == sorted(set(cegppo.__all__))
    for name in cegppo.__all__:
        assert hasattr(cegppo, name), name
