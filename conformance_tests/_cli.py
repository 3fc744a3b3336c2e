"""``cegppo-conformance``: check a CE-GPPO port from the command line (docs/conformance.md).

    cegppo-conformance check MODULE:FUNCTION --framework torch [--max-examples N] [--seed S]
                       [--only ID ...] [--fail-fast] [--no-shrink] [--mask-dtype float] [-v]
    cegppo-conformance list

Exit status: 0 when every property holds, 1 when any fails, 2 on bad arguments or when the port
(or its framework) cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["load_port", "main"]


def load_port(target: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FUNCTION`` (a dotted module, or a path to a .py file).

    The current directory is importable, as with ``python -m``.
    """
    if ":" not in target:
        raise ValueError(f"port must be MODULE:FUNCTION, got {target!r}")
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cegppo-conformance", description="CE-GPPO conformance kit")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check a port: exit 0 if it conforms, 1 if not")
    c.add_argument("port", metavar="MODULE:FUNCTION", help="the port, e.g. my_pkg.losses:ce_gppo or ./port.py:loss")
    c.add_argument("--framework", required=True, choices=["torch", "jax", "numpy"])
    c.add_argument("--max-examples", type=int, default=100, help="Hypothesis examples per property (default 100)")
    c.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, the same every run)")
    c.add_argument("--only", action="append", default=None, metavar="ID",
                   help="run only properties whose id starts with ID (repeatable), e.g. --only S5")
    c.add_argument("--mask-dtype", choices=["bool", "float"], default="bool",
                   help="hand response_mask as bool (default) or as 0/1 floats like verl")
    c.add_argument("--compile", action="store_true", help="torch ports: also check torch.compile vs eager")
    c.add_argument("--no-x64", action="store_true", help="jax: do not enable jax_enable_x64 (skips float64)")
    c.add_argument("--fail-fast", action="store_true", help="stop at the first failing property")
    c.add_argument("--no-shrink", action="store_true",
                   help="report the first failing example without shrinking it (faster, larger reproducer)")
    c.add_argument("-v", "--verbose", action="store_true", help="show Hypothesis's labelled draws for failures")
    # The integrations issue adds `--verl-loss NAME` here (cegppo.conformance.port_from_verl_loss).
    sub.add_parser("list", help="list the properties and their spec clauses")
    return ap


def _error(msg: str) -> int:
    print(f"cegppo-conformance: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default ``sys.argv[1:]``) and return the exit status.

    0: every property holds; 1: some property fails; 2: bad arguments, or the port or its framework
    cannot be loaded (argparse's own usage errors exit with 2 as well, by SystemExit).
    """
    args = _parser().parse_args(argv)
    from . import PROPERTIES, check, select

    if args.command == "list":
        for p in PROPERTIES:
            print(f"{p.clause:<5} {p.name:<48} {p.doc}")
        return 0
    if args.max_examples < 1:
        return _error(f"--max-examples must be >= 1, got {args.max_examples}")
    try:
        select(args.only)
    except ValueError as exc:
        return _error(f"--only: {exc}")
    try:
        importlib.import_module(args.framework)
    except ImportError as exc:
        return _error(f"--framework {args.framework}: cannot import {args.framework} ({exc})")
    if args.framework == "jax" and not args.no_x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        port = load_port(args.port)
    except Exception as exc:
        return _error(f"cannot load {args.port}: {type(exc).__name__}: {exc}")

    def progress(r: Any) -> None:
        if sys.stderr.isatty():
            print(f"  {r.status} {r.id}", file=sys.stderr)

    report = check(port, args.framework, max_examples=args.max_examples, seed=args.seed, only=args.only,
                   mask_dtype=args.mask_dtype, compile=args.compile, name=args.port, progress=progress,
                   fail_fast=args.fail_fast, shrink=not args.no_shrink)
    print(report.format(verbose=args.verbose))
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
