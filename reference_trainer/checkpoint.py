"""Atomic checkpoints and the metrics log.

Layout under OUT/checkpoints/:

    step_000040/            a complete checkpoint, also a valid `--model` folder:
        model.safetensors   weights (save_pretrained, safetensors)
        config.json, generation_config.json, tokenizer files
        trainer_state.pt    optimizer state, step, every RNG state (torch.load(weights_only=True) safe)
    latest                  text file naming the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, which is then renamed into place (rename of a
folder to a new name is atomic on POSIX), and only then is `latest` replaced (write + os.replace).
A crash at any instant leaves `latest` pointing at a complete checkpoint; stray temporary folders
are ignored and cleaned up by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "checkpoint_problem",
    "latest_checkpoint",
    "load_trainer_state",
    "resume_point",
    "save_checkpoint",
    "truncate_metrics",
    "write_text_atomic",
]

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "model.safetensors"


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file, fsync and os.replace: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, delete all but the `keep` newest."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    from .policy import quiet_hf_progress

    with quiet_hf_progress():  # no "Writing model shards" bar in the middle of the training bar
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    final = root / name
    if final.exists():  # left by a run that died before updating `latest`: not the current checkpoint
        trash = root / f".trash_{name}_{os.getpid()}"
        os.rename(final, trash)
        shutil.rmtree(trash)
    os.rename(tmp, final)
    write_text_atomic(root / "latest", name + "\n")
    for old in sorted(p for p in root.iterdir() if p.name.startswith("step_"))[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for stray in root.iterdir():  # temporary folders of killed saves
        if stray.name.startswith((".tmp_step_", ".trash_step_")) and stray != tmp:
            shutil.rmtree(stray, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    """The folder `latest` names, or None when there is no complete checkpoint."""
    pointer = out / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = out / "checkpoints" / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (missing, header unreadable, shorter or longer than its header says)."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                return f"{path} is truncated (its header is cut)"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path} is not a readable safetensors file ({type(e).__name__})"
    if 8 + n + end != size:
        return f"{path} is truncated ({size} bytes, its header says {8 + n + end})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete.

    Checks that every file is there and whole without loading it: the weights against their safetensors header,
    trainer_state.pt (a zip archive) against the CRC of every member.
    """
    if not path.is_dir():
        return f"{path} does not exist"
    for name in ("config.json", STATE_FILE):
        if not (path / name).is_file():
            return f"{path / name} is missing"
    problem = _safetensors_problem(path / WEIGHTS_FILE)
    if problem is not None:
        return problem
    try:
        with zipfile.ZipFile(path / STATE_FILE) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        return f"{path / STATE_FILE} is not a complete torch.save archive ({e})"
    if bad is not None:
        return f"{path / STATE_FILE} is corrupt (member {bad} fails its CRC)"
    return None


def resume_point(out: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint to resume from, and why each newer candidate was passed over.

    Candidates are the checkpoint `latest` names, then the older step folders from the newest down; a folder
    newer than `latest` was never made current (its save did not finish) and is not a candidate.
    """
    root = out / "checkpoints"
    pointer = root / "latest"
    folders = sorted((p for p in root.iterdir() if p.name.startswith("step_")), reverse=True) if root.is_dir() else []
    skipped: list[str] = []
    newest = None
    if pointer.is_file():
        newest = root / pointer.read_text().strip()
    elif folders:
        skipped.append(f"{pointer} is missing")
    candidates = [newest] if newest is not None else []
    candidates += [p for p in folders if newest is None or p.name < newest.name]
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer_state.pt of a checkpoint (tensors, numbers, strings and dicts only)."""
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the complete metrics.jsonl lines with step <= last_step (atomically): the resume point."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(row, dict) and row.get("step", last_step + 1) <= last_step:
            kept.append(line)
    write_text_atomic(path, "".join(x + "\n" for x in kept))
