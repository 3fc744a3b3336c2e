"""The optional subpackages' import check: a missing framework is named with the extra that installs it.

``import cegppo`` needs only NumPy. ``cegppo.torch``, ``cegppo.jax``, ``cegppo.conformance``,
``cegppo.trainer`` and the ``cegppo.integrations`` modules need packages that an extra of the
distribution installs (pyproject.toml, ``[project.optional-dependencies]``). Each calls `require`
first, before its own imports: without it a user who installed plain ``cegppo`` meets a bare
``No module named 'torch'`` raised from deep inside the subpackage, which says neither that the
package is optional nor how to get it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

__all__ = ["missing_modules", "require"]

_EXTRA = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # an extra's name as pyproject.toml spells them
_MODULE = re.compile(r"[A-Za-z_]\w*")  # a top-level import name (no dots)


def _installed(module: str) -> bool:
    """Whether `module` (a top-level name) can be imported, found without importing it.

    A namespace package does not count: that is a bare folder of the same name on sys.path (pytest puts
    tests/ there, which holds tests/torch and tests/jax), and importing it yields an empty module instead
    of the framework.
    """
    try:
        spec = importlib.util.find_spec(module)
    except ValueError:  # in sys.modules without a __spec__ (set by hand): importable as it is
        return True
    return spec is not None and spec.origin is not None


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The names in `modules` (top-level import names) that cannot be imported here, in order."""
    if isinstance(modules, str) or not isinstance(modules, Sequence):
        raise TypeError(f"modules must be a sequence of module names, got {type(modules).__name__}")
    if not modules:
        raise ValueError("modules is empty: name at least one module")
    for name in modules:
        if not isinstance(name, str):
            raise TypeError(f"modules must hold module names (str), got {type(name).__name__}")
        if not _MODULE.fullmatch(name):
            raise ValueError(f"modules must hold top-level import names (no dots), got {name!r}")
    return [name for name in modules if not _installed(name)]


def require(subpackage: str, extra: str, modules: Sequence[str]) -> None:
    """Raise ModuleNotFoundError when a module `subpackage` needs is missing, naming it and `extra`.

    Called at the top of each optional subpackage, before its imports (nothing is imported here:
    the check only looks the modules up)::

        require(__name__, "torch", ["torch"])

    Args:
        subpackage: the calling module's name (``__name__``), which the message names.
        extra: the extra of the ``cegppo`` distribution that installs `modules`
            (``pip install "cegppo[EXTRA]"``).
        modules: the top-level import names `subpackage` needs, e.g. ``["torch"]``.

    Raises:
        ModuleNotFoundError: some of `modules` cannot be imported. The message names every missing
            one and the command that installs them; ``exc.name`` is the first missing module, so code
            that reads it (``pytest.importorskip``, ``except ModuleNotFoundError``) sees a missing
            module as before.
        TypeError: an argument is not a str (or `modules` not a sequence of str).
        ValueError: an argument is not a name (an empty one, a dotted module).
    """
    for arg, value in (("subpackage", subpackage), ("extra", extra)):
        if not isinstance(value, str):
            raise TypeError(f"{arg} must be a str, got {type(value).__name__}")
    if not subpackage:
        raise ValueError("subpackage is empty: pass the calling module's __name__")
    if not _EXTRA.fullmatch(extra):
        raise ValueError(f"extra must be the name of an extra of cegppo (e.g. 'torch'), got {extra!r}")
    absent = missing_modules(modules)
    if not absent:
        return
    names = absent[0] if len(absent) == 1 else ", ".join(absent[:-1]) + " and " + absent[-1]
    verb = "is" if len(absent) == 1 else "are"
    raise ModuleNotFoundError(
        f"{subpackage} needs {names}, which {verb} not installed. It is an optional part of cegppo; "
        f'install it with its extra: pip install "cegppo[{extra}]"',
        name=absent[0],
    )
