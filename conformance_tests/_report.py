"""The kit's report: per-property results, and for each failure a pasteable reproducer."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._adapters import Adapter
from ._cases import Case, expected
from ._diagnose import DEFECT_CLASSES, FIXES
from ._port import port_keywords

__all__ = ["PropertyResult", "Report", "reproducer"]


@dataclass
class PropertyResult:
    """The outcome of one property on one implementation.

    status is ``PASS``, ``FAIL``, ``SKIP`` or ``DECLARED`` (a declared convention stands in for the
    property, e.g. S9.5 float64 under ``compute_dtype='float32'``; not a failure). For a failure, `message` says what was compared and
    `expected`/`got` hold the two sides; `reproducer` is a Python snippet that recomputes the
    failing call; `exception` holds the implementation's exception when it raised; `timed_out`
    is True when the property was stopped by the time limit (the reproducer is the call that hung).
    """

    id: str
    clause: str
    name: str
    doc: str
    status: str
    examples: int = 0
    seconds: float = 0.0
    reason: str = ""
    message: str = ""
    expected: str = ""
    got: str = ""
    reproducer: str = ""
    exception: str = ""
    hypothesis_output: str = ""
    timed_out: bool = False
    diagnosis: str = ""
    """For a failure: the hypothesis that explains it (`cegppo.conformance._diagnose`), or that none fits."""
    defect_class: str = ""
    """For a failure: its class in the verdict table (`DEFECT_CLASSES`)."""

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"

    def format(self, verbose: bool = False) -> list[str]:
        """The details of a failure as lines: what failed, expected vs got, the exception, the reproducer."""
        lines = [f"=== FAIL {self.id} ==="]
        if self.diagnosis:
            lines.append(f"diagnosis ({self.defect_class}): {self.diagnosis}")
        lines += [f"property: {self.doc}", f"what failed: {self.message}"]
        if self.exception:
            lines += ["exception raised by the implementation:", _indent(self.exception)]
        if self.expected or self.got:
            lines += [f"expected: {self.expected}", f"got:      {self.got}"]
        if self.reproducer:
            lines += ["minimal reproducer (paste into Python):", _indent(self.reproducer)]
        if verbose and self.hypothesis_output:
            lines += ["hypothesis:", _indent(self.hypothesis_output)]
        return lines


@dataclass
class Report:
    """What `cegppo.conformance.check` found. ``bool(report)`` is True when no property failed."""

    implementation: str
    framework: str
    kind: str
    max_examples: int
    seed: int | None
    results: list[PropertyResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    """True when `check(fail_fast=True)` stopped at the first failing property."""
    device: str | None = None
    """The device the inputs were created on (None: the framework's default)."""
    advantages: str = "both"
    """The advantage shapes the implementation declared (``token``, ``sequence`` or ``both``)."""
    declared: list[str] = field(default_factory=list)
    """The conventions the implementation declared, one line each (`Conventions.lines`)."""
    objective: str = "ce_gppo"
    """The objective checked (``ce_gppo``, ``cispo``, ``cispo_cap``, ``sapo``, ``gspo``; docs/spec.md S14)."""

    @property
    def ok(self) -> bool:
        """True when every property passed or was skipped."""
        return all(r.passed for r in self.results)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failed(self) -> list[PropertyResult]:
        return [r for r in self.results if r.status == "FAIL"]

    def result(self, prop_id: str) -> PropertyResult:
        """The result of the property with test id `prop_id` (e.g. ``"S5 gradient bound clip_high"``)."""
        for r in self.results:
            if r.id == prop_id:
                return r
        raise KeyError(f"no property {prop_id!r} in this report")

    def header(self) -> str:
        seed = "derandomized" if self.seed is None else f"seed {self.seed}"
        where = f", device {self.device}" if self.device is not None else ""
        forms = f", advantages {self.advantages}" if self.advantages != "both" else ""
        # a CE-GPPO report reads as it always has; another member's says which one was checked
        what = f"{self.objective} " if self.objective != "ce_gppo" else ""
        return (f"cegppo conformance: {what}{self.implementation} ({self.kind}, framework {self.framework}{where}{forms}); "
                f"up to {self.max_examples} examples per property, {seed}")

    def summary(self) -> str:
        n = {s: sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP", "DECLARED")}
        verdict = "CONFORMS" if self.ok else "DOES NOT CONFORM"
        early = " (stopped at the first failure: fail_fast)" if self.stopped_early else ""
        declared = f", {n['DECLARED']} declared" if n["DECLARED"] else ""
        return (f"{verdict}: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped{declared} in "
                f"{self.seconds:.1f}s{early}")

    def format(self, verbose: bool = False) -> str:
        """The report as text: a header, one line per property, then the details of each failure."""
        lines = [self.header()]
        lines += [f"  note: {note}" for note in self.notes]
        width = max((len(r.clause) for r in self.results), default=4)
        for r in self.results:
            tail = f"  ({r.reason})" if r.status in ("SKIP", "DECLARED") else ""
            if r.status == "FAIL":
                tail = f"  -> {r.message.splitlines()[0] if r.message else ''}"
            lines.append(f"{r.status}  {r.clause:<{width}}  {r.name}{tail}")
        for r in self.failed:
            lines += ["", *r.format(verbose)]
        verdict = self.verdict_lines()
        if verdict:
            lines += ["", *verdict]
        lines += ["", self.summary()]
        return "\n".join(lines)

    def verdict(self) -> list[dict[str, Any]]:
        """The ranked verdict: one row per defect class found (`DEFECT_CLASSES` order), then the declared conventions.

        Each row: ``class``, ``properties`` (the failing property ids), ``fix`` (one line) and ``defect``
        (False for a declared convention, which is not a failure).
        """
        rows: list[dict[str, Any]] = []
        for cls in DEFECT_CLASSES:
            hit = [r for r in self.failed if (r.defect_class or "wrong value") == cls]
            if not hit:
                continue
            fix = FIXES[cls]
            if cls == "undeclared convention":  # the declarations the diagnoses found
                found = dict.fromkeys(m for r in hit for m in re.findall(r"declare (--[a-z-]+ [\w.+-]+)", r.diagnosis))
                fix = f"if intended, declare {' '.join(found)}; else follow the spec" if found else fix
            rows.append({"class": cls, "properties": [r.id for r in hit], "fix": fix, "defect": True})
        rows += [{"class": "declared convention", "properties": [], "fix": line, "defect": False}
                 for line in self.declared]
        return rows

    def verdict_lines(self) -> list[str]:
        """The verdict as a short table (empty when nothing failed and nothing was declared)."""
        rows = self.verdict()
        if not rows:
            return []
        out = ["verdict (defect classes, most urgent first; declared conventions are not defects):"]
        for row in rows:
            if row["defect"]:
                n = len(row['properties'])
                out.append(f"  DEFECT    {row['class']} ({n} propert{'y' if n == 1 else 'ies'})")
                out += textwrap.wrap("; ".join(row["properties"]), 110, initial_indent="            shown by: ",
                                     subsequent_indent="              ")
                out.append(f"            fix: {row['fix']}")
            else:
                out.append(f"  DECLARED  {row['fix']}")
        return out

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (what ``cegppo-conformance check --json FILE`` writes)."""
        counts = {s.lower(): sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        if any(r.status == "DECLARED" for r in self.results):
            counts["declared"] = sum(r.status == "DECLARED" for r in self.results)
        return {
            "implementation": self.implementation, "objective": self.objective, "framework": self.framework,
            "kind": self.kind,
            "device": self.device, "advantages": self.advantages, "max_examples": self.max_examples,
            "seed": self.seed, "ok": self.ok, "summary": self.summary(), "counts": counts, "verdict": self.verdict(),
            "seconds": round(self.seconds, 3), "stopped_early": self.stopped_early, "notes": list(self.notes),
            "results": [{k: (round(v, 3) if k == "seconds" else v) for k, v in asdict(r).items()}
                        for r in self.results],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def _arr(x: np.ndarray) -> str:
    if x.dtype == np.bool_:
        body = np.array2string(x, separator=", ", threshold=10**6, max_line_width=10**6)
        return f"np.array({body})"
    body = np.array2string(x, separator=", ", floatmode="unique", threshold=10**6, max_line_width=10**6)
    return f"np.array({body})"


_NOT_IMPORTABLE = ("__main__", "builtins", "None", "?", "")
_IMPORTS = {"numpy": "", "torch": "import torch\n", "jax": "import jax\nimport jax.numpy as jnp\n"}


def _tensor(framework: str, name: str, src: str, is_bool: bool, dtype: str, grad: bool = False,
            device: str | None = None) -> str:
    """One input line of a reproducer: `src` (a NumPy expression) as an array of the framework on `device`."""
    if framework == "numpy":
        return f"{name} = {src}" + ("" if is_bool else f".astype(np.{dtype})")
    if framework == "torch":
        dt = "" if is_bool else f", dtype=torch.{dtype}"
        dev = f", device={device!r}" if device is not None else ""
        rg = ", requires_grad=True" if grad else ""
        return f"{name} = torch.tensor({src}{dt}{dev}{rg})"
    dt = "" if is_bool else f", dtype=jnp.{dtype}"
    arr = f"jnp.asarray({src}{dt})"
    if device is not None:
        platform, _, index = device.partition(":")
        platform = "gpu" if platform == "cuda" else platform
        arr = f"jax.device_put({arr}, jax.devices({platform!r})[{int(index or 0)}])"
    return f"{name} = {arr}"


def import_lines(framework: str) -> list[str]:
    """The first lines of a reproducer: NumPy and the framework."""
    return ["import numpy as np", *_IMPORTS[framework].splitlines()]


def config_expr(cfg: Any) -> str:
    """`cfg` as the expression that rebuilds it (any config of the family: its dataclass repr)."""
    if type(cfg).__name__ != "CEGPPOConfig":
        return f"cegppo.{cfg!r}"
    return (f"cegppo.CEGPPOConfig(eps_low={cfg.eps_low!r}, eps_high={cfg.eps_high!r}, beta_low={cfg.beta_low!r}, "
            f"beta_high={cfg.beta_high!r}, dual_clip={cfg.dual_clip!r})")


_INPUTS = ("log_prob", "old_log_prob", "advantages", "response_mask")
# Printed after the call by a reproducer of `S1 inputs are not modified`: which inputs changed.
_MUTATION_CHECK = {
    "numpy": "print('modified in place:', [n for n, b, a in zip(names, before, inputs) "
             "if not np.array_equal(b, a, equal_nan=b.dtype != bool)])",
    "torch": "print('modified in place:', [n for n, b, a in zip(names, before, inputs) "
             "if not np.array_equal(b, a.detach().cpu().double().numpy(), equal_nan=True)])",
}
_BEFORE = {
    "numpy": "before = [x.copy() for x in inputs]",
    "torch": "before = [x.detach().cpu().double().numpy().copy() for x in inputs]",
}


def reproducer(case: Case, adapter: Adapter, *, show_mutation: bool = False) -> str:
    """A Python snippet that recomputes `case` with `adapter`'s implementation and prints loss and gradient.

    ``show_mutation`` (NumPy and torch): the snippet copies the inputs before the call and prints
    which ones the call changed, as `S1 inputs are not modified` reports. A case with a `recipe`
    (the million-token cases) is rebuilt by it instead of being printed.
    """
    if not isinstance(case, Case):  # a fused-head case writes its own (conformance_tests/_fused.py)
        return str(case.reproducer(adapter))
    fw = adapter.framework
    lines = import_lines(fw)
    if adapter.kind == "backend":
        mod = "cegppo" if fw == "numpy" else f"cegppo.{fw}"
        lines += ["import cegppo", f"import {mod} as cg"]
    elif ":" in adapter.name and "<" not in adapter.name and adapter.name.split(":")[0] not in _NOT_IMPORTABLE:
        module, func = adapter.name.rsplit(":", 1)
        if module.endswith(".py") or "/" in module or "\\" in module or "." in func:
            lines += ["from cegppo.conformance import load_port", f"port = load_port({adapter.name!r})"]
        else:
            lines.append(f"from {module} import {func} as port")
    else:
        lines.append(f"port = ...  # {adapter.name}")
    lines.append('nan, inf = float("nan"), float("inf")')
    float_mask = adapter.mask_dtype == "float"
    if case.recipe:
        lines += ["import cegppo", "import cegppo.conformance as cc", f"case = {case.recipe}"]
        src = {"log_prob": "case.log_prob", "old_log_prob": "case.old_log_prob", "advantages": "case.advantages",
               "response_mask": "case.mask" + (".astype(np.float64)" if float_mask else "")}
    else:
        mask = case.mask.astype(np.float64) if float_mask else case.mask
        src = {"log_prob": _arr(case.log_prob), "old_log_prob": _arr(case.old_log_prob),
               "advantages": _arr(case.advantages), "response_mask": _arr(mask)}
    dev = adapter.device
    lines += [_tensor(fw, name, src[name], name == "response_mask" and not float_mask, case.dtype,
                      grad=name == "log_prob", device=dev) for name in _INPUTS]
    if case.layout == "sliced":  # the kit handed views, as frameworks do
        lines += [f"{n} = torch.nn.functional.pad({n}, (1, 2), value=float('nan'))[..., 1:-2]"
                  f"{'.detach().requires_grad_(True)' if n == 'log_prob' else ''}  # a slice of a wider buffer"
                  for n in _INPUTS if n != "response_mask"]
        lines.append("response_mask = torch.nn.functional.pad(response_mask, (1, 2))[..., 1:-2]")
    elif case.layout == "transposed":
        lines += [f"{n} = {n}.detach().T.contiguous().T" + (".requires_grad_(True)" if n == "log_prob" else "")
                  + "  # column-major" for n in _INPUTS]
    mutation = show_mutation and fw in _MUTATION_CHECK
    if mutation:
        lines += [f"names, inputs = {list(_INPUTS)!r}, [log_prob, old_log_prob, advantages, response_mask]",
                  _BEFORE[fw]]
    c = case.cfg
    loss_fn = "policy_loss" if type(c).__name__ == "CEGPPOConfig" else "family_policy_loss"
    if adapter.kind == "backend":
        call = (f"cg.{loss_fn}({{lp}}, old_log_prob, advantages, response_mask, {config_expr(c)}, agg={case.agg!r}, "
                f"num_tokens={case.num_tokens!r}, num_seqs={case.num_seqs!r})")
    else:
        keywords = ", ".join(f"{k}={v!r}" for k, v in port_keywords(c).items())
        call = f"port({{lp}}, old_log_prob, advantages, response_mask, {keywords})"
    if fw == "torch":
        lines += [f"loss = {call.format(lp='log_prob')}", "loss.backward()",
                  "print(loss.item(), log_prob.grad)"]
    elif fw == "jax":
        lines += [f"loss, grad = jax.value_and_grad(lambda lp: {call.format(lp='lp')})(log_prob)",
                  "print(loss, grad)"]
    elif adapter.kind == "backend":
        lines += [f"loss = {call.format(lp='log_prob')}",
                  f"grad = cg.{loss_fn}_grad{call.format(lp='log_prob')[len(f'cg.{loss_fn}'):]}",
                  "print(loss, grad)"]
    else:
        lines += [f"loss = {call.format(lp='log_prob')}", "print(loss)"]
    if mutation:
        lines.append(_MUTATION_CHECK[fw])
    try:
        with np.errstate(all="ignore"):
            e = expected(case)
        with np.printoptions(precision=10, threshold=10**6, linewidth=120):
            lines.append(f"# reference (cegppo, float64 on these numbers): loss = {e.value!r}")
            grad = np.array2string(e.grad, separator=", ").replace("\n", "\n#   ")
            lines.append(f"# reference d loss / d log_prob = {grad}")
    except Exception as exc:  # pragma: no cover - the reference accepts every drawn case
        lines.append(f"# (reference unavailable: {exc})")
    return "\n".join(lines)
