"""`cegppo-train sweep`: the paper's entropy experiment, a grid of (beta_low, beta_high) on the same seeds.

Each grid point trains with the same config and seeds into OUT/bl{beta_low}_bh{beta_high}_s{seed}; then
OUT/sweep.png shows entropy, reward and the clip fractions side by side (mean over seeds) and
OUT/summary.json holds, per grid point, the mean of each key over the first and the last tenth of the run
(and the first step at which the seed-mean entropy is below ENTROPY_COLLAPSE); OUT/summary.md is that as a table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .plots import mean_curves, plot_sweep

__all__ = ["DEFAULT_GRID", "parse_grid", "run_sweep", "summary_table"]

DEFAULT_GRID = "0,0;0,1;0.5,1;1,1;1,0"
"""PPO (0,0); clip_high gradient only (0,1); the paper's 1.5B setting (0.5,1); GPPO (1,1); clip_low only (1,0)."""

ENTROPY_COLLAPSE = 0.5
"""Entropy (nats) below which the summary counts the policy as collapsed (the default starts at log 16 = 2.77)."""

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
        steps, ent = mean_curves(folders, "entropy")
        below = [st for st, h in zip(steps, ent, strict=True) if h < ENTROPY_COLLAPSE]
        entry["steps_to_entropy_collapse"] = below[0] if below else None
        summary[label] = entry
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_table(summary))
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """A Markdown table of a sweep's summary (means over seeds; first/last = first/last tenth of the steps)."""
    lines = [
        "| grid point | reward first -> last | accuracy last | entropy first -> last (min) "
        f"| first step with entropy < {ENTROPY_COLLAPSE:g} | clip_low / clip_high frac (last) "
        "| dH_clip_low / dH_clip_high (first) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, e in summary.items():
        lines.append(
            f"| {label} | {e['reward']['first']:.3f} -> {e['reward']['last']:.3f} | {e['accuracy']['last']:.3f} "
            f"| {e['entropy']['first']:.3f} -> {e['entropy']['last']:.3f} ({e['entropy']['min']:.3f}) "
            f"| {e['steps_to_entropy_collapse'] if e['steps_to_entropy_collapse'] is not None else 'never'} "
            f"| {e['clip_low_frac']['last']:.4f} / {e['clip_high_frac']['last']:.4f} "
            f"| {e['dH_clip_low']['first']:.2e} / {e['dH_clip_high']['first']:.2e} |"
        )
    return "\n".join(lines) + "\n"
