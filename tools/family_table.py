"""The family table of docs/experiments.md from the run folders of a `cegppo-train sweep`.

    python tools/family_table.py RUNS --rows "ppo;dapo;..." --seeds 1,2,3,4 [--baseline ppo] [--json FILE]

RUNS holds one folder per row and seed, RUNS/<row>_s<seed>/metrics.jsonl, as the sweep writes them. For each
row it prints the mean ± sd over seeds of each run's figures (`run_figures`: accuracy and pass@G over the first
and the last WINDOW steps, entropy over the whole run and the last WINDOW steps, the clip fractions and the mean
|F_t| of the tokens with a gradient over the whole run; the JSON also has the largest ratio's mean), then each row minus the baseline row, paired by seed (per
seed, then mean ± sd).
`--json` also writes every per-seed figure. Standard library only; exits 2 on bad arguments or a missing run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

__all__ = ["PAIRED", "WINDOW", "main", "paired_table", "row_table", "run_figures"]

WINDOW = 10
"""Steps in the "first" and "last" windows of a run (steps 1-10 and the last 10)."""

PAIRED = ("accuracy_last", "pass_at_g_last", "entropy_all", "entropy_last")
"""The figures whose difference from the baseline is tabulated per seed."""


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def run_figures(rows: list[dict[str, float]], window: int = WINDOW) -> dict[str, float]:
    """One run's figures from its metrics.jsonl rows: `<key>_first` / `<key>_last` the mean over the first / last
    `window` steps, `<key>_all` the mean over every step.

    `signal_weight_all` is the mean over the steps with a group with signal of grad_weight_abs_mean /
    groups_with_signal. grad_weight_abs_mean counts A = 0 tokens as 0, so it falls with the fraction of groups
    whose rewards all agree; divided by that fraction, it is the mean |F_t| over the tokens with A != 0 when every
    response has the same length and rewards are 0 or 1 (the default task: 3-token answers, exact match; a group
    with signal then has no sample at its mean, so no A = 0).
    """
    if len(rows) < window:
        raise ValueError(f"a run has {len(rows)} steps, fewer than the window of {window}")

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows]

    out = {}
    for key in ("accuracy", "pass_at_g", "entropy"):
        out[f"{key}_first"], out[f"{key}_last"] = _mean(col(key)[:window]), _mean(col(key)[-window:])
    for key in ("entropy", "clip_low_frac", "clip_high_frac", "grad_weight_abs_mean", "ratio_max"):
        out[f"{key}_all"] = _mean(col(key))
    with_signal = [r for r in rows if float(r["groups_with_signal"]) > 0]
    ratios = [float(r["grad_weight_abs_mean"]) / float(r["groups_with_signal"]) for r in with_signal]
    out["signal_weight_all"] = _mean(ratios) if ratios else 0.0
    return out


def _pm(xs: list[float], fmt: str) -> str:
    """'mean ± sd' (sample sd; 0 for one value)."""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{_mean(xs):{fmt}} ± {sd:{fmt.lstrip('+')}}"


def row_table(figures: dict[str, list[dict[str, float]]]) -> str:
    """The main table: one line per row, mean ± sd over its seeds."""
    lines = [
        "| row | accuracy first 10 -> last 10 | pass@G first 10 -> last 10 | entropy, mean over the run "
        "| entropy, last 10 | clip_low / clip_high (whole run) | mean abs F_t where A != 0 (whole run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in figures.items():

        def pm(key: str, fmt: str = ".3f", runs: list[dict[str, float]] = runs) -> str:
            return _pm([r[key] for r in runs], fmt)

        lines.append(
            f"| {name} | {pm('accuracy_first')} -> {pm('accuracy_last')} | {pm('pass_at_g_first')} -> "
            f"{pm('pass_at_g_last')} | {pm('entropy_all')} | {pm('entropy_last')} "
            f"| {pm('clip_low_frac_all', '.4f')} / {pm('clip_high_frac_all', '.4f')} | {pm('signal_weight_all')} |"
        )
    return "\n".join(lines) + "\n"


def paired_table(figures: dict[str, list[dict[str, float]]], baseline: str) -> str:
    """Each row minus `baseline` for the PAIRED figures: the per-seed differences, then their mean ± sd."""
    base = figures[baseline]
    lines = ["| row minus " + baseline + " | " + " | ".join(PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
    for name, runs in figures.items():
        if name == baseline:
            continue
        cells = []
        for key in PAIRED:
            diffs = [r[key] - b[key] for r, b in zip(runs, base, strict=True)]
            cells.append(" / ".join(f"{d:+.3f}" for d in diffs) + f" ({_pm(diffs, '+.3f')})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _read_rows(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/family_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the sweep's --out folder")
    parser.add_argument("--rows", required=True, help="';'-separated row names (the sweep's grid points)")
    parser.add_argument("--seeds", required=True, help="comma-separated seeds")
    parser.add_argument("--baseline", default="ppo", help="the row the paired differences are taken from")
    parser.add_argument("--json", type=Path, help="also write every per-seed figure to this file")
    args = parser.parse_args(argv)
    names = [r.strip() for r in args.rows.split(";") if r.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={args.seeds!r}: expected comma-separated integers")
    if args.baseline not in names:
        parser.error(f"--baseline={args.baseline!r} is not one of --rows {names}")
    missing = [f"{r}_s{s}" for r in names for s in seeds if not (args.runs / f"{r}_s{s}" / "metrics.jsonl").is_file()]
    if missing:
        parser.error(f"no metrics.jsonl in {args.runs} for {', '.join(missing)}")
    figures = {r: [run_figures(_read_rows(args.runs / f"{r}_s{s}" / "metrics.jsonl")) for s in seeds] for r in names}
    print(row_table(figures))
    print(paired_table(figures, args.baseline))
    if args.json is not None:
        record = {"seeds": seeds, "window": WINDOW, "rows": {r: dict(zip(map(str, seeds), f, strict=True)) for r, f in figures.items()}}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
