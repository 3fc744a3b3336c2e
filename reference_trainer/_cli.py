"""Command line: `cegppo-train [flags]` trains; `cegppo-train sweep [flags]` runs a grid of settings on several
seeds; `cegppo-train compare [flags]` runs PPO and --preset on one seed and draws both on one figure.

Errors in the configuration or the inputs (a missing --model folder, a malformed --dataset line, an
impossible setting) print one line `cegppo-train: error: ...` and exit with status 2 before any training.
A run that diverges (a non-finite loss or gradient norm) stops before applying that update, prints
`cegppo-train: error: training diverged ...` and exits with status 3; its checkpoints and metrics lines stay.
Ctrl-C exits with status 130, leaving only complete checkpoints and complete metrics lines.
`cegppo-train --version` prints the version of cegppo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import cegppo
import tyro

from .config import TrainConfig
from .sweep import DEFAULT_GRID

__all__ = ["main"]


@dataclasses.dataclass
class SweepArgs:
    """`cegppo-train sweep`: every grid point on every seed, then one figure and a summary table."""

    config: Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]
    """The settings of every run, as for `cegppo-train` (same flag names: --lr, not --config.lr)."""
    grid: str = DEFAULT_GRID
    """'beta_low,beta_high' pairs and preset names, ';'-separated."""
    seeds: str = "1"
    """Comma-separated seeds, each run for every grid point."""


def _sweep(command: str, argv: list[str]) -> int:
    """`sweep`: every grid point on every seed; `compare`: PPO against --preset on --seed, on one figure."""
    from .config import parse_args
    from .sweep import compare_grid, parse_grid, run_sweep

    base = TrainConfig(out=f"runs/{command}", save_every=0, plots=False)
    if command == "sweep":
        args = tyro.cli(SweepArgs, args=argv, default=SweepArgs(config=base), prog="cegppo-train sweep", description=run_sweep.__doc__)
        cfg, grid, seeds = args.config, parse_grid(args.grid), _seeds(args.seeds)
    else:
        cfg = parse_args(argv, defaults=base, prog="cegppo-train compare")
        grid, seeds = compare_grid(cfg.preset), [cfg.seed]
    run_sweep(cfg, grid, seeds)
    print(f"{command} done: {cfg.out}/sweep.png (entropy, accuracy, clip fractions), sweep_dH.png, summary.md")
    return 0


def _seeds(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; ValueError naming --seeds otherwise."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds={text!r}: expected comma-separated integers") from None
    if not seeds:
        raise ValueError("--seeds: empty")
    return seeds


def _final_report(out: Path, step: int) -> str:
    """The end of a run in a few lines: accuracy and entropy first -> last, phase times, where the plots are."""
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    t = s["seconds"]
    n = s["window"]
    warm = "none" if s["warm_start_reused"] is None else ("reused" if s["warm_start_reused"] else f"{t['warm_start_s']:.0f} s")
    lines = [
        f"done: step {step}; mean of the first / last {n} steps:",
        f"  accuracy {s['accuracy']['first']:.3f} -> {s['accuracy']['last']:.3f}",
        f"  entropy  {s['entropy']['first']:.3f} -> {s['entropy']['last']:.3f} nats",
        f"  reward   {s['reward']['first']:.3f} -> {s['reward']['last']:.3f}",
        f"time: warm start {warm}, RL {t['rl_s']:.0f} s, plots {t['plots_s']:.0f} s",
        f"outputs in {out}/" + (f" (plots: {s['plots']}/dynamics.png and more)" if s["plots"] else ""),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv:  # before tyro, which knows only TrainConfig's fields; as argparse's, wherever it is
        print(f"cegppo-train {cegppo.__version__}")
        return 0
    try:
        if argv[:1] in (["sweep"], ["compare"]):
            return _sweep(argv[0], argv[1:])
        from .config import parse_args
        from .train import train

        cfg = parse_args(argv)
        rows = train(cfg)
        if rows and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
            print(_final_report(Path(cfg.out), int(rows[-1]["step"])))
        return 0
    except ValueError as e:
        print(f"cegppo-train: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from .train import TrainingDiverged

        if not isinstance(e, TrainingDiverged):
            raise
        print(f"cegppo-train: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
