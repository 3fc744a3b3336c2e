"""Shared set-up of the integration tests (verl, TRL, optax, the docs' code blocks).

`need(module)` imports a third-party package or skips with the reason it is missing and how to
get it (the pinned `integrations` extra). Under nox (CEGPPO_STRICT=1) a missing package is an
error, never a skip: the `integrations` session installs every one of them.
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
