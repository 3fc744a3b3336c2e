"""`cegppo-train sweep`: the paper's entropy experiment, a grid of settings on the same seeds.

A grid point is a pair `beta_low,beta_high` (over the base preset) or a preset name (`ppo`, `dapo`, ..., and the
family's `cispo`, `sapo`, `gspo`).
Each grid point trains with the same config and seeds into OUT/{point}_s{seed} (point = bl{beta_low}_bh{beta_high}
or the preset's name), every point of one seed starting from the same warm start (OUT/warm_start_s{seed},
made once); then OUT/sweep.png shows entropy, accuracy and the clip fractions side by side (mean over seeds) and
OUT/summary.json holds, per grid point, the mean of each key over the first and the last tenth of the run
(and the first step at which the seed-mean entropy is below ENTROPY_COLLAPSE); OUT/summary.md is that as a table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cegppo
from cegppo import presets

from .config import OVERRIDE_FIELDS, TrainConfig, cegppo_config
from .plots import plot_sweep, read_metrics, smooth

__all__ = ["DEFAULT_GRID", "GridPoint", "compare_grid", "parse_grid", "run_sweep", "summarise_runs", "summary_table"]

DEFAULT_GRID = "ppo;dapo;0,1;1,0;ce_gppo_1p5b;ce_gppo_7b;gppo"
"""PPO (betas 0/0); DAPO clip-higher (eps_high 0.28, betas 0/0); clip_high gradient only (0,1); clip_low gradient
only (1,0); the paper's 1.5B (0.5/1) and 7B (0.75/1) settings; GPPO (1/1)."""


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One setting of a sweep: its folder name, its label in plots and tables, the TrainConfig fields it sets."""

    name: str
    label: str
    overrides: tuple[tuple[str, Any], ...]

    def config(self, base: TrainConfig, seed: int, out: Path) -> TrainConfig:
        """The run of this point on `seed`, with the warm start that every point of the seed shares."""
        return dataclasses.replace(
            base, **dict(self.overrides), seed=seed, out=str(out / f"{self.name}_s{seed}"),
            warm_start_dir=str(out / f"warm_start_s{seed}"),
        )  # fmt: skip

HALF_LIFE_FRACTION = 0.5
"""The summary's `entropy_half_step`: the first step at which a run's entropy (smoothed over a tenth of the run)
falls below this fraction of its first-tenth mean."""

SUMMARY_KEYS = (
    "entropy", "reward", "accuracy", "clip_low_frac", "clip_high_frac",
    "dH_clip_low", "dH_clip_high", "dH_inside", "dH_total", "pass_at_g", "grad_weight_abs_mean",
)  # fmt: skip


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd


def summarise_runs(folders: list[Path]) -> dict[str, Any]:
    """Per key: the mean and sd over seeds of each run's first-tenth, last-tenth and whole-run means, and the
    per-seed values; plus `entropy_half_step` (HALF_LIFE_FRACTION) per seed (None where it never falls that far)."""
    runs = [read_metrics(Path(f) / "metrics.jsonl") for f in folders]
    runs = [r for r in runs if r]
    entry: dict[str, Any] = {"seeds": len(runs)}
    if not runs:
        return entry
    for key in SUMMARY_KEYS:
        per: dict[str, list[float]] = {"first": [], "last": [], "all": []}
        for rows in runs:
            ys = [float(r.get(key, 0.0)) for r in rows]
            tenth = max(1, len(ys) // 10)
            per["first"].append(sum(ys[:tenth]) / tenth)
            per["last"].append(sum(ys[-tenth:]) / tenth)
            per["all"].append(sum(ys) / len(ys))
        entry[key] = {}
        for part, xs in per.items():
            m, sd = _mean_sd(xs)
            entry[key].update({part: m, f"{part}_sd": sd, f"{part}_per_seed": xs})
    halves = []
    for rows in runs:
        ys = [float(r["entropy"]) for r in rows]
        tenth = max(1, len(ys) // 10)
        start, smoothed = sum(ys[:tenth]) / tenth, smooth(ys, tenth)
        halves.append(next((int(r["step"]) for r, h in zip(rows, smoothed, strict=True) if h < HALF_LIFE_FRACTION * start), None))
    entry["entropy_half_step_per_seed"] = halves
    return entry


def parse_grid(text: str) -> list[GridPoint]:
    """'bl,bh;PRESET;...' -> grid points; ValueError naming a malformed entry."""
    grid = []
    for item in text.replace(" ", "").split(";"):
        if not item:
            continue
        if item in presets.PRESETS:
            label = f"{item} ({_fields_label(presets.get(item))})"
            grid.append(GridPoint(item, label, (("preset", item), *((k, None) for k in OVERRIDE_FIELDS))))
            continue
        try:
            lo, hi = (float(x) for x in item.split(","))
        except ValueError:
            raise ValueError(f"--grid: {item!r} is neither 'beta_low,beta_high' nor a preset ({sorted(presets.PRESETS)})") from None
        if lo < 0 or hi < 0:
            raise ValueError(f"--grid: betas must be >= 0, got {item!r}")
        grid.append(GridPoint(f"bl{lo:g}_bh{hi:g}", f"β_low={lo:g}, β_high={hi:g}", (("beta_low", lo), ("beta_high", hi))))
    if not grid:
        raise ValueError("--grid: empty")
    return grid


def _fields_label(cfg: presets.PresetConfig) -> str:
    """A preset's numbers in a grid label: CE-GPPO's betas and eps ('β 0.5/1, ε 0.2/0.2'), or a family member's
    fields by name ('tau_pos 1, tau_neg 1.05'), which have no betas."""
    if isinstance(cfg, cegppo.CEGPPOConfig):
        return f"β {cfg.beta_low:g}/{cfg.beta_high:g}, ε {cfg.eps_low:g}/{cfg.eps_high:g}"
    return ", ".join(f"{k} {v:g}" for k, v in cfg.as_dict().items())


def compare_grid(preset: str) -> list[GridPoint]:
    """`cegppo-train compare`: PPO against `preset` (the run's own, by default the paper's 1.5B setting)."""
    return parse_grid(f"ppo;{preset}")


def run_sweep(base: TrainConfig, grid: list[GridPoint], seeds: list[int]) -> dict[str, Any]:
    """Train every (grid point, seed) in turn (skipping runs already complete), then plot and summarise."""
    from .train import train

    out = Path(base.out)
    configs = []
    for point in grid:
        for seed in seeds:
            cfg = point.config(base, seed, out)
            cfg.check()  # every grid point is valid before the first one starts
            configs.append(cfg)
    for cfg in configs:
        done = Path(cfg.out) / "checkpoints" / f"step_{cfg.total_steps:06d}"
        if done.is_dir():
            continue
        fields = " ".join(f"{k}={v:g}" for k, v in cegppo_config(cfg).as_dict().items() if v is not None)
        print(f"sweep: {cfg.preset} {fields} seed={cfg.seed} -> {cfg.out}", flush=True)
        train(dataclasses.replace(cfg, resume=True))  # resume a grid point that was interrupted
    runs = {point.label: [out / f"{point.name}_s{s}" for s in seeds] for point in grid}
    plot_sweep(runs, out / "sweep.png")
    plot_sweep(runs, out / "sweep_dH.png", keys=("dH_clip_low", "dH_clip_high", "dH_inside", "dH_total"))
    plot_sweep(runs, out / "sweep_reward.png", keys=("reward", "groups_with_signal", "approx_kl", "ratio_max"))
    summary = {label: summarise_runs(folders) for label, folders in runs.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_table(summary))
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """A Markdown table of a sweep's summary: mean ± sd over seeds; first/last = the first/last tenth of each run."""

    def pm(e: dict[str, Any], key: str, part: str, fmt: str = ".3f") -> str:
        return f"{e[key][part]:{fmt}} ± {e[key][part + '_sd']:{fmt}}"

    lines = [
        "| grid point | seeds | accuracy first -> last | entropy first -> last | entropy halved at step "
        "| clip_low / clip_high frac (all) | dH_clip_low / dH_clip_high (first) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, e in summary.items():
        if not e.get("seeds"):
            continue
        halves = ", ".join("never" if h is None else str(h) for h in e["entropy_half_step_per_seed"])
        lines.append(
            f"| {label} | {e['seeds']} | {pm(e, 'accuracy', 'first')} -> {pm(e, 'accuracy', 'last')} "
            f"| {pm(e, 'entropy', 'first')} -> {pm(e, 'entropy', 'last')} | {halves} "
            f"| {e['clip_low_frac']['all']:.4f} / {e['clip_high_frac']['all']:.4f} "
            f"| {pm(e, 'dH_clip_low', 'first', '.2e')} / {pm(e, 'dH_clip_high', 'first', '.2e')} |"
        )
    return "\n".join(lines) + "\n"
