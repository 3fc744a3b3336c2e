"""The frameworks' stock policy losses through the conformance kit: the measured table of docs/conformance.md.

    python tools/framework_verdicts.py run [NAME ...] [--max-examples N] [--out DIR]
    python tools/framework_verdicts.py table DIR

``run`` checks each named stock loss (all of `CHECKS` whose framework this venv has, when no NAME is
given) with its framework's conventions declared, through the ``cegppo-conformance`` command a user
would type, and writes its JSON report to ``DIR/<framework>-<loss>.json``. It needs a venv with the
framework: verl's and TRL's is the ``integrations`` session's, the others have a session each (``nox -s
openrlhf``, ``skyrl``, ``tunix``); ``nox -s <session> --install-only`` builds one, under ``.nox/``. The
``*-family-*`` checks run the frameworks' CISPO, SAPO and GSPO losses as ports of their member
(``--objective``, docs/spec.md S14).
``table`` reads every report in DIR and prints one markdown row per loss: passes, failures by defect
class, and each distinct diagnosis (the text behind the table's last column).

Standard library only; exits 1 when a check could not run (exit 2 of the kit: the framework or the
loss would not load), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["CHECKS", "main", "row"]

_VERL = ("--advantages", "token", "--mask-dtype", "float")  # verl's (B, T) advantages and float response_mask

CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # verl 0.9.1's registered clipped losses: no epsilon in token-mean, the dual clip off for clip_ratio_c=None
    "verl-vanilla": ("verl", ("--verl-loss", "vanilla", *_VERL)),
    "verl-clip_cov": ("verl", ("--verl-loss", "clip_cov", *_VERL)),
    "verl-kl_cov": ("verl", ("--verl-loss", "kl_cov", *_VERL)),
    "verl-cispo": ("verl", ("--verl-loss", "cispo", *_VERL)),
    "verl-geo_mean": ("verl", ("--verl-loss", "geo_mean", *_VERL)),
    "verl-gspo": ("verl", ("--verl-loss", "gspo", *_VERL)),
    # OpenRLHF 0.11.2's PPO loss: (B, T) advantages; the dual clip is a constructor argument (off for None)
    "openrlhf-PolicyLoss": ("openrlhf", ("--framework-loss", "openrlhf", "--loss", "PolicyLoss",
                                         "--advantages", "token")),
    # SkyRL 0.3.0: the ratio is exponentiated in float32 (safe_exp_delta); `regular` has no dual clip
    "skyrl-regular": ("skyrl", ("--framework-loss", "skyrl", "--loss", "regular", "--advantages", "token",
                                "--dual-clip", "absent", "--compute-dtype", "float32")),
    "skyrl-dual_clip": ("skyrl", ("--framework-loss", "skyrl", "--loss", "dual_clip", "--advantages", "token",
                                  "--compute-dtype", "float32")),
    # tunix 0.1.7: grpo casts to float32 and takes (B, T) or (B,) advantages; ppo computes in the input's dtype,
    # divides by count + 1e-8 (its masked_mean) and multiplies (B, T) advantages; both take epsilon_c
    "tunix-grpo": ("tunix", ("--framework-loss", "tunix", "--loss", "grpo", "--compute-dtype", "float32")),
    "tunix-ppo": ("tunix", ("--framework-loss", "tunix", "--loss", "ppo", "--advantages", "token",
                            "--normalizer-eps", "1e-8")),
    # The family's members (docs/spec.md S14), each checked as its own objective, in its paper aggregation unless
    # --agg says more; sapo is also asked for token-mean, the actor's default, which it ignores. The mask is bool:
    # verl's seq-mean-token-mean divides by n_i + 1e-8, which a bool or integer mask's count absorbs in float32.
    "verl-family-cispo": ("verl", ("--verl-loss", "cispo", "--objective", "cispo", "--advantages", "token")),
    "verl-family-sapo": ("verl", ("--verl-loss", "sapo", "--objective", "sapo", "--advantages", "token",
                                  "--agg", "token-mean,seq-mean-token-mean")),
    "verl-family-gspo": ("verl", ("--verl-loss", "gspo", "--objective", "gspo", "--advantages", "token")),
    # TRL 1.16.0's GRPOTrainer loss types, run on the kit's log-probs; their aggregation is the loss type's own
    "trl-family-cispo": ("trl", ("--framework-loss", "trl", "--loss", "cispo", "--objective", "cispo_cap")),
    "trl-family-sapo": ("trl", ("--framework-loss", "trl", "--loss", "sapo", "--objective", "sapo")),
    # SkyRL 0.3.0: (B, T) advantages scaled by its loss_reduction; cispo exponentiates the ratio in float32
    "skyrl-family-cispo": ("skyrl", ("--framework-loss", "skyrl", "--loss", "cispo", "--objective", "cispo",
                                     "--advantages", "token", "--compute-dtype", "float32")),
    "skyrl-family-sapo": ("skyrl", ("--framework-loss", "skyrl", "--loss", "sapo", "--objective", "sapo",
                                    "--advantages", "token")),
    "skyrl-family-gspo": ("skyrl", ("--framework-loss", "skyrl", "--loss", "gspo", "--objective", "gspo",
                                    "--advantages", "token")),
}
"""Report name -> (the framework's import name, the command-line arguments that check its stock loss)."""


def _available(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


def run(names: list[str], max_examples: int, out: Path) -> int:
    """Check each of `names` with the kit's command line; returns how many could not run."""
    beside = Path(sys.executable).parent / "cegppo-conformance"  # this venv's, whatever PATH says
    exe = str(beside) if beside.exists() else shutil.which("cegppo-conformance")
    if exe is None:
        print("cegppo-conformance is not on PATH: run this in a venv where cegppo is installed", file=sys.stderr)
        return len(names)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, name in enumerate(names, 1):
        framework, args = CHECKS[name]
        if not _available(framework):
            print(f"[{i}/{len(names)}] {name}: skipped, {framework} is not installed in this venv", flush=True)
            continue
        cmd = [exe, "check", *args, "--max-examples", str(max_examples), "--quiet", "--json", str(out / f"{name}.json")]
        print(f"[{i}/{len(names)}] {name}: {' '.join(['cegppo-conformance', *cmd[1:]])}", flush=True)
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode
        if code not in (0, 1):
            print(f"    could not run (exit {code})", flush=True)
            failed += 1
    return failed


def row(report: dict) -> tuple[str, list[str]]:
    """A report's markdown row (name, passes, failures by class) and its distinct diagnoses."""
    results = report["results"]
    passed = [r["id"] for r in results if r["status"] == "PASS"]
    failed = [r for r in results if r["status"] == "FAIL"]
    declared = [r["id"] for r in results if r["status"] == "DECLARED"]
    classes = Counter(r["defect_class"] for r in failed)
    by_class = ", ".join(f"{cls} ({n})" for cls, n in classes.most_common()) or "none"
    extra = f"; declared: {', '.join(declared)}" if declared else ""
    line = f"| `{report['implementation']}` | {len(passed)} | {by_class}{extra} |"
    diagnoses = sorted({f"{r['defect_class']}: {r['diagnosis']} [{r['id']}]" for r in failed})
    return line, diagnoses


def table(folder: Path) -> int:
    reports = sorted(folder.glob("*.json"))
    if not reports:
        print(f"no reports in {folder}", file=sys.stderr)
        return 1
    print("| loss | passes | failures by class (properties) |\n|---|---|---|")
    details = []
    for path in reports:
        line, diagnoses = row(json.loads(path.read_text()))
        print(line)
        details.append((path.stem, diagnoses))
    for name, diagnoses in details:
        print(f"\n{name}:")
        for d in diagnoses:
            print(f"  - {d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="framework_verdicts", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="check stock losses, one JSON report each")
    r.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(CHECKS)} (default: every available)")
    r.add_argument("--max-examples", type=int, default=10)
    r.add_argument("--out", type=Path, default=Path("build/framework-verdicts"))
    t = sub.add_parser("table", help="the markdown rows of a folder of reports")
    t.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    if args.command == "table":
        return table(args.folder)
    bad = [n for n in args.names if n not in CHECKS]
    if bad:
        ap.error(f"unknown NAME {', '.join(bad)}; choose from {', '.join(CHECKS)}")
    return 1 if run(args.names or list(CHECKS), args.max_examples, args.out) else 0


if __name__ == "__main__":
    sys.exit(main())
