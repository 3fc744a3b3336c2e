"""The run folder (--out): what a fresh run may claim, what --resume may continue, and what the run leaves.

Nothing here trusts a bad state: a fresh run refuses a folder holding a previous run (unless --overwrite),
--resume passes over incomplete checkpoints (saying why) and refuses settings that would change the run
(unless --allow-config-change, which records the change), and OUT/config.json never lies about the run.
docs/trainer.md lists these rules with the error each refused state gets.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import TrainConfig

__all__ = ["RESUME_MAY_CHANGE", "claim_fresh_out", "config_record", "resume_checkpoint", "run_summary"]

RESUME_MAY_CHANGE = (
    "out", "resume", "overwrite", "allow_config_change", "total_steps", "stop_at_step", "save_every",
    "keep_checkpoints", "device", "threads", "progress", "plots", "tensorboard",
)  # fmt: skip
"""Settings that --resume accepts changed: they decide how long, where and how visibly the run goes on, not
what it computes (device aside: the same computation, rounded by another chip). docs/trainer.md lists them."""


def config_record(cfg: TrainConfig, loss_cfg: Any) -> dict[str, Any]:
    """What OUT/config.json holds: every setting, plus the resolved loss hyperparameters (CE-GPPO's, or the preset's
    family member's fields) under `cegppo`."""
    return {**vars(cfg), "cegppo": loss_cfg.as_dict()}


def claim_fresh_out(cfg: TrainConfig, out: Path) -> None:
    """A fresh run may only write where no previous run would be lost: refuse a used OUT unless --overwrite,
    which deletes that run's outputs (a warm start stays: it is reused only if made with the same settings)."""
    used = [name for name in ("config.json", "metrics.jsonl", "checkpoints") if (out / name).exists()]
    if not used:
        return
    if not cfg.overwrite:
        raise ValueError(
            f"--out={cfg.out!r} holds a previous run ({', '.join(used)}): add --resume to continue it, "
            "or --overwrite to delete it and start afresh"
        )
    for name in ("checkpoints", "plots", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "config.json", "summary.json"):
        (out / name).unlink(missing_ok=True)


def resume_checkpoint(cfg: TrainConfig, out: Path, loss_cfg: Any, announce: bool) -> Path | None:
    """The newest complete checkpoint of OUT (passing over incomplete ones, and saying why), after checking that
    the settings match the recorded ones; None when OUT has no checkpoint at all (the run starts at step 1).

    Raises ValueError, changing nothing, when checkpoints exist but none is complete, or a setting that changes
    the run differs from OUT/config.json without --allow-config-change.
    """
    latest, skipped = ckpt.resume_point(out)
    if latest is None and skipped:
        raise ValueError(f"--resume: no complete checkpoint in {out / 'checkpoints'} ({'; '.join(skipped)}); nothing was changed")
    if latest is None:
        if announce and (out / "metrics.jsonl").exists():
            print(f"--resume: {out} has no checkpoint yet; starting at step 1", file=sys.stderr)
        return None
    if announce:
        for note in skipped:
            print(f"--resume: passing over an incomplete checkpoint: {note}", file=sys.stderr)
    record_path = out / "config.json"
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    now = config_record(cfg, loss_cfg)
    if not isinstance(recorded, dict):
        if not cfg.allow_config_change:
            raise ValueError(f"--resume: {record_path} is missing or unreadable, so a changed setting could not be told; "
                             "add --allow-config-change to resume with the settings given")  # fmt: skip
        recorded = {}
    changed = {k: (recorded.get(k), v) for k, v in now.items() if k not in RESUME_MAY_CHANGE and recorded.get(k) != v}
    if changed and not cfg.allow_config_change:
        listed = ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in changed.items() if k != "cegppo")
        raise ValueError(
            f"--resume: settings differ from {record_path} ({listed or 'the loss hyperparameters'}), which would "
            "change the run; resume with the recorded values, or add --allow-config-change (the change is recorded)"
        )
    if changed and announce:
        history = [*recorded.get("resume_changes", []), {"from_checkpoint": latest.name, "changes": changed}]
        ckpt.write_text_atomic(record_path, json.dumps({**now, "resume_changes": history}, indent=2, default=str))
    return latest


def run_summary(out: Path, times: dict[str, float], warm_start_reused: bool | None) -> dict[str, Any]:
    """What OUT/summary.json holds: accuracy, reward and entropy over the first and last tenth of the whole run
    (at least 1, at most 10 steps), this call's phase times and where the plots are."""
    from .plots import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    n = max(1, min(10, len(rows) // 10))
    summary: dict[str, Any] = {"steps": len(rows), "window": n}
    for key in ("accuracy", "reward", "entropy"):
        vals = [float(r[key]) for r in rows]
        summary[key] = {"first": sum(vals[:n]) / n, "last": sum(vals[-n:]) / n} if vals else None
    summary["seconds"] = times
    summary["warm_start_reused"] = warm_start_reused
    summary["plots"] = str(out / "plots") if (out / "plots").is_dir() else None
    return summary
