"""The repository's scripts under tools/ as modules, for the tests that check them (tools/ is no package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

__all__ = ["ROOT", "load_tool"]

ROOT = Path(__file__).resolve().parents[2]


def load_tool(filename: str) -> ModuleType:
    """tools/`filename` loaded as a module named ``cegppo_tools_<stem>``."""
    spec = importlib.util.spec_from_file_location(f"cegppo_tools_{Path(filename).stem}", ROOT / "tools" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
