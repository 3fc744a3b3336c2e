"""Command line: `cegppo-train [flags]` trains; `cegppo-train sweep [flags]` runs the beta grid.

Errors in the configuration or the inputs (a missing --model folder, a malformed --dataset line, an
impossible setting) print one line `cegppo-train: error: ...` and exit with status 2 before any training.
Ctrl-C exits with status 130, leaving only complete checkpoints and complete metrics lines.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import TrainConfig, add_arguments

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sweep"]:
            from .sweep import DEFAULT_GRID, parse_grid, run_sweep

            parser = argparse.ArgumentParser(prog="cegppo-train sweep", description=run_sweep.__doc__)
            parser.add_argument("--grid", default=DEFAULT_GRID, help=f"'beta_low,beta_high;...' (default: {DEFAULT_GRID})")
            parser.add_argument("--seeds", default="1", help="comma-separated seeds, each run for every grid point (default: 1)")
            add_arguments(parser, TrainConfig(out="runs/sweep", total_steps=100, save_every=0, plots=False))
            ns = vars(parser.parse_args(argv[1:]))
            grid, seeds = parse_grid(ns.pop("grid")), [int(s) for s in ns.pop("seeds").split(",")]
            run_sweep(TrainConfig(**ns), grid, seeds)
            print(f"sweep done: {ns['out']}/sweep.png, {ns['out']}/summary.json")
            return 0
        from .config import parse_args
        from .train import train

        cfg = parse_args(argv)
        rows = train(cfg)
        if rows and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
            first, last = rows[0], rows[-1]
            print(
                f"done: step {last['step']}, reward {first['reward']:.3f} -> {last['reward']:.3f}, "
                f"accuracy {first['accuracy']:.3f} -> {last['accuracy']:.3f}; outputs in {cfg.out}/"
            )
        return 0
    except ValueError as e:
        print(f"cegppo-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
