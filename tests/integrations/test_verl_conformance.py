"""`cegppo-conformance check --verl-loss [MODULE:]NAME`: the kit against losses registered in verl.

- ours (``ce_gppo``, registered by `cegppo.integrations.verl`) conforms: exit 0;
- a user's module is imported first and its losses are checked: a correct one conforms, one with
  the betas swapped fails the value/gradient properties (exit 1) with a reproducer naming the loss;
- verl's own ``vanilla`` (PPO with dual clip, log-ratio clamped at +-20) does not conform;
- bad uses exit 2 with a message: unknown name, a non-torch framework, both or neither of a port and
  --verl-loss;
- declared with ``agg=``, the port hands the kit's mode (and global normalizers) to the verl loss.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from integration_helpers import assert_conforms, assert_exits_2, assert_usage_error, need, run_kit

need("torch")
need("verl")


FAST = ["--max-examples", "5", "--no-shrink"]


def test_ours_conforms(capsys) -> None:
    assert_conforms(capsys, "--verl-loss", "ce_gppo", *FAST, header="verl policy loss 'ce_gppo'")


def test_user_module_losses(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--verl-loss", "verl_user_losses:ce_gppo_user_port", *FAST)
    assert code == 0, out
    code, out, _ = run_kit(capsys, "check", "--verl-loss", "verl_user_losses:ce_gppo_swapped_betas", *FAST)
    assert code == 1, out
    assert "DOES NOT CONFORM" in out
    for prop in ("FAIL  S3", "FAIL  S4"):
        assert prop in out, out
    assert "import verl_user_losses; port = cegppo.integrations.verl.verl_port('ce_gppo_swapped_betas')" in out
    # what the buggy port gets right still passes: it is the betas, not the rest
    assert "PASS  S8.4" in out and "PASS  S9.3" in out


def test_verl_vanilla_does_not_conform(capsys) -> None:
    code, out, _ = run_kit(capsys, "check", "--verl-loss", "vanilla", *FAST, "--only", "S4")
    assert code == 1, out
    assert "FAIL  S4" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--verl-loss", "no_such_loss_xyz"], "cannot load --verl-loss no_such_loss_xyz"),
        (["check", "--verl-loss", "no_such_module_xyz:ce_gppo"], "No module named 'no_such_module_xyz'"),
    ],
)
def test_bad_names_exit_2(capsys, argv, needle) -> None:
    assert_exits_2(capsys, argv, needle)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--verl-loss", "ce_gppo", "--framework", "jax"], "verl losses are torch functions"),
        (["check", "mod:fn", "--verl-loss", "ce_gppo"], "exactly one"),
        (["check", "--framework", "torch"], "exactly one"),
    ],
)
def test_usage_errors(capsys, argv, needle) -> None:
    assert_usage_error(capsys, argv, needle)


def test_cli_subprocess() -> None:
    """The installed module runs end to end (a fresh interpreter: verl plugins, argument parsing, exit code)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cegppo.conformance._cli", "check", "--verl-loss", "ce_gppo", "--max-examples", "3",
         "--only", "S4", "--only", "S5"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  S4" in proc.stdout


def test_python_api_with_a_function() -> None:
    """`verl_port` also takes the loss function itself (registered or not), for `cegppo.conformance.check`."""
    import verl_user_losses
    from cegppo.conformance import check
    from cegppo.integrations.verl import verl_port

    good = check(verl_port(verl_user_losses.user_port), "torch", max_examples=5, only=["S4"], shrink=False)
    assert good.ok, good.format()
    bad = check(verl_port(verl_user_losses.swapped_betas), "torch", max_examples=5, only=["S4"], shrink=False)
    assert not bad.ok


def test_port_from_verl_loss_python_api() -> None:
    """`cegppo.conformance.port_from_verl_loss` (the Python face of --verl-loss) wraps a registered loss."""
    import cegppo.conformance as cc

    ours = cc.check(cc.port_from_verl_loss("ce_gppo"), "torch", max_examples=5, only=["S3", "S4"], shrink=False)
    assert ours.ok, str(ours)
    vanilla = cc.check(cc.port_from_verl_loss("vanilla"), "torch", max_examples=20, only=["S3", "S4"],
                       shrink=False, fail_fast=True)
    assert not vanilla.ok
    with pytest.raises(ValueError):
        cc.port_from_verl_loss("no_such_loss")


def test_the_port_hands_the_declared_modes_to_verl() -> None:
    """agg= makes the kit call the port with loss_agg_mode= (and num_tokens= / num_seqs=): ours, written to the
    spec, conforms in every mode with verl's global batch info; verl's `vanilla` is checked in its
    seq-mean-token-mean."""
    import cegppo.conformance as cc
    from cegppo.integrations.verl import verl_port

    ours = cc.check(verl_port("ce_gppo"), "torch", max_examples=3, only=["S4 gradient equals", "S8.3"], shrink=False,
                    agg="all", global_normalizers=True)
    assert ours.ok, ours.format()
    vanilla = cc.check(verl_port("vanilla"), "torch", max_examples=5, only=["S8.2", "S8.4"], shrink=False,
                       agg="seq-mean-token-mean", advantages="token", mask_dtype="float")
    status = {r.id.split()[0]: r.status for r in vanilla.results}
    # Empty rows and padded columns compare with the reference's seq-mean-token-mean: verl computed that mode.
    assert status["S8.2"] == "PASS", vanilla.format()
    # verl divides by the number of non-empty rows, 0 for an all-masked batch: 0/0 (docs/conformance.md).
    assert status["S8.4"] == "FAIL", vanilla.format()
