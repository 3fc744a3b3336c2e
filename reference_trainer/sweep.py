"""`cegppo-train sweep`: the paper's entropy experiment, a grid of (beta_low, beta_high) on the same seeds.

Each grid point trains with the same config and seeds into OUT/bl{beta_low}_bh{beta_high}_s{seed}; then
OUT/sweep.png shows entropy, reward and the clip fractions side by side (mean over seeds) and
OUT/summary.json holds, per grid point, the mean of each key over the first and the last tenth of the run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .plots import mean_curves, plot_sweep

__all__ = ["DEFAULT_GRID", "parse_grid", "run_sweep"]

DEFAULT_GRID = "0,0;0,1;0.5,1;1,1;1,0"
"""PPO (0,0); clip_high gradient only (0,1); the paper's 1.5B setting (0.5,1); GPPO (1,1); clip_low only (1,0)."""

SUMMARY_KEYS = ("entropy", "reward", "accuracy", "clip_low_frac", "clip_high_frac", "dH_clip_low", "dH_clip_high")


def parse_grid(text: str) -> list[tuple[float, float]]:
    """'bl,bh;bl,bh;...' -> [(beta_low, beta_high), ...]; ValueError on a malformed entry."""
    grid = []
    for item in text.replace(" ", "").split(";"):
        if not item:
            continue
        try:
            lo, hi = (float(x) for x in item.split(","))
        except ValueError:
            raise ValueError(f"--grid: {item!r} is not 'beta_low,beta_high'") from None
        if lo < 0 or hi < 0:
            raise ValueError(f"--grid: betas must be >= 0, got {item!r}")
        grid.append((lo, hi))
    if not grid:
        raise ValueError("--grid: empty")
    return grid


def _label(lo: float, hi: float) -> str:
    return f"bl{lo:g}_bh{hi:g}"


def run_sweep(base: TrainConfig, grid: list[tuple[float, float]], seeds: list[int]) -> dict[str, Any]:
    """Train every (grid point, seed) in turn (skipping runs already complete), then plot and summarise."""
    from .train import train

    out = Path(base.out)
    configs = []
    for lo, hi in grid:
        for seed in seeds:
            cfg = dataclasses.replace(base, beta_low=lo, beta_high=hi, seed=seed, out=str(out / f"{_label(lo, hi)}_s{seed}"))
            cfg.check()  # every grid point is valid before the first one starts
            configs.append(cfg)
    for cfg in configs:
        done = Path(cfg.out) / "checkpoints" / f"step_{cfg.total_steps:06d}"
        if done.is_dir():
            continue
        print(f"sweep: beta_low={cfg.beta_low} beta_high={cfg.beta_high} seed={cfg.seed} -> {cfg.out}", flush=True)
        train(dataclasses.replace(cfg, resume=True))  # resume a grid point that was interrupted
    runs = {f"β_low={lo:g}, β_high={hi:g}": [out / f"{_label(lo, hi)}_s{s}" for s in seeds] for lo, hi in grid}
    plot_sweep(runs, out / "sweep.png")
    plot_sweep(runs, out / "sweep_dH.png", keys=("dH_clip_low", "dH_clip_high", "dH_inside", "dH_total"))
    summary: dict[str, Any] = {}
    for label, folders in runs.items():
        entry = {}
        for key in SUMMARY_KEYS:
            _, ys = mean_curves(folders, key)
            tenth = max(1, len(ys) // 10)
            entry[key] = {"first": sum(ys[:tenth]) / tenth, "last": sum(ys[-tenth:]) / tenth, "min": min(ys), "max": max(ys)}
        summary[label] = entry
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
