"""PNG plots of a run (OUT/plots/*.png) and of a sweep (side-by-side curves), with matplotlib's Agg backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["mean_curves", "plot_run", "plot_sweep", "read_metrics", "smooth"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a metrics.jsonl (a line cut by a kill is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (the first points average what exists)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(out: Path) -> list[Path]:
    """dynamics.png (entropy and accuracy on one figure), reward.png (reward, accuracy), entropy.png,
    regions.png (token fractions), entropy_change.png (dH by region)."""
    plt = _pyplot()
    rows = read_metrics(Path(out) / "metrics.jsonl")
    folder = Path(out) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    win = max(1, len(rows) // 20)
    panels = {
        "reward": [("reward", "reward"), ("accuracy", "accuracy")],
        "entropy": [("entropy", "token entropy (nats)")],
        "regions": [(k, k) for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac")],
        "entropy_change": [(f"dH_{k}", f"dH {k}") for k in ("clip_low", "clip_high", "inside")] + [("dH_total", "dH total")],
    }
    written = []
    for name, series in panels.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in series:
            ys = [r.get(key, 0.0) for r in rows]
            line = ax.plot(steps, ys, alpha=0.25)[0]
            ax.plot(steps, smooth(ys, win), color=line.get_color(), label=label)
        ax.set_xlabel("step")
        ax.set_title(f"{name} ({Path(out).name})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    written.append(_plot_dynamics(plt, rows, folder / "dynamics.png", f"{Path(out).name}", win))
    return written


def _plot_dynamics(plt: Any, rows: list[dict[str, Any]], path: Path, title: str, win: int) -> Path:
    """Entropy (left axis) and accuracy (right axis) against the step: the run's dynamics at a glance."""
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    twin = ax.twinx()
    for axis, key, color, label in ((ax, "entropy", "tab:blue", "token entropy (nats)"), (twin, "accuracy", "tab:orange", "accuracy")):
        ys = [r.get(key, 0.0) for r in rows]
        axis.plot(steps, ys, color=color, alpha=0.2)
        axis.plot(steps, smooth(ys, win), color=color, label=label)
        axis.set_ylabel(label, color=color)
    twin.set_ylim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("step")
    ax.set_title(f"entropy and accuracy ({title})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_curves(folders: list[Path], key: str) -> tuple[list[int], list[float]]:
    """Step-wise mean of `key` over several runs (up to the shortest run)."""
    runs = [read_metrics(Path(f) / "metrics.jsonl") for f in folders]
    runs = [r for r in runs if r]
    if not runs:
        return [], []
    n = min(len(r) for r in runs)
    steps = [runs[0][i]["step"] for i in range(n)]
    return steps, [sum(r[i].get(key, 0.0) for r in runs) / len(runs) for i in range(n)]


def plot_sweep(
    runs: dict[str, list[Path]],
    path: Path,
    keys: tuple[str, ...] = ("entropy", "accuracy", "clip_high_frac", "clip_low_frac"),
) -> Path:
    """One panel per metric, one curve per label (mean over its run folders, i.e. seeds), smoothed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6))
    for label, folders in runs.items():
        for ax, key in zip(axes, keys, strict=True):
            steps, ys = mean_curves(folders, key)
            if steps:
                ax.plot(steps, smooth(ys, max(1, len(ys) // 15)), label=label)
    for ax, key in zip(axes, keys, strict=True):
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
