"""`[MODULE:]NAME` targets of the command line and the ``port_from_*`` functions, read one way everywhere."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

__all__ = ["import_target"]


def import_target(target: str) -> tuple[ModuleType | None, str]:
    """Split ``[MODULE:]NAME`` and import MODULE (None when absent); returns ``(module, NAME)``.

    MODULE is imported first because importing it may register NAME with a framework's loss
    registry (verl, SkyRL, tunix). The current directory is importable, as with ``python -m``.
    """
    module_name, _, name = target.rpartition(":")
    if not module_name:
        return None, name
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name), name
