"""The kit's report: per-property results, and for each failure a pasteable reproducer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._adapters import Adapter
from ._cases import Case, expected

__all__ = ["PropertyResult", "Report", "reproducer"]


@dataclass
class PropertyResult:
    """The outcome of one property on one implementation.

    status is ``PASS``, ``FAIL`` or ``SKIP``. For a failure, `message` says what was compared and
    `expected`/`got` hold the two sides; `reproducer` is a Python snippet that recomputes the
    failing call; `exception` holds the implementation's exception when it raised.
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

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"


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
        return (f"cegppo conformance: {self.implementation} ({self.kind}, framework {self.framework}); "
                f"up to {self.max_examples} examples per property, {seed}")

    def summary(self) -> str:
        n = {s: sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        verdict = "CONFORMS" if self.ok else "DOES NOT CONFORM"
        early = " (stopped at the first failure: fail_fast)" if self.stopped_early else ""
        return (f"{verdict}: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped in "
                f"{self.seconds:.1f}s{early}")

    def format(self, verbose: bool = False) -> str:
        """The report as text: a header, one line per property, then the details of each failure."""
        lines = [self.header()]
        lines += [f"  note: {note}" for note in self.notes]
        width = max((len(r.clause) for r in self.results), default=4)
        for r in self.results:
            tail = f"  ({r.reason})" if r.status == "SKIP" else ""
            if r.status == "FAIL":
                tail = f"  -> {r.message.splitlines()[0] if r.message else ''}"
            lines.append(f"{r.status}  {r.clause:<{width}}  {r.name}{tail}")
        for r in self.failed:
            lines += ["", f"=== FAIL {r.id} ===", f"property: {r.doc}", f"what failed: {r.message}"]
            if r.exception:
                lines += ["exception raised by the implementation:", _indent(r.exception)]
            if r.expected or r.got:
                lines += [f"expected: {r.expected}", f"got:      {r.got}"]
            if r.reproducer:
                lines += ["minimal reproducer (paste into Python):", _indent(r.reproducer)]
            if verbose and r.hypothesis_output:
                lines += ["hypothesis:", _indent(r.hypothesis_output)]
        lines += ["", self.summary()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


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


def _tensor(framework: str, name: str, x: np.ndarray, dtype: str, grad: bool = False) -> str:
    if framework == "numpy":
        return f"{name} = {_arr(x)}" + ("" if x.dtype == np.bool_ else f".astype(np.{dtype})")
    if framework == "torch":
        dt = "" if x.dtype == np.bool_ else f", dtype=torch.{dtype}"
        rg = ", requires_grad=True" if grad else ""
        return f"{name} = torch.tensor({_arr(x)}{dt}{rg})"
    dt = "" if x.dtype == np.bool_ else f", dtype=jnp.{dtype}"
    return f"{name} = jnp.asarray({_arr(x)}{dt})"


def reproducer(case: Case, adapter: Adapter) -> str:
    """A Python snippet that recomputes `case` with `adapter`'s implementation and prints loss and gradient."""
    if not isinstance(case, Case):  # a fused-head case writes its own (conformance_tests/_fused.py)
        return str(case.reproducer(adapter))
    fw = adapter.framework
    lines = ["import numpy as np", _IMPORTS[fw].rstrip()] if _IMPORTS[fw] else ["import numpy as np"]
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
    mask = case.mask if adapter.mask_dtype == "bool" else case.mask.astype(np.float64)
    mask_dtype = case.dtype if adapter.mask_dtype == "float" else "bool"
    lines += [
        _tensor(fw, "log_prob", case.log_prob, case.dtype, grad=True),
        _tensor(fw, "old_log_prob", case.old_log_prob, case.dtype),
        _tensor(fw, "advantages", case.advantages, case.dtype),
        _tensor(fw, "response_mask", mask, mask_dtype) if mask_dtype != "bool" else _tensor(fw, "response_mask", mask, ""),
    ]
    c = case.cfg
    if adapter.kind == "backend":
        cfg = (f"cegppo.CEGPPOConfig(eps_low={c.eps_low!r}, eps_high={c.eps_high!r}, beta_low={c.beta_low!r}, "
               f"beta_high={c.beta_high!r}, dual_clip={c.dual_clip!r})")
        call = (f"cg.policy_loss({{lp}}, old_log_prob, advantages, response_mask, {cfg}, agg={case.agg!r}, "
                f"num_tokens={case.num_tokens!r}, num_seqs={case.num_seqs!r})")
    else:
        call = (f"port({{lp}}, old_log_prob, advantages, response_mask, eps_low={c.eps_low!r}, "
                f"eps_high={c.eps_high!r}, beta_low={c.beta_low!r}, beta_high={c.beta_high!r}, "
                f"clip_ratio_c={c.dual_clip!r})")
    if fw == "torch":
        lines += [f"loss = {call.format(lp='log_prob')}", "loss.backward()",
                  "print(loss.item(), log_prob.grad)"]
    elif fw == "jax":
        lines += [f"loss, grad = jax.value_and_grad(lambda lp: {call.format(lp='lp')})(log_prob)",
                  "print(loss, grad)"]
    elif adapter.kind == "backend":
        lines += [f"loss = {call.format(lp='log_prob')}",
                  f"grad = cg.policy_loss_grad{call.format(lp='log_prob')[len('cg.policy_loss'):]}",
                  "print(loss, grad)"]
    else:
        lines += [f"loss = {call.format(lp='log_prob')}", "print(loss)"]
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
