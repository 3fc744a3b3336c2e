"""Shared set-up of the integration tests (verl, TRL, optax, the docs' code blocks).

`need(module)` imports a third-party package or skips with the reason it is missing and how to
get it (the pinned `integrations` extra). Under nox (CEGPPO_STRICT=1) a missing package is an
error, never a skip: the `integrations` session installs every one of them.

`need_framework(module, extra)` is the same for a framework with an extra and a nox session of its own
(OpenRLHF, SkyRL, tunix): that session sets ``CEGPPO_REQUIRE=<extra>`` with CEGPPO_STRICT=1, and there a
missing package is an error; every other session (``integrations`` also collects this folder) skips
those tests with the reason, because only their own session installs them.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

INSTALL_HINT = "pip install -c constraints.txt '.[integrations,test]' (or: nox -s integrations)"


def need(module: str) -> ModuleType:
    """Import `module`, or skip the calling test module with the reason (error under CEGPPO_STRICT=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CEGPPO_STRICT"):
            raise
        pytest.skip(f"{module} is not installed ({exc}); install it with: {INSTALL_HINT}", allow_module_level=True)
        raise  # unreachable: pytest.skip raises


def need_framework(module: str, extra: str) -> ModuleType:
    """Import `module`, or skip the calling test module with how to install it (an error in `extra`'s session)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        required = {x.strip() for x in os.environ.get("CEGPPO_REQUIRE", "").split(",")}
        if os.environ.get("CEGPPO_STRICT") and extra in required:
            raise
        hint = f"nox -s {extra} (it installs the pinned version; see docs/integrations.md)"
        pytest.skip(f"{module} is not installed ({exc}); install it with: {hint}", allow_module_level=True)
        raise  # unreachable: pytest.skip raises


# The conformance kit's CLI against a framework's losses (the *_conformance test files).
KIT_FAST = ["--max-examples", "5", "--no-shrink", "-q"]
"""Few examples, no shrinking: these tests check which properties pass or fail, not the reproducer."""
PPO_FAILS = ("FAIL  S3    value equals the reference", "FAIL  S4    gradient equals the reference",
             "FAIL  S6.2  beta = 1 gives GPPO's gradient")
"""Where a PPO-clip loss (the betas ignored) differs from CE-GPPO."""
PPO_PASSES = ("PASS  S5    gradient bound clip_low", "PASS  S5    gradient bound clip_high",
              "PASS  S5    gradient bound dual_clip")
"""What PPO's zero gradient on clipped tokens still satisfies."""
PPO_ONLY = ["--only", "S3", "--only", "S4", "--only", "S5", "--only", "S6.2"]


def run_kit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`cegppo-conformance ARGV` in this process: (exit code, stdout, stderr)."""
    from cegppo.conformance._cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_conforms(capsys: pytest.CaptureFixture[str], *argv: str, header: str) -> str:
    """`cegppo-conformance check ARGV` exits 0, names `header` in the report's first line (a framework may log
    before it) and reports no failure; its output."""
    code, out, _ = run_kit(capsys, "check", *argv)
    assert code == 0, out
    first = next(line for line in out.splitlines() if line.startswith("cegppo conformance"))
    assert header in first, first
    assert "CONFORMS" in out and "FAIL" not in out
    return out


def assert_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """A bad name in ARGV: exit 2, nothing on stdout, `needle` in the message on stderr."""
    code, out, err = run_kit(capsys, *argv)
    assert code == 2 and out == ""
    assert needle in err, err


def assert_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """A misuse of the command line in ARGV: argparse's exit 2, with `needle` in its message."""
    from cegppo.conformance._cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
