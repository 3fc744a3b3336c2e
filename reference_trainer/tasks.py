"""Tasks: prompts with a verifiable answer, and the reward functions that check responses.

A reward is a plain function `reward(response: str, answer: str) -> float` in [0, 1]; replace it by
building a `Task` with your own. Prompts are drawn with a `torch.Generator` (its state is part of
every checkpoint), so a resumed run sees the same prompts as an uninterrupted one.

The embedded default, `addition_task`, is built for CE-GPPO's regime (docs/trainer.md, "The default task"):

- prompt `a+b=` with both operands zero-padded to `digits` characters (`07+35=`), answer the sum
  zero-padded to digits + 1 characters (`042`); the response is exactly that many characters long;
- reward `exact` (1 for the exact answer, else 0, as math RL rewards a final answer) or `partial`
  (fraction of answer positions right: `08` vs `07` -> 0.5); accuracy = exact match;
- a teacher that drops each carry with probability `carry_drop` (`carry_dropping_sum`), for the warm
  start (cegppo.trainer.warm_start): the warm-started model is confident where no carry is needed and
  gives the right digit after a carry only a minority probability, the tail that RL has to raise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "Task",
    "addition_reward",
    "addition_task",
    "carry_dropping_sum",
    "dataset_task",
    "exact_match",
    "extract_math_answer",
    "load_jsonl",
    "math_answer_reward",
    "reference_answer",
]

Reward = Callable[[str, str], float]


@dataclass(frozen=True)
class Task:
    """A source of (prompt, answer) pairs with its reward, accuracy test and response budget."""

    name: str
    """Short name (logged)."""
    sample: Callable[[int, torch.Generator], list[tuple[str, str]]]
    """sample(n, generator) -> n (prompt, answer) pairs, drawn with `generator` only."""
    reward: Reward
    """reward(response, answer) -> float in [0, 1]."""
    correct: Callable[[str, str], bool]
    """correct(response, answer) -> bool: the accuracy metric."""
    max_new_tokens: int
    """Default response length limit."""
    alphabet: str
    """Every character prompts and answers use (the tiny default tokenizer is built over it)."""
    teacher: Callable[[int, torch.Generator], list[tuple[str, str]]] | None = None
    """teacher(n, generator) -> n (prompt, demonstration) pairs of an imperfect teacher, for the warm start
    (None: the task has no teacher and RL starts from the model as it is)."""


# --- the embedded addition task --------------------------------------------------------------------------------------


def addition_reward(response: str, answer: str) -> float:
    """Fraction of answer positions that the response gets right: sum_i [response_i == answer_i] / len(answer)."""
    if not answer:
        return 0.0
    return sum(r == a for r, a in zip(response, answer, strict=False)) / len(answer)


def exact_match(response: str, answer: str) -> bool:
    """response.strip() == answer.strip()."""
    return response.strip() == answer.strip()


def carry_dropping_sum(a: int, b: int, digits: int, drops: list[bool]) -> str:
    """a + b written digit by digit from the right, zero-padded to digits + 1 characters, where the carry out of
    digit i is lost when drops[i] (a schoolchild's slip: 58+67 with the first carry dropped gives '115').

    With no drop this is the true sum; every dropped carry that was 1 makes the next digit (and maybe more) wrong.
    """
    out, carry = [], 0
    for i in range(digits):
        s = (a // 10**i) % 10 + (b // 10**i) % 10 + carry
        out.append(str(s % 10))
        carry = 0 if drops[i] else s // 10
    out.append(str(carry))
    return "".join(reversed(out))


def exact_reward(response: str, answer: str) -> float:
    """1.0 for the exact answer (exact_match), else 0.0."""
    return float(exact_match(response, answer))


ADDITION_REWARDS: dict[str, Reward] = {"exact": exact_reward, "partial": addition_reward}
"""Rewards of the addition task by name: `exact` (1 for the exact answer, else 0) and `partial` (digits right)."""


def _addition_prompt(a: int, b: int, digits: int) -> str:
    """'a+b=' with both operands zero-padded to `digits` characters ('07+35='): every digit has a fixed position."""
    return f"{a:0{digits}d}+{b:0{digits}d}="


def addition_task(digits: int = 1, carry_drop: float = 0.0, reward: str = "exact") -> Task:
    """'a+b=' -> the sum zero-padded to digits + 1 characters; partial-credit reward (module docstring).

    Its teacher (for the warm start) writes the sum but drops each carry with probability `carry_drop`
    (`carry_dropping_sum`), so a model fitted to it is confident on most digits and gives the right digit
    after a carry only a minority probability: the unlikely-but-right tail that RL must find.
    """
    if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 6:
        raise ValueError(f"digits must be an int in [1, 6], got {digits!r}")
    if isinstance(carry_drop, bool) or not isinstance(carry_drop, (int, float)) or not 0.0 <= carry_drop <= 1.0:
        raise ValueError(f"carry_drop must be a number in [0, 1], got {carry_drop!r}")
    if reward not in ADDITION_REWARDS:
        raise ValueError(f"reward must be one of {sorted(ADDITION_REWARDS)}, got {reward!r}")
    hi = 10**digits

    def sample(n: int, gen: torch.Generator) -> list[tuple[str, str]]:
        ab = torch.randint(0, hi, (n, 2), generator=gen).tolist()
        return [(_addition_prompt(a, b, digits), str(a + b).zfill(digits + 1)) for a, b in ab]

    def teacher(n: int, gen: torch.Generator) -> list[tuple[str, str]]:
        ab = torch.randint(0, hi, (n, 2), generator=gen).tolist()
        drops = (torch.rand(n, digits, generator=gen) < carry_drop).tolist()
        return [(_addition_prompt(a, b, digits), carry_dropping_sum(a, b, digits, d)) for (a, b), d in zip(ab, drops, strict=True)]

    return Task(
        name=f"addition{digits}",
        sample=sample,
        reward=ADDITION_REWARDS[reward],
        correct=exact_match,
        max_new_tokens=digits + 1,
        alphabet="0123456789+=",
        teacher=teacher,
    )


# --- datasets with a math answer -------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _boxed_content(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i = start = starts[-1]
    depth = 1
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def extract_math_answer(text: str) -> str | None:
    """The final answer of a solution: the last \\boxed{...} if any, else the last number; None if neither."""
    boxed = _boxed_content(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")


def reference_answer(answer: str) -> str:
    """The final answer of a dataset's answer field: its last \\boxed{...}, else the text after its last
    `####` (GSM8K style), else the whole field, stripped."""
    boxed = _boxed_content(answer)
    if boxed is not None:
        return boxed.strip()
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    return answer.strip()


def _as_number(text: str) -> float | None:
    t = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    frac = _FRAC.match(t)
    if frac:
        t = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return float(num) / float(den)
        return float(t)
    except (ValueError, ZeroDivisionError):
        return None


def math_answer_reward(response: str, answer: str) -> float:
    """1.0 if the response's final answer (extract_math_answer) equals `answer`'s (reference_answer).

    Both compare as numbers when both parse (integers, decimals, a/b, \\frac{a}{b}), with a relative
    tolerance of 1e-6 (so '0.50', '1/2', '\\frac{1}{2}' and '.5' match '0.5');
    anything else compares as whitespace-stripped strings.
    """
    got = extract_math_answer(response)
    if got is None:
        return 0.0
    want = reference_answer(answer)
    a, b = _as_number(got), _as_number(want)
    if a is not None and b is not None:
        return float(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))
    return float(got.replace(" ", "") == want.replace(" ", ""))


def load_jsonl(path: str) -> list[tuple[str, str]]:
    """Read {"prompt": str, "answer": str | number} lines; ValueError naming FILE:LINE on the first bad one.

    Blank lines are skipped. The whole file is checked before training starts.
    """
    rows: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object with 'prompt' and 'answer', got {type(obj).__name__}")
            for key in ("prompt", "answer"):
                if key not in obj:
                    raise ValueError(f"{path}:{lineno}: missing key {key!r} (keys: {sorted(obj)})")
            prompt, answer = obj["prompt"], obj["answer"]
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"{path}:{lineno}: 'prompt' must be a non-empty string, got {prompt!r}")
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                raise ValueError(f"{path}:{lineno}: 'answer' must be a string or a number, got {answer!r}")
            rows.append((prompt, str(answer)))
    if not rows:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return rows


def dataset_task(path: str, reward: Reward = math_answer_reward, max_new_tokens: int = 256) -> Task:
    """Uniformly sampled (prompt, answer) rows of a JSONL file (load_jsonl) with a math-answer reward."""
    rows = load_jsonl(path)

    def sample(n: int, gen: torch.Generator) -> list[tuple[str, str]]:
        idx = torch.randint(0, len(rows), (n,), generator=gen).tolist()
        return [rows[i] for i in idx]

    alphabet = "".join(sorted({c for p, a in rows for c in p + a} | set("0123456789")))
    return Task(
        name=f"dataset:{path}",
        sample=sample,
        reward=reward,
        correct=lambda r, a: reward(r, a) >= 1.0,
        max_new_tokens=max_new_tokens,
        alphabet=alphabet,
    )
