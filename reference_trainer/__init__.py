"""cegppo.trainer: the reference CE-GPPO trainer for Hugging Face causal LMs (`cegppo-train`, docs/trainer.md).

    from cegppo.trainer import TrainConfig, train
    rows = train(TrainConfig(out="runs/demo", total_steps=50))   # list of metrics dicts

Modules, in reading order: `config` (every knob), `tasks` (prompts, rewards, the imperfect teacher), `policy`
(model and tokenizer), `warm_start` (the supervised phase before RL), `rollout` (sampling and scoring), `train`
(the loop and its steps), `metrics` (what a step logs), `run_folder` (fresh runs, resume rules), `checkpoint`,
`plots`, `sweep`.
"""

from __future__ import annotations

from cegppo._extras import require

# First, before the imports below: a missing package is named with the extra that installs it.
require(__name__, "trainer", ["torch", "transformers", "safetensors", "tqdm", "matplotlib", "tyro", "docstring_parser"])

from .config import TrainConfig, cegppo_config
from .tasks import Task, addition_task, dataset_task, extract_math_answer, load_jsonl, math_answer_reward
from .train import METRICS, train

__all__ = [
    "METRICS",
    "Task",
    "TrainConfig",
    "addition_task",
    "cegppo_config",
    "dataset_task",
    "extract_math_answer",
    "load_jsonl",
    "math_answer_reward",
    "train",
]
