"""Importing a framework's loss layer where the rest of the framework cannot be imported.

OpenRLHF's ``openrlhf.models`` package imports its whole model stack on import (flash-attn, which
needs CUDA to install, DeepSpeed, PEFT); SkyRL's ``skyrl.backends`` imports its Tinker API types,
which pydantic refuses on Python < 3.12. Neither matters to the policy loss, which lives in one
module of each package. `import_loss_module` imports that module the ordinary way and, only when a
package ``__init__`` on the way raises, loads the module again with those packages' ``__init__``
files skipped: the same file of the same installed package, without the imports it does not use.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Sequence

__all__ = ["import_loss_module"]

_log = logging.getLogger(__name__)


def _bare_package(name: str) -> None:
    """Put `name` in sys.modules as a package whose ``__init__`` did not run (its submodules still import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    module.__file__ = spec.origin
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def import_loss_module(module: str, skip_inits: Sequence[str]) -> types.ModuleType:
    """Import `module`; if that raises, retry with the packages `skip_inits` loaded without their ``__init__``.

    Args:
        module: the dotted name of the framework's loss module (e.g. ``openrlhf.models.loss``).
        skip_inits: packages on the way whose ``__init__`` imports more than the loss needs.

    Raises:
        ImportError: the framework is not installed, or the module fails to import even so (the
            first error is chained).
    """
    try:
        return importlib.import_module(module)
    except Exception as first:  # flash-attn's ImportError, pydantic's PydanticUserError, ...
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise
        for name in skip_inits:
            sys.modules.pop(name, None)
        try:
            for name in skip_inits:
                _bare_package(name)
            loaded = importlib.import_module(module)
        except Exception as second:
            raise ImportError(f"cannot import {module}: {type(second).__name__}: {second}") from first
        _log.info("imported %s without the __init__ of %s (%s: %s)", module, ", ".join(skip_inits),
                  type(first).__name__, first)
        return loaded
