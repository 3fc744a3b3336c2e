"""``cegppo-conformance``: check a CE-GPPO port from the command line (docs/conformance.md).

    cegppo-conformance check MODULE:FUNCTION --framework torch [--objective ce_gppo|cispo|cispo_cap|sapo|gspo]
                       [--max-examples N] [--seed S]
                       [--only ID ...] [--fail-fast] [--no-shrink] [--mask-dtype float] [--jit] [-v]
                       [--device cuda] [--advantages token|sequence|both] [--json FILE]
                       [--timeout SECONDS] [--quiet]
    cegppo-conformance check --framework-loss verl|openrlhf|skyrl|tunix [--loss [MODULE:]NAME] [options as above]
    cegppo-conformance check --verl-loss [MODULE:]NAME [options as above]   (= --framework-loss verl --loss NAME)
    cegppo-conformance check MODULE:FUNCTION --fused --framework torch|jax [options as above]
    cegppo-conformance list
    cegppo-conformance --version

With --objective the port computes another member of the family (docs/spec.md S14) and takes that
member's keywords (cispo: eps_low, eps_high; cispo_cap: cap; sapo: tau_pos, tau_neg; gspo: eps_low,
eps_high) instead of CE-GPPO's; its clause of S14 is checked instead of CE-GPPO's S3-S7.

With --fused the function is a fused LM-head loss with the signature of
`cegppo.torch.fused_linear_policy_loss` (hidden states in, (loss, metrics) out) and the S11.1
properties run instead of the policy-loss ones.

Progress goes to stderr unless --quiet (or --no-progress): one line per property on a terminal; in a
log (stderr a file or a pipe, as in CI) the same lines at most one every few seconds, the last one
always. The report goes to stdout, and with --json FILE as JSON to FILE too.

Exit status: 0 when every property holds, 1 when any fails (a property that runs past --timeout
fails), 2 on bad arguments, or when the port, its framework or the device cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cegppo

from ._frameworks import FRAMEWORK_LOSSES
from ._port import OBJECTIVES
from ._targets import load_port

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cegppo-conformance", description="CE-GPPO conformance kit")
    ap.add_argument("--version", action="version", version=f"%(prog)s {cegppo.__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check a port: exit 0 if it conforms, 1 if not")
    c.add_argument("port", metavar="MODULE:FUNCTION", nargs="?", default=None,
                   help="the port, e.g. my_pkg.losses:ce_gppo or ./port.py:loss")
    c.add_argument("--framework", default=None, choices=["torch", "jax", "numpy"],
                   help="the port's framework (required with MODULE:FUNCTION; torch with --verl-loss)")
    c.add_argument("--objective", default="ce_gppo", choices=list(OBJECTIVES),
                   help="what the port computes (docs/spec.md S14): ce_gppo (default; keywords eps_low, eps_high, "
                        "beta_low, beta_high, clip_ratio_c), cispo (eps_low, eps_high), cispo_cap (cap), sapo "
                        "(tau_pos, tau_neg) or gspo (eps_low, eps_high)")
    c.add_argument("--max-examples", type=int, default=100, help="Hypothesis examples per property (default 100)")
    c.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, the same every run)")
    c.add_argument("--only", action="append", default=None, metavar="ID",
                   help="run only properties whose id starts with ID (repeatable), e.g. --only S5")
    c.add_argument("--mask-dtype", choices=["bool", "float"], default="bool",
                   help="hand response_mask as bool (default) or as 0/1 floats like verl")
    c.add_argument("--compile", action="store_true", help="torch ports: also check torch.compile vs eager")
    c.add_argument("--jit", action="store_true",
                   help="jax: run every call under jax.jit (several times faster; the port must be jittable)")
    c.add_argument("--no-x64", action="store_true", help="jax: do not enable jax_enable_x64 (skips float64)")
    c.add_argument("--fail-fast", action="store_true", help="stop at the first failing property")
    c.add_argument("--no-shrink", action="store_true",
                   help="report the first failing example without shrinking it (faster, larger reproducer)")
    c.add_argument("-v", "--verbose", action="store_true", help="show Hypothesis's labelled draws for failures")
    c.add_argument("--verl-loss", default=None, metavar="[MODULE:]NAME",
                   help="--framework-loss verl --loss NAME: the policy loss registered in verl as NAME; MODULE is "
                        "imported first so that it can register NAME, e.g. --verl-loss ce_gppo or "
                        "--verl-loss my_pkg.losses:my_loss")
    c.add_argument("--framework-loss", default=None, choices=sorted(FRAMEWORK_LOSSES), metavar="FRAMEWORK",
                   help="instead of a port: a policy loss of FRAMEWORK (" + ", ".join(sorted(FRAMEWORK_LOSSES))
                        + "), called through that framework's own signature; --loss names which one "
                        "(default: cegppo's integration)")
    c.add_argument("--loss", default=None, metavar="[MODULE:]NAME",
                   help="with --framework-loss: which loss; "
                        + "; ".join(f"{k}: {v.losses}" for k, v in sorted(FRAMEWORK_LOSSES.items())))
    c.add_argument("--fused", action="store_true",
                   help="the function is a fused LM-head loss (signature of cegppo.torch.fused_linear_policy_loss): "
                        "run the S11.1 properties")
    c.add_argument("--device", default=None, metavar="DEVICE",
                   help="torch/jax: create the inputs on DEVICE (cpu, cuda, cuda:1, ...); the reference stays on "
                        "the CPU in float64 (default: the framework's default device)")
    c.add_argument("--advantages", choices=["both", "token", "sequence"], default="both",
                   help="advantage shapes the port takes: token = (B, T) as verl/OpenRLHF pass them, "
                        "sequence = (B,), both (default)")
    _add_convention_flags(c)
    c.add_argument("--json", default=None, metavar="FILE", type=Path,
                   help="also write the report as JSON to FILE (machine-readable results for CI)")
    c.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help=f"time limit per property: a port still running then is reported as hanging "
                        f"(default {DEFAULT_TIMEOUT:g}; 0 = no limit)")
    c.add_argument("-q", "--quiet", "--no-progress", action="store_true",
                   help="no progress lines on stderr (--no-progress as for cegppo-train)")
    lp = sub.add_parser("list", help="list the properties and their spec clauses")
    lp.add_argument("--objective", default="ce_gppo", choices=list(OBJECTIVES),
                    help="list the properties that check a port of this objective (default ce_gppo)")
    return ap


def _add_convention_flags(c: argparse.ArgumentParser) -> None:
    """The declared conventions of a port (docs/conformance.md, "Conventions")."""
    g = c.add_argument_group("declared conventions (docs/conformance.md, Conventions)")
    g.add_argument("--normalizer-eps", type=float, default=0.0, metavar="EPS",
                   help="the port divides sums by count + EPS (verl's old masked_mean: 1e-8)")
    g.add_argument("--dual-clip", choices=["optional", "required", "absent"], default="optional",
                   help="required: the port has no off switch for the dual clip (clip_ratio_c=None is never "
                        "passed); absent: it has no dual clip (clip_ratio_c is always None)")
    g.add_argument("--compute-dtype", choices=["float32"], default=None,
                   help="float32: float64 inputs are computed in float32 (compared at float32 tolerance)")
    g.add_argument("--agg", default=None, metavar="MODES",
                   help="the port takes loss_agg_mode=: a comma list of verl's modes (token-mean, token-sum, "
                        "seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm) or all")
    g.add_argument("--global-normalizers", action="store_true",
                   help="with --agg: the port also takes num_tokens= and num_seqs= (global normalizers)")


def _conventions(args: argparse.Namespace) -> Any:
    """The `Conventions` the flags declare (ValueError naming the flag's argument when it is bad)."""
    from ._conventions import conventions

    return conventions(normalizer_eps=args.normalizer_eps, dual_clip=args.dual_clip,
                       compute_dtype=args.compute_dtype, agg=args.agg, global_normalizers=args.global_normalizers,
                       objective=args.objective)


DEFAULT_TIMEOUT = 600.0  # cegppo.conformance.DEFAULT_TIMEOUT (not imported here: the parser imports nothing)


def _error(msg: str) -> int:
    print(f"cegppo-conformance: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default ``sys.argv[1:]``) and return the exit status.

    0: every property holds; 1: some property fails; 2: bad arguments, or the port or its framework
    cannot be loaded (argparse's own usage errors exit with 2 as well, by SystemExit).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    from . import FUSED_PROPERTIES, check, objective_properties, select

    properties = objective_properties(args.objective)
    if args.command == "list":
        for p in properties:
            print(f"{p.clause:<5} {p.name:<48} {p.doc}")
        if args.objective == "ce_gppo":
            print("fused LM-head losses (check --fused):")
            for p in FUSED_PROPERTIES:
                print(f"{p.clause:<5} {p.name:<48} {p.doc}")
        return 0
    if args.command == "check":  # argparse's usage errors (SystemExit 2)
        given = [x is not None for x in (args.port, args.verl_loss, args.framework_loss)]
        if sum(given) != 1:
            parser.error("check: give either a port MODULE:FUNCTION, --verl-loss NAME or --framework-loss "
                         "FRAMEWORK (exactly one)")
        if args.loss is not None and args.framework_loss is None:
            parser.error("--loss names a loss of --framework-loss FRAMEWORK; give --framework-loss too")
        if args.verl_loss is not None:
            args.framework_loss, args.loss = "verl", args.verl_loss
        if args.framework_loss is not None:
            wanted = FRAMEWORK_LOSSES[args.framework_loss].framework
            if args.framework not in (None, wanted):
                whose = "its" if args.verl_loss is None else args.framework_loss
                parser.error(f"{_loss_flag(args)}: {whose} losses are {wanted} functions, "
                             f"got --framework {args.framework}")
            args.framework = wanted
            if args.objective not in FRAMEWORK_LOSSES[args.framework_loss].objectives:
                parser.error(f"{_loss_flag(args)}: its ports compute "
                             f"{', '.join(FRAMEWORK_LOSSES[args.framework_loss].objectives)}, not --objective "
                             f"{args.objective}; check a port MODULE:FUNCTION of {args.objective} instead")
        elif args.framework is None:
            parser.error("the following arguments are required: --framework (with a port MODULE:FUNCTION)")
        if args.fused:
            if args.framework_loss is not None:
                parser.error("--fused checks a fused LM-head loss, not a framework's policy loss "
                             "(--verl-loss, --framework-loss)")
            if args.framework == "numpy":
                parser.error("--fused: fused heads are checked in torch or jax, got --framework numpy")
            if args.objective != "ce_gppo":
                parser.error(f"--fused checks CE-GPPO's fused LM head; --objective {args.objective} applies to "
                             "policy-loss ports only")
            if args.mask_dtype != "bool" or args.compile or args.advantages != "both" or args.device is not None:
                parser.error("--fused: --mask-dtype, --compile, --advantages and --device apply to policy-loss "
                             "ports only")
    if args.max_examples < 1:
        return _error(f"--max-examples must be >= 1, got {args.max_examples}")
    if args.timeout is not None and not args.timeout >= 0:
        return _error(f"--timeout must be >= 0 seconds (0: no limit), got {args.timeout:g}")
    timeout = DEFAULT_TIMEOUT if args.timeout is None else (args.timeout or None)
    if args.device is not None and args.framework == "numpy" and args.device != "cpu":
        return _error(f"--device {args.device}: NumPy ports run on the CPU (--device cpu or none)")
    if args.json is not None and not args.json.parent.is_dir():
        return _error(f"--json {args.json}: folder {args.json.parent} does not exist")
    try:
        select(args.only, FUSED_PROPERTIES if args.fused else properties)
    except ValueError as exc:
        return _error(f"--only: {exc}")
    try:
        importlib.import_module(args.framework)
    except ImportError as exc:
        return _error(f"--framework {args.framework}: cannot import {args.framework} ({exc})")
    if args.jit and args.framework != "jax":
        return _error(f"--jit is for --framework jax, got --framework {args.framework}")
    if args.framework == "jax" and not args.no_x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    entry = None if args.framework_loss is None else FRAMEWORK_LOSSES[args.framework_loss]
    try:
        port = load_port(args.port) if entry is None else entry.port(args.loss, args.objective)
    except Exception as exc:
        return _error(f"cannot load {args.port if entry is None else _loss_flag(args, value=True)}: "
                      f"{type(exc).__name__}: {exc}")
    name = args.port if entry is None else entry.port_name(args.framework_loss, args.loss, args.objective)

    try:
        target = _adapter(port, args, name)
    except ValueError as exc:  # a device that is not there, an option the adapter refuses
        return _error(str(exc))
    report = check(target, args.framework, max_examples=args.max_examples, seed=args.seed, only=args.only,
                   progress=None if args.quiet else _progress(len(select(args.only, FUSED_PROPERTIES if args.fused
                                                                         else properties))),
                   fail_fast=args.fail_fast, shrink=not args.no_shrink, timeout=timeout)
    if args.json is not None:  # first: a closed stdout (`| head`) must not cost the CI its results
        args.json.write_text(report.to_json() + "\n", encoding="utf-8")
    print(report.format(verbose=args.verbose))
    return 0 if report.ok else 1


def _loss_flag(args: argparse.Namespace, *, value: bool = False) -> str:
    """How the command line named the framework's loss (``--verl-loss`` is the alias of ``--framework-loss verl``)."""
    if args.verl_loss is not None:
        return f"--verl-loss {args.verl_loss}" if value else "--verl-loss"
    flag = f"--framework-loss {args.framework_loss}"
    return flag + (f" --loss {args.loss}" if value and args.loss is not None else "")


def _adapter(port: Any, args: argparse.Namespace, name: str) -> Any:
    """The adapter `check` runs: a fused head's or a port's, with the options of the command line."""
    from . import fused_adapter, port_adapter

    if args.fused:
        if not _conventions(args).is_spec:
            raise ValueError("--fused: the declared conventions (--normalizer-eps, --dual-clip, --compute-dtype, "
                             "--agg) apply to policy-loss ports only")
        return fused_adapter(port, args.framework, name=name, jit=args.jit)
    return port_adapter(port, args.framework, name=name, mask_dtype=args.mask_dtype, compile=args.compile,
                        jit=args.jit, device=args.device, advantages=args.advantages,
                        conventions=_conventions(args))


def _progress(total: int) -> Any:
    """A progress callback writing ``[i/n] STATUS id (examples, seconds)`` lines to stderr.

    On a terminal, one line per property as it completes. Where stderr is a file or a pipe (a CI log), the
    same lines at most one every few seconds (`cegppo._progress.ProgressLog`), the last property's always,
    with the number of failures so far (the report on stdout names them all).
    """
    from cegppo._progress import ProgressLog, is_terminal

    log = None if is_terminal(sys.stderr) else ProgressLog()
    done = [0, 0]  # properties completed, failed

    def show(r: Any) -> None:
        done[0] += 1
        done[1] += r.status == "FAIL"
        tail = f"{r.examples} examples, {r.seconds:.1f}s" if r.status != "SKIP" else r.reason
        line = f"[{done[0]}/{total}] {r.status} {r.id} ({tail})"
        if log is None:
            print(line, file=sys.stderr, flush=True)
        else:
            log.write(line + (f"; {done[1]} failed so far" if done[1] else ""), force=done[0] == total)

    return show


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
