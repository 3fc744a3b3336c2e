"""The family's other members in the trainer (docs/trainer.md, "Other members of the family"): `--preset cispo`,
`sapo` and `gspo` train, flags their configs lack are refused, config.json and resume carry their configs, and the
default CE-GPPO run computes exactly what CE-GPPO's own functions compute."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cegppo
import cegppo.torch as cg
import pytest
from _trainer_helpers import assert_same_weights, latest_weights, read_rows, tiny_config, without_timing
from cegppo import presets
from cegppo.trainer import TrainConfig, train
from cegppo.trainer._cli import main
from cegppo.trainer.sweep import compare_grid, parse_grid

FAMILY = ("cispo", "sapo", "gspo")
STEPS = 2


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One STEPS-step run per family preset (a checkpoint at the end)."""
    outs = {}
    for name in FAMILY:
        outs[name] = tmp_path_factory.mktemp(name)
        train(tiny_config(outs[name], preset=name, total_steps=STEPS))
    return outs


@pytest.mark.parametrize("name", FAMILY)
def test_a_family_preset_trains_and_records_its_config(family_runs: dict[str, Path], name: str) -> None:
    rows = read_rows(family_runs[name])
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(v is None or math.isfinite(v) for r in rows for v in r.values())
    assert all(r["grad_norm"] > 0 for r in rows)
    # no member but CE-GPPO has a dual clip; the region fractions are a partition of the tokens
    assert all(r["dual_clip_frac"] == 0 and r["dH_dual_clip"] == 0 for r in rows)
    for r in rows:
        assert r["clip_low_frac"] + r["clip_high_frac"] + r["inside_frac"] == pytest.approx(1.0)
    record = json.loads((family_runs[name] / "config.json").read_text())
    assert record["preset"] == name and record["cegppo"] == presets.get(name).as_dict()
    # config.json holds the member's config exactly: preset name plus fields give it back
    assert presets.get(record["preset"], **record["cegppo"]) == presets.get(name)


def test_sapo_has_no_hard_region_and_its_gate_weighs_tokens(family_runs: dict[str, Path]) -> None:
    """SAPO: every token `inside` (spec S10); off-policy tokens get a gate weight, so |F| differs from CISPO's."""
    sapo, cispo = read_rows(family_runs["sapo"]), read_rows(family_runs["cispo"])
    assert all(r["clip_frac"] == 0 and r["inside_frac"] == 1 for r in sapo)
    assert all(r["dH_clip_low"] == r["dH_clip_high"] == 0 for r in sapo)
    assert all(r["grad_weight_abs_mean"] > 0 for r in sapo)
    assert sapo[0]["reward"] == cispo[0]["reward"]  # same warm start and first rollout
    assert sapo[-1]["grad_weight_abs_mean"] != cispo[-1]["grad_weight_abs_mean"]


