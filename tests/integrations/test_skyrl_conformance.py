"""`cegppo-conformance check --framework-loss skyrl [--loss [MODULE:]NAME]`: the kit against SkyRL losses.

- ours (``ce_gppo``, the default) conforms: exit 0;
- a user's registered loss (``--loss MODULE:NAME``, MODULE imported first): a correct one conforms,
  one with the betas swapped fails the value and gradient properties, with a reproducer;
- SkyRL's own ``dual_clip`` and ``regular`` losses (PPO clip) fail where CE-GPPO differs from PPO:
  the value (S3), the gradient (S4) and GPPO's gradient at beta = 1 (S6.2), while the gradient
  bounds of S5, which PPO's zero gradient also meets, pass;
- bad names exit 2 with a message.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from integration_helpers import (
    KIT_FAST,
    PPO_FAILS,
    PPO_ONLY,
    PPO_PASSES,
    assert_conforms,
    need_framework,
    run_kit,
)

need_framework("torch", "skyrl")
need_framework("skyrl", "skyrl")

import cegppo.conformance as cc  # noqa: E402


def test_ours_conforms(capsys) -> None:
    assert_conforms(capsys, "--framework-loss", "skyrl", *KIT_FAST,
                    header="<skyrl policy loss (cegppo's integration): port = cegppo.conformance.port_from_skyrl()>")


@pytest.mark.parametrize("name", ["dual_clip", "regular"])
def test_skyrl_ppo_losses_fail_where_ppo_differs(capsys, name: str) -> None:
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "skyrl", "--loss", name, *KIT_FAST, *PPO_ONLY)
    assert code == 1, out
    # `regular` has no dual clip at all, so the kit's dual-clip bound fails too: only dual_clip meets it.
    passes = PPO_PASSES if name == "dual_clip" else PPO_PASSES[:2]
    for line in PPO_FAILS + passes:
        assert line in out, out
    if name == "regular":
        assert "FAIL  S5    gradient bound dual_clip" in out, out


def test_user_losses(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "skyrl", "--loss", "skyrl_user_losses:ce_gppo_user_port",
                       *KIT_FAST, "--only", "S3", "--only", "S4")
    assert code == 0, out
    code, out, _ = run_kit(capsys, "check", "--framework-loss", "skyrl", "--loss",
                       "skyrl_user_losses:ce_gppo_swapped_betas", *KIT_FAST, "--only", "S3", "--only", "S4",
                       "--only", "S8.4")
    assert code == 1, out
    assert "FAIL  S3    value equals the reference" in out and "FAIL  S4    gradient equals the reference" in out
    assert "PASS  S8.4" in out
    assert ("import skyrl_user_losses; port = cegppo.conformance.port_from_skyrl("
            "'skyrl_user_losses:ce_gppo_swapped_betas')") in out


def test_python_api() -> None:
    """`cegppo.conformance.port_from_skyrl` (the Python face of --framework-loss skyrl)."""
    from cegppo.integrations.skyrl import compute_policy_loss_ce_gppo

    ours = cc.check(cc.port_from_skyrl(compute_policy_loss_ce_gppo), "torch", max_examples=5, only=["S3", "S4"],
                    shrink=False)
    assert ours.ok, str(ours)
    theirs = cc.check(cc.port_from_skyrl("dual_clip"), "torch", max_examples=10, only=["S4"], shrink=False)
    assert not theirs.ok
    with pytest.raises(ValueError, match="no_such_loss"):
        cc.port_from_skyrl("no_such_loss")


def test_bad_name_exits_2(capsys) -> None:
    code, out, err = run_kit(capsys, "check", "--framework-loss", "skyrl", "--loss", "no_such_loss_xyz")
    assert code == 2 and out == ""
    assert "cannot load --framework-loss skyrl --loss no_such_loss_xyz" in err, err


def test_cli_subprocess() -> None:
    """The installed module runs end to end in a fresh interpreter (loader, registration, exit code)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cegppo.conformance._cli", "check", "--framework-loss", "skyrl", "--max-examples", "3",
         "--only", "S4"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  S4" in proc.stdout
