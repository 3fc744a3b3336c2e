"""`cegppo-conformance check --framework-loss openrlhf [--loss [MODULE:]CLASS]`: the kit against OpenRLHF losses.

- ours (`CEGPPOPolicyLoss`, the default) conforms: exit 0;
- a user's class (``--loss MODULE:CLASS``, MODULE imported first): a correct one conforms, one with
  the betas swapped fails the value and gradient properties, with a reproducer that rebuilds it;
- OpenRLHF's own ``PolicyLoss`` (PPO clip, with dual clip) fails where CE-GPPO differs from PPO:
  the value (S3), the gradient (S4) and GPPO's gradient at beta = 1 (S6.2), while the gradient
  bounds of S5, which PPO's zero gradient also meets, pass;
- bad uses exit 2 with a message.
"""

from __future__ import annotations

import pytest
from integration_helpers import (
    KIT_FAST,
    PPO_FAILS,
    PPO_ONLY,
    PPO_PASSES,
    assert_conforms,
    assert_exits_2,
    assert_usage_error,
    need_framework,
    run_kit,
)

need_framework("torch", "openrlhf")
need_framework("openrlhf", "openrlhf")

import cegppo.conformance as cc  # noqa: E402


def test_ours_conforms(capsys) -> None:
    assert_conforms(capsys, "--framework-loss", "openrlhf", *KIT_FAST,
                    header="<openrlhf policy loss (cegppo's integration): port = cegppo.conformance.port_from_openrlhf()>")


def test_openrlhf_policy_loss_fails_where_ppo_differs(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "openrlhf", "--loss", "PolicyLoss", *KIT_FAST, *PPO_ONLY)
    assert code == 1, out
    assert "DOES NOT CONFORM" in out
    for line in PPO_FAILS + PPO_PASSES:
        assert line in out, out


def test_the_port_hands_the_declared_modes_to_openrlhf(capsys) -> None:
    """--agg: the mode reaches OpenRLHF as its token_level_loss, the global normalizers as its batch info;
    ours conforms in both of OpenRLHF's modes, and a mode OpenRLHF lacks is refused in one line."""
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "openrlhf", *KIT_FAST, "--agg",
                           "token-mean,seq-mean-token-mean", "--global-normalizers", "--only", "S4 gradient equals",
                           "--only", "S8.3")
    assert code == 0, out
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "openrlhf", *KIT_FAST, "--agg", "token-sum",
                           "--only", "S8.2")
    assert code == 1, out
    assert "loss_agg_mode must be one of ['seq-mean-token-mean', 'token-mean'] (OpenRLHF's token_level_loss)" in out


def test_user_classes(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "openrlhf", "--loss", "openrlhf_user_losses:UserPolicyLoss",
                       *KIT_FAST, "--only", "S3", "--only", "S4")
    assert code == 0, out
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "openrlhf", "--loss",
                       "openrlhf_user_losses:SwappedBetasPolicyLoss", *KIT_FAST, "--only", "S3", "--only", "S4",
                       "--only", "S8.4")
    assert code == 1, out
    assert "FAIL  S3    value equals the reference" in out and "FAIL  S4    gradient equals the reference" in out
    assert "PASS  S8.4" in out  # what the buggy port gets right still passes
    assert ("import openrlhf_user_losses; port = cegppo.conformance.port_from_openrlhf("
            "'openrlhf_user_losses:SwappedBetasPolicyLoss')") in out


def test_python_api() -> None:
    """`cegppo.conformance.port_from_openrlhf` (the Python face of --framework-loss openrlhf)."""
    from cegppo.integrations.openrlhf import PolicyLoss

    ours = cc.check(cc.port_from_openrlhf(), "torch", max_examples=5, only=["S3", "S4"], shrink=False)
    assert ours.ok, str(ours)
    theirs = cc.check(cc.port_from_openrlhf(PolicyLoss), "torch", max_examples=10, only=["S4"], shrink=False)
    assert not theirs.ok
    with pytest.raises(ValueError, match="NoSuchLoss"):
        cc.port_from_openrlhf("NoSuchLoss")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--framework-loss", "openrlhf", "--loss", "NoSuchLoss"], "no OpenRLHF policy loss class 'NoSuchLoss'"),
        (["check", "--framework-loss", "openrlhf", "--loss", "no_such_module_xyz:X"], "No module named 'no_such_module_xyz'"),
    ],
)
def test_bad_names_exit_2(capsys, argv, needle) -> None:
    assert_exits_2(capsys, argv, needle)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--framework-loss", "openrlhf", "--framework", "jax"], "its losses are torch functions"),
        (["check", "mod:fn", "--framework-loss", "openrlhf"], "exactly one"),
        (["check", "--verl-loss", "ce_gppo", "--framework-loss", "openrlhf"], "exactly one"),
        (["check", "mod:fn", "--framework", "torch", "--loss", "X"], "give --framework-loss too"),
        (["check", "--framework-loss", "openrlhf", "--fused"], "not a framework's policy loss"),
        (["check", "--framework-loss", "no_such_framework"], "invalid choice"),
    ],
)
def test_usage_errors(capsys, argv, needle) -> None:
    assert_usage_error(capsys, argv, needle)