def test_a_family_run_resumes_bit_for_bit_with_the_run_s_agg(
    family_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GSPO (the member whose F reads the mask): stopped after step 1, resumed, equal to the straight run. Its loss
    takes the run's --agg, not GSPO's paper aggregation (seq-mean-token-mean): rows differ only in F_t."""
    seen: list[str] = []
    real = cg.family_policy_loss

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(cg, "family_policy_loss", spy)
    out = tmp_path / "gspo"
    train(tiny_config(out, preset="gspo", total_steps=STEPS, stop_at_step=1))
    train(tiny_config(out, preset="gspo", total_steps=STEPS, resume=True))
    assert without_timing(read_rows(out)) == without_timing(read_rows(family_runs["gspo"]))
    assert_same_weights(latest_weights(out), latest_weights(family_runs["gspo"]))
    assert seen and set(seen) == {"token-mean"}
    assert cegppo.FAMILY[cegppo.GSPOConfig].paper_agg == "seq-mean-token-mean"


@pytest.mark.parametrize(
    ("over", "message"),
    [({"eps_high": 1e-3}, r"--eps-high None -> 0\.001"), ({"preset": "cispo"}, r"--preset 'gspo' -> 'cispo'")],
)
def test_resume_with_another_member_or_setting_is_refused(
    family_runs: dict[str, Path], over: dict[str, Any], message: str
) -> None:
    """Resuming the GSPO run with another member or other numbers would change the run: refused, nothing written."""
    out = family_runs["gspo"]
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"--resume: settings differ .*" + message):
        train(tiny_config(out, total_steps=STEPS + 1, resume=True, **{"preset": "gspo", **over}))
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "sapo", "beta_low": 0.5}, r"--beta-low=0\.5: --preset sapo is a SAPOConfig, which has no beta_low "
                                              r"\(its fields: tau_pos, tau_neg\)"),
        ({"preset": "sapo", "eps_low": 0.1}, "--eps-low=0.1: --preset sapo is a SAPOConfig"),
        ({"preset": "gspo", "dual_clip": "10"}, "--dual-clip='10': --preset gspo is a GSPOConfig, which has no dual_clip"),
        ({"preset": "cispo", "dual_clip": "none"}, "--dual-clip='none': --preset cispo is a CISPOConfig"),
        ({"preset": "cispo", "beta_high": 1.0}, "--beta-high=1.0: --preset cispo"),
        ({"preset": "gspo", "eps_low": 1.5}, "eps_low"),  # a field the member has, with a bad value: its own check
    ],
)  # fmt: skip
def test_flags_the_member_lacks_are_refused(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(out=str(tmp_path / "x"), **fields).check()
    assert not (tmp_path / "x").exists()


def test_flags_the_member_has_apply(tmp_path: Path) -> None:
    from cegppo.trainer import cegppo_config

    cfg = TrainConfig(out=str(tmp_path), preset="cispo", eps_high=0.28)
    cfg.check()
    assert cegppo_config(cfg) == cegppo.CISPOConfig(eps_low=0.2, eps_high=0.28)


def test_cli_refusal_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "sapo", "--beta-low", "0.5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cegppo-train: error: --beta-low=0.5: --preset sapo is a SAPOConfig")


def test_sweep_and_compare_take_the_family_presets() -> None:
    grid = parse_grid("ppo; cispo; sapo; gspo")
    assert [p.label for p in grid] == [
        "ppo (β 0/0, ε 0.2/0.2)",
        "cispo (eps_low 0.2, eps_high 0.2)",
        "sapo (tau_pos 1, tau_neg 1.05)",
        "gspo (eps_low 0.0003, eps_high 0.0004)",
    ]
    # a preset point clears every single-value override of the base config, so the member's preset is what runs
    assert dict(grid[2].overrides) == {"preset": "sapo", "eps_low": None, "eps_high": None, "beta_low": None,
                                       "beta_high": None, "dual_clip": None}  # fmt: skip
    base = TrainConfig(beta_low=0.25, dual_clip="3")
    sapo = grid[2].config(base, seed=2, out=Path("runs/x"))
    assert sapo.preset == "sapo" and sapo.beta_low is None and sapo.dual_clip is None
    assert [p.name for p in compare_grid("gspo")] == ["ppo", "gspo"]


def test_the_default_run_computes_ce_gppo_s_own_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a CEGPPOConfig the family's functions are policy_loss, policy_metrics, grad_weight and token_regions:
    the default preset's rows are the same, key for key and bit for bit, with those called directly."""
    family = without_timing(train(tiny_config(tmp_path / "family", total_steps=STEPS)))

    def ce_gppo_loss(lp: Any, olp: Any, adv: Any, mask: Any, cfg: Any, agg: Any, **norm: Any) -> Any:
        return cg.policy_loss(lp, olp, adv, mask, cfg, agg, **norm)

    class CEGPPORow:
        @staticmethod
        def regions(lp: Any, olp: Any, adv: Any, _mask: Any, cfg: Any) -> Any:
            return cg.token_regions(lp, olp, adv, cfg)

    monkeypatch.setattr(cg, "family_policy_loss", ce_gppo_loss)
    monkeypatch.setattr(cg, "family_metrics", cg.policy_metrics)
    monkeypatch.setattr(cg, "family_grad_weight", lambda lp, olp, adv, _mask, cfg: cg.grad_weight(lp, olp, adv, cfg))
    monkeypatch.setattr(cg, "FAMILY", {cegppo.CEGPPOConfig: CEGPPORow})
    direct = without_timing(train(tiny_config(tmp_path / "direct", total_steps=STEPS)))
    assert family == direct
    assert max(r["clip_frac"] for r in family) > 0 and any(r["dH_clip_high"] != 0 for r in family)
