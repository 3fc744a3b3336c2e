"""`cegppo-conformance check --framework-loss tunix [--loss [MODULE:]NAME]`: the kit against losses registered in tunix.

- ours (``ce_gppo``, registered by `cegppo.integrations.tunix`) conforms through tunix's signature;
- tunix's own ``grpo`` loss (PPO clip, dual clip, log-ratio clamped at +-20) does not: it fails where
  CE-GPPO differs from PPO (the value, the gradient of clipped tokens, GPPO's gradient at beta = 1)
  and passes where they agree (beta = 0 is PPO's gradient, beta = 1 PPO's value, the gradient
  bounds); it also lets NaN at masked positions into the gradient (S9.3);
- tunix's ``ppo`` loss (token-level advantages) fails the same beta properties;
- bad uses exit 2 with a message.

Run with ``--no-x64``: tunix's losses compute in float32 whatever they are given, which would fail the
float64 checks of every property and hide what the betas change.
"""

from __future__ import annotations

import re

import pytest
from integration_helpers import (
    assert_conforms,
    assert_usage_error,
    need,
    need_framework,
    run_kit,
)

need_framework("tunix", "tunix")
jax = need("jax")


FAST = ["--max-examples", "5", "--no-shrink", "--jit", "--quiet"]
BETA_PROPERTIES = ["--only", "S3 value equals", "--only", "S4 gradient equals", "--only", "S6"]


@pytest.fixture(autouse=True)
def _x64_off():
    """The CLI switches jax_enable_x64 on for the whole process (unless --no-x64): undo it after each test."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


def statuses(out: str) -> dict[str, str]:
    """{'S3 value equals the reference': 'PASS', ...} from the report's summary lines."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"(PASS|FAIL|SKIP)  (\S+)\s+(.+?)(?:  ->.*|  \(.*)?$", line)
        if m:
            found[f"{m[2]} {m[3]}"] = m[1]
    return found


def test_ours_conforms(capsys) -> None:
    out = assert_conforms(capsys, "--framework-loss", "tunix", *FAST, *BETA_PROPERTIES,
                          "--only", "S8.4", "--only", "S9.3", "--only", "S9.5 float64",
                          header="tunix policy loss (cegppo's integration)")
    assert "PASS  S9.5  float64 inputs are computed in float64" in out  # our loss keeps float64


# A property that fails stops at its first failing example, so the FAIL runs can afford more examples:
# a discriminating case (a clipped token with beta != 1, garbage under the mask) is then always drawn.
MANY = ["--max-examples", "30", "--no-shrink", "--jit", "--quiet", "--no-x64"]


def test_tunix_grpo_fails_where_ce_gppo_differs(capsys) -> None:
    differs = ["S3 value equals the reference", "S4 gradient equals the reference",
               "S6.2 beta = 1 gives GPPO's gradient", "S9.3 masked garbage changes nothing"]
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "grpo", *MANY,
                       *(arg for prop in differs for arg in ("--only", prop)))
    assert code == 1, out
    assert "DOES NOT CONFORM" in out
    got = statuses(out)
    assert {prop: got[prop] for prop in differs} == dict.fromkeys(differs, "FAIL"), out
    assert "port = cegppo.conformance.port_from_tunix('grpo')" in out
    # where CE-GPPO and PPO agree, tunix's PPO loss passes: the failures above are the betas
    agrees = ["S6.1 beta = 0 gives PPO's gradient", "S6.2 beta = 1 gives PPO's value",
              "S5 gradient bound clip_low", "S5 gradient bound inside"]
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "grpo", "--no-x64", *FAST,
                       *(arg for prop in agrees for arg in ("--only", prop)))
    assert code == 0, out
    assert set(statuses(out).values()) == {"PASS"}, out


def test_tunix_ppo_fails_the_beta_properties(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "ppo", "--advantages", "token", *MANY,
                       "--only", "S4 gradient equals", "--only", "S6.2 beta = 1 gives GPPO")
    assert code == 1, out
    got = statuses(out)
    assert got["S4 gradient equals the reference"] == "FAIL"
    assert got["S6.2 beta = 1 gives GPPO's gradient"] == "FAIL"
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "ppo", "--advantages", "token", "--no-x64",
                       *FAST, "--only", "S6.1")
    assert code == 0, out
    assert statuses(out)["S6.1 beta = 0 gives PPO's gradient"] == "PASS"


def test_the_port_hands_the_declared_modes_to_tunix(capsys) -> None:
    """--agg: the mode reaches tunix's config under tunix's name for it; ours conforms in each of tunix's four,
    and the ppo family, token-mean only, refuses another mode in one line."""
    modes = "token-mean,seq-mean-token-mean,seq-mean-token-sum,seq-mean-token-sum-norm"
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", *FAST, "--agg", modes,
                           "--only", "S4 gradient equals", "--only", "S8.2")
    assert code == 0, out
    assert "takes loss_agg_mode= in " + modes.replace(",", ", ") in out
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "ppo", "--advantages", "token",
                           *FAST, "--agg", "seq-mean-token-mean", "--only", "S8.2")
    assert code == 1, out
    assert "loss_agg_mode must be one of ['token-mean'] with tunix's ppo config" in out


def test_python_api() -> None:
    """`cegppo.conformance.port_from_tunix` (the Python face of --framework-loss tunix)."""
    import cegppo.conformance as cc
    from cegppo.integrations import tunix as ct

    def check(port, examples=5):
        return cc.check(cc.port_adapter(port, "jax", jit=True), "jax", max_examples=examples,
                        only=["S4 gradient equals"], shrink=False, fail_fast=True)

    assert check(cc.port_from_tunix()).ok
    # the function itself, registered or not, under either config family
    assert check(cc.port_from_tunix(ct.ce_gppo_policy_loss_fn, learner="ppo")).ok
    assert not check(cc.port_from_tunix("grpo"), examples=30).ok
    with pytest.raises(ValueError, match="no tunix policy loss named 'no_such_loss'"):
        cc.port_from_tunix("no_such_loss")
    with pytest.raises(ValueError, match="learner must be 'grpo' or 'ppo'"):
        cc.port_from_tunix("ce_gppo", learner="dpo")


def test_unknown_name_exits_2(capsys) -> None:
    code, out, err = run_kit(capsys, "check", "--framework-loss", "tunix", "--loss", "no_such_loss_xyz")
    assert code == 2 and out == ""
    assert "cannot load --framework-loss tunix --loss no_such_loss_xyz" in err and "registered:" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--framework-loss", "tunix", "--framework", "torch"], "its losses are jax functions"),
        (["check", "--framework-loss", "tunix", "--verl-loss", "ce_gppo"], "(exactly one)"),
        (["check", "--framework-loss", "tunix", "--fused"], "--fused checks a fused LM-head loss"),
        (["check", "--framework-loss", "nosuchframework"], "invalid choice"),
    ],
)
def test_usage_errors(capsys, argv, needle) -> None:
    assert_usage_error(capsys, argv, needle)
