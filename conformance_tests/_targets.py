"""`[MODULE:]NAME` targets of the command line and the ``port_from_*`` functions, read one way everywhere.

MODULE is a dotted module name or a path to a .py file; the current directory is importable, as with
``python -m``, so that ``cegppo-conformance check my_port:loss`` finds the file beside the user.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["import_target", "load_port"]


def _import(module_name: str) -> ModuleType:
    """MODULE of a target: a .py file loaded by its path, else a module imported by name."""
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)


def import_target(target: str) -> tuple[ModuleType | None, str]:
    """Split ``[MODULE:]NAME`` and import MODULE (None when absent); returns ``(module, NAME)``.

    MODULE is imported first because importing it may register NAME with a framework's loss
    registry (verl, SkyRL, tunix).
    """
    module_name, _, name = target.rpartition(":")
    return (_import(module_name) if module_name else None), name


def load_port(target: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FUNCTION`` (FUNCTION may be dotted: ``module:Class.method``)."""
    if ":" not in target:
        raise ValueError(f"port must be MODULE:FUNCTION, got {target!r}")
    obj: Any = import_target(target)[0]
    for part in target.rpartition(":")[2].split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj
