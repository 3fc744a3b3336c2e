"""Mutation testing of one target with mutmut 3 (run by `nox -s mutation`; not part of CI).

    python tools/mutation.py run NAME --mutate spec/_objective.py ... --tests tests/core [--pytest-arg=ARG]...
    python tools/mutation.py report NAME... [--strict]
    python tools/mutation.py equivalents [--check]     (what in the equivalents' table no longer matches the tree)

The repository's folders map onto one package (`spec` -> `cegppo`, `backends/torch` -> `cegppo.torch`,
...; pyproject.toml, ``package-dir``), which mutmut cannot follow: it copies the source folder into
``mutants/`` and names each mutant after the module path it sees. So each target is staged in
``build/mutation/NAME``: the packages laid out as they are installed (``cegppo/``, ``cegppo/torch/``,
...), the test folders, README.md and docs/ (read by some tests), and a pyproject.toml that holds
the mutmut configuration. mutmut runs there, and this script reads its results back per module.

Surviving mutants that are equivalent (no test can tell them from the original) are described in
``tools/mutation_equivalent.toml``, never by mutant number (numbers shift when the code changes):
mostly by rules, each a class of mutation (a pattern on the original line and on what replaces it)
within the files or functions where it is harmless, and otherwise by one-off entries keyed on the
file, the function and the changed line with its spacing and comments ignored. The report counts
them apart, and lists the rules and entries that no longer match the tree (`equivalents --check`),
so they cannot rot unseen. Every other survivor is a gap in the tests. See docs/contributing.md,
"Mutation testing".
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import functools
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.toml"
MUTMUT = next(line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.startswith("mutmut=="))
"""The pinned tool, from constraints.txt (the noxfile installs it; `run` checks the installed version matches)."""

# Exit codes of a mutant's test run -> verdict (mutmut 3.8.1, mutmut/stats.py), except 255: mutmut
# calls it a timeout, but a worker that dies before running a test exits 255 too (every torch mutant
# did in a first forkserver run), so here it is a crash, which is not a kill and lowers the score, as
# is -11 (a segfault: JAX's runtime in a forked worker). Any other code is "suspicious", not a kill.
_VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
            36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "crashed", -11: "crashed",
            37: "killed", None: "not checked"}

# Lines never mutated: the text of an error message (the contract is the exception type and the
# argument it names, which the tests match; mutmut's "XX" + text + "XX" keeps both) and the
# `__all__` / docstring bookkeeping. Regular expressions over one source line (mutmut's
# do_not_mutate_patterns; a statement starting on a matching line is skipped whole).
DO_NOT_MUTATE_PATTERNS = [r"^\s*__all__\s*="]


# Files some tests read as text from the repository root (the README's commands, the docs' clause
# list, CI, the mutation tool and its targets, the pins it reads its mutmut version from, the release
# files, and the source folders under their repository names, which the docs tests scan).
ALSO_COPY = ["README.md", "LICENSE", "CHANGELOG.md", "CITATION.cff", "docs", ".ci", "pyproject.toml", "noxfile.py",
             "constraints.txt", "tools", "spec", "backends", "conformance_tests", "reference_trainer", "integrations"]


def package_dirs() -> dict[str, str]:
    """pyproject.toml's package-dir: import package -> folder of this repository."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


def staged_path(repo_path: str) -> str:
    """`backends/torch/_objective.py` -> `cegppo/torch/_objective.py` (the installed layout)."""
    folder, _, name = repo_path.rpartition("/")
    for package, pkg_folder in package_dirs().items():
        if pkg_folder == folder:
            return package.replace(".", "/") + "/" + name
    raise SystemExit(f"tools/mutation.py: {repo_path} is not in a package folder of pyproject.toml")


def stage(name: str, mutate: list[str], tests: list[str], pytest_args: list[str], isolation: str) -> Path:
    """Lay out build/mutation/NAME afresh (old mutants and results are dropped)."""
    where = ROOT / "build" / "mutation" / name
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for package, folder in package_dirs().items():
        target = where / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((ROOT / folder).iterdir()):
            if f.is_file() and (f.suffix == ".py" or f.name == "py.typed"):
                shutil.copy2(f, target / f.name)
    copy_tests(where)
    for extra in ALSO_COPY:
        if extra == "pyproject.toml":
            continue  # written below
        if (ROOT / extra).is_dir():
            shutil.copytree(ROOT / extra, where / extra, ignore=shutil.ignore_patterns("assets", "__pycache__"))
        elif (ROOT / extra).exists():
            shutil.copy2(ROOT / extra, where / extra)
    config = {
        "source_paths": ["cegppo"],
        "only_mutate": [staged_path(m) for m in mutate],
        "also_copy": ALSO_COPY,
        "do_not_mutate_patterns": DO_NOT_MUTATE_PATTERNS,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", *pytest_args],
        "pytest_add_cli_args_test_selection": tests,
        "process_isolation": isolation,
        "use_git_change_detection": False,
        "timeout_multiplier": 10.0,
        "timeout_constant": 20.0,
    }
    (where / "target.json").write_text(json.dumps({"mutate": mutate, "tests": tests, "pytest_args": pytest_args}))
    # The repository's own pyproject.toml (pytest's settings, and the package map some tests read) plus
    # mutmut's table, which it reads from the folder it runs in.
    (where / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        + "\n# Added by tools/mutation.py (edit MUTATION_TARGETS in noxfile.py).\n"
        + _toml_table("tool.mutmut", config)
    )
    return where


def copy_tests(where: Path) -> None:
    """Copy tests/ into `where` (again: picks up new tests).

    Whole, not only the folders of `tests`: the suites import shared helpers from tests/common
    and each other's strategy modules (pytest's pythonpath in pyproject.toml).
    """
    shutil.copytree(ROOT / "tests", where / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))


def _meta_files(where: Path) -> list[Path]:
    return sorted((where / "mutants").rglob("*.py.meta"))


def read_verdict_codes(where: Path) -> dict[str, dict[str, int | None]]:
    """{meta file: {mutant: exit code}} of a staged target."""
    return {str(p): dict(json.loads(p.read_text())["exit_code_by_key"]) for p in _meta_files(where)}


def keep_earlier_kills(where: Path, earlier: dict[str, dict[str, int | None]]) -> int:
    """After a re-check of some mutants, restore the earlier run's kills that mutmut reset.

    When tests are added, mutmut (3.8.1) collects their coverage and marks every mutant of a function
    they reach as unchecked, though only the named mutants are run again. A kill cannot be undone by
    adding tests, so the earlier verdict of a mutant left unchecked is kept when it was a kill or a
    timeout. This holds only if the tests were added to, not weakened, between the runs: the
    re-check is for tests written against the last report's survivors.
    """
    kept = 0
    for path in _meta_files(where):
        data = json.loads(path.read_text())
        codes = data["exit_code_by_key"]
        before = earlier.get(str(path), {})
        for key, code in codes.items():
            old = before.get(key)
            if code is None and _VERDICT.get(old) in ("killed", "timeout"):
                codes[key] = old
                kept += 1
        path.write_text(json.dumps(data))
    return kept


def _toml_table(name: str, values: dict[str, Any]) -> str:
    # json.dumps writes valid TOML for strings, numbers, booleans and lists of strings.
    lines = [f"[{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n\n"


@functools.cache
def _parsed(path: Path) -> tuple[str, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    source = path.read_text(encoding="utf-8")
    defs = {node.name: node for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return source, defs


def mutant_diff(where: Path, mutant: str) -> str:
    """The unified diff of one mutant against the original function (what `mutmut show` prints).

    Read from the mutated file, where mutmut keeps `f__mutmut_orig` beside each `f__mutmut_N`:
    no mutmut process per survivor.
    """
    module, _, name = mutant.rpartition(".")
    func = name.rsplit("__mutmut_", 1)[0]
    path = where / "mutants" / (module.replace(".", "/") + ".py")
    if not path.exists():  # a package's __init__
        path = where / "mutants" / module.replace(".", "/") / "__init__.py"
    source, defs = _parsed(path)

    def body(key: str) -> list[str]:
        node = defs.get(key)
        if node is None:
            return []
        lines = (ast.get_source_segment(source, node, padded=True) or "").splitlines()
        return [ln.replace(key, func, 1) if i == 0 else ln for i, ln in enumerate(lines)]

    return "\n".join(difflib.unified_diff(body(f"{func}__mutmut_orig"), body(name), lineterm="", n=0))


def changed_lines(diff: str) -> tuple[str, str]:
    """(removed, added) source lines of a one-mutant diff, stripped and joined."""
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


# ---- Equivalent mutants: rules for classes, entries for one-offs (tools/mutation_equivalent.toml)

_RULE_KEYS = {"name", "scope", "original", "mutant", "reason"}
_ENTRY_KEYS = {"file", "function", "original", "mutants", "reason"}
_OPTIONAL_KEYS = {"targets"}
"""`targets`: the mutation targets (MUTATION_TARGETS' names) in which the mutants are equivalent, for a module
that several targets mutate (spec/_backend_core.py, run under torch and under JAX): what one framework's
primitive makes a no-op can be a real change under another's. Absent: every target."""


class Rule(NamedTuple):
    """A class of equivalent mutants: one span of the original line rewritten, within the scope named.

    `scope` items are `FILES` or `FILES::FUNCTION` (FILES an fnmatch pattern over repository paths,
    FUNCTION a name in the source, `Class.method` for a method). `original` is searched in the removed
    line; the span that changes is its group `x` (or `x1`, `x2`, ...: the first that took part) when it
    has one, the rest of the match being context that stays, else the whole match. The mutant must be
    the removed line with that span replaced by text that `mutant` matches in full.
    """

    name: str
    scope: tuple[str, ...]
    original: re.Pattern[str]
    mutant: re.Pattern[str]
    reason: str
    targets: tuple[str, ...] = ()

    def applies_to(self, path: str, function: str, target: str | None = None) -> bool:
        """Whether the rule's scope holds this repository path and (plain) function name, in `target` (None: any)."""
        return (target is None or not self.targets or target in self.targets) and any(
            _in_scope(item, path, function) for item in self.scope)

    def matches(self, removed: str, added: str) -> bool:
        """Whether `added` is `removed` with one span that `original` finds rewritten to a `mutant` match."""
        for found in self.original.finditer(removed):
            start, end = _changed_span(found)
            head, tail = removed[:start], removed[end:]
            if (len(head) + len(tail) <= len(added) and added.startswith(head) and added.endswith(tail)
                    and self.mutant.fullmatch(added[len(head):len(added) - len(tail)])):
                return True
        return False


def _in_scope(item: str, path: str, function: str) -> bool:
    """Whether a scope item (`FILES` or `FILES::FUNCTION`) holds this path and function."""
    files, _, name = item.partition("::")
    return fnmatch.fnmatchcase(path, files) and (not name or name == function)


def _changed_span(found: re.Match[str]) -> tuple[int, int]:
    """The span of the first group named `x`, `x1`, `x2`, ... that took part in the match, else the whole match."""
    for name in sorted(found.re.groupindex, key=lambda n: (len(n), n)):
        if re.fullmatch(r"x\d*", name) and found.group(name) is not None:
            return found.span(name)
    return found.span()


class Entry(NamedTuple):
    """Equivalent mutants of one line that no rule describes: its file, function, the line and its rewrites."""

    file: str
    function: str
    original: str
    mutants: tuple[str, ...]
    reason: str
    targets: tuple[str, ...] = ()

    def matches(self, path: str, function: str, removed: str, added: str, target: str | None = None) -> bool:
        """Whether this is one of the entry's mutants, spacing and comments aside, in `target` (None: any)."""
        return ((target is None or not self.targets or target in self.targets)
                and self.file == path and self.function == function and normalise(self.original) == normalise(removed)
                and normalise(added) in {normalise(m) for m in self.mutants})


_STRING = re.compile(r"""(?:[rbuf]{0,2})("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""", re.IGNORECASE)


def normalise(line: str) -> str:
    """A source line (or " / "-joined lines) without its whitespace and comments, string literals kept whole.

    So an entry keeps matching when a formatter changes the spacing or a comment is added to the line.
    """
    out: list[str] = []
    pos = 0
    for found in _STRING.finditer(line):
        code = line[pos:found.start()]
        if "#" in code:
            return "".join(out) + re.sub(r"\s+", "", code.split("#", 1)[0])
        out += [re.sub(r"\s+", "", code), found.group()]
        pos = found.end()
    return "".join(out) + re.sub(r"\s+", "", line[pos:].split("#", 1)[0])


def plain_function(mangled: str) -> str:
    """mutmut's name of a function -> its name in the source: `x_f` -> `f`, `xǁCǁm` -> `C.m`."""
    if mangled.startswith("x\u01c1"):
        return ".".join(mangled[2:].split("\u01c1"))
    return mangled.removeprefix("x_")


def _checked(item: dict[str, Any], keys: set[str], required: set[str], kind: str) -> dict[str, Any]:
    unknown, missing = set(item) - keys - _OPTIONAL_KEYS, required - set(item)
    if unknown or missing:
        raise ValueError(f"{EQUIVALENT_FILE.name}: a [[{kind}]] with unknown key(s) {sorted(unknown)} or "
                         f"missing key(s) {sorted(missing)}: {item}")
    return item


def load_equivalent(path: Path = EQUIVALENT_FILE) -> tuple[list[Rule], list[Entry]]:
    """The rules and the one-off entries of the table."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    rules = []
    for item in data.get("rule", []):
        _checked(item, _RULE_KEYS, _RULE_KEYS, "rule")
        try:
            original, mutant = re.compile(item["original"]), re.compile(item["mutant"])
        except re.error as exc:
            raise ValueError(f"{path.name}: rule {item['name']!r} has a bad pattern: {exc}") from exc
        rules.append(Rule(item["name"], tuple(item["scope"]), original, mutant, item["reason"],
                          tuple(item.get("targets", ()))))
    entries = [Entry(**{**_checked(item, _ENTRY_KEYS, _ENTRY_KEYS, "equivalent"), "mutants": tuple(item["mutants"]),
                        "targets": tuple(item.get("targets", ()))})
               for item in data.get("equivalent", [])]
    return rules, entries


def equivalent_reason(path: str, function: str, diff: str,
                      table: tuple[list[Rule], list[Entry]] | None = None, target: str | None = None) -> str | None:
    """Why this mutant (of `function`, mutmut's name, in repository file `path`) is equivalent in mutation
    target `target` (None: in any), or None."""
    rules, entries = load_equivalent() if table is None else table
    removed, added = changed_lines(diff)
    plain = plain_function(function)
    for rule in rules:
        if rule.applies_to(path, plain, target) and rule.matches(removed, added):
            return f"rule {rule.name!r}: {rule.reason}"
    for entry in entries:
        if entry.matches(path, plain, removed, added, target):
            return entry.reason
    return None


@functools.cache
def _function_lines(path: Path) -> dict[str, list[str]]:
    """{plain function name: its source lines, stripped} of one file (methods as `Class.method`)."""
    source = path.read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_source_segment(source, child, padded=True) or ""
                out[prefix + child.name] = [ln.strip() for ln in text.splitlines()]
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(ast.parse(source), "")
    return out


@functools.cache
def _line_runs(body: tuple[str, ...], longest: int = 4) -> frozenset[str]:
    """The normalised lines of a function, and runs of up to `longest` of them joined as `changed_lines` joins them."""
    return frozenset(normalise(" / ".join(body[i:i + n])) for n in range(1, longest + 1)
                     for i in range(len(body) - n + 1))


def stale_equivalents(table: tuple[list[Rule], list[Entry]] | None = None, root: Path = ROOT) -> list[str]:
    """What in the table no longer describes the tree under `root`, one line each (empty: all of it holds).

    An entry is stale when its file, its function or its original line is gone, or a rule now covers it; a
    rule when a file pattern or a function it names matches nothing, or its pattern finds no line in scope.
    A stale item matches no mutant, so a survivor it was written for would be reported as a gap (and a
    reworded line needs its entry reworded): listing them keeps the table from rotting unseen.
    """
    rules, entries = load_equivalent() if table is None else table
    py_files = sorted(p.relative_to(root).as_posix() for folder in package_dirs().values()
                      for p in (root / folder).glob("*.py"))
    problems = [line for rule in rules for item in rule.scope for line in _stale_scope(rule, item, py_files, root)]
    return problems + [line for entry in entries for line in _stale_entry(entry, rules, root)]


def _stale_scope(rule: Rule, item: str, py_files: list[str], root: Path) -> list[str]:
    """Why one scope item of a rule matches nothing in the tree (empty: it finds a line)."""
    files, _, name = item.partition("::")
    scoped = [f for f in py_files if fnmatch.fnmatchcase(f, files)]
    if not scoped:
        return [f"rule {rule.name!r}: no file matches {files!r}"]
    bodies = [body for f in scoped for fn, body in _function_lines(root / f).items() if not name or fn == name]
    if not bodies:
        return [f"rule {rule.name!r}: no function {name!r} in {files!r}"]
    if not any(rule.original.search(ln) for body in bodies for ln in body):
        return [f"rule {rule.name!r}: its pattern finds no line in {item!r}"]
    return []


def _stale_entry(entry: Entry, rules: list[Rule], root: Path) -> list[str]:
    """Why a one-off entry no longer matches the tree, or is not needed (empty: it holds)."""
    where = f"entry {entry.file}::{entry.function} `{entry.original.strip()}`"
    if not (root / entry.file).is_file():
        return [f"{where}: no file {entry.file}"]
    problems = []
    body = _function_lines(root / entry.file).get(entry.function)
    if body is None:
        problems.append(f"{where}: no function {entry.function!r} in {entry.file}")
    elif normalise(entry.original) not in _line_runs(tuple(body)):
        problems.append(f"{where}: the line is not in the function")
    for mutant in entry.mutants:
        covering = next((r.name for r in rules if r.applies_to(entry.file, entry.function)
                         and (not r.targets or set(entry.targets or ["every target"]) <= set(r.targets))
                         and r.matches(entry.original.strip(), mutant.strip())), None)
        if covering is not None:
            problems.append(f"{where} -> `{mutant.strip()}`: rule {covering!r} already covers it")
    return problems


def report(name: str, verbose: bool = True) -> int:
    """Print the verdicts per module; returns the number of unexplained survivors."""
    where = ROOT / "build" / "mutation" / name
    if not (where / "target.json").exists():
        print(f"\nmutation target {name!r}: not run (no {where.relative_to(ROOT)}/target.json)")
        return 1
    mutate = json.loads((where / "target.json").read_text())["mutate"]
    table = load_equivalent()
    unexplained = 0
    print(f"\nmutation target {name!r}: module / mutants / killed / timeout / equivalent / survived / no tests "
          "/ score (killed+timeout over checked non-equivalent)")
    rows = []
    survivor_names: list[str] = []
    for repo_path in mutate:
        meta = where / "mutants" / (staged_path(repo_path) + ".meta")
        if not meta.exists():
            print(f"  {repo_path}: no results (mutmut did not run on it)")
            unexplained += 1
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter[str] = Counter()
        survivors = []
        for key, code in sorted(codes.items()):
            verdict = _VERDICT.get(code, "suspicious")
            if verdict in ("not checked", "crashed", "suspicious"):
                survivor_names.append(key)
            if verdict in ("survived", "no tests"):
                # key: cegppo._loss.x_policy_loss__mutmut_12 (or xǁClassǁmethod__mutmut_3)
                func = key.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
                diff = mutant_diff(where, key)
                if equivalent_reason(repo_path, func, diff, table, name) is not None:
                    verdict = "equivalent"
                else:
                    survivors.append((key, verdict, diff))
            counts[verdict] += 1
        non_eq = sum(counts.values()) - counts["equivalent"] - counts["not checked"]
        caught = counts["killed"] + counts["timeout"]
        score = 100.0 * caught / non_eq if non_eq else 100.0
        rows.append((repo_path, sum(counts.values()), counts, score))
        unexplained += len(survivors) + counts["not checked"] + counts["crashed"] + counts["suspicious"]
        survivor_names.extend(key for key, _, _ in survivors)
        print(f"  {repo_path}: {sum(counts.values())} / {counts['killed']} / {counts['timeout']} / "
              f"{counts['equivalent']} / {counts['survived']} / {counts['no tests']} / {score:.1f}%"
              + (f"  (other: {dict((k, v) for k, v in counts.items() if k not in _SHOWN)})"
                 if set(counts) - _SHOWN else ""))
        if verbose:
            for key, verdict, diff in survivors:
                print(f"    {verdict}: {key}")
                for ln in diff.splitlines():
                    if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++")):
                        print(f"      {ln}")
    total: Counter[str] = Counter()
    for _, _, c, _ in rows:
        total.update(c)
    non_eq = sum(total.values()) - total["equivalent"] - total["not checked"]
    if non_eq:
        print(f"  all of {name!r}: {100.0 * (total['killed'] + total['timeout']) / non_eq:.1f}% of "
              f"{non_eq} non-equivalent mutants killed; {unexplained} unexplained survivor(s)")
    (where / "survivors.txt").write_text("".join(f"{k}\n" for k in survivor_names))
    summary = where / "summary.json"
    summary.write_text(json.dumps({p: {"mutants": n, **c, "score": s} for p, n, c, s in rows}, indent=2))
    return unexplained


_SHOWN = {"killed", "timeout", "equivalent", "survived", "no tests"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "report", "equivalents"])
    parser.add_argument("names", nargs="*",
                        help="target name(s) (staging folder build/mutation/NAME); one for run, none for equivalents")
    parser.add_argument("--mutate", nargs="+", default=[], help="repository paths of the modules to mutate")
    parser.add_argument("--tests", nargs="+", default=[], help="test folders/files that may kill the mutants")
    parser.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    # How mutmut starts each mutant's worker (MUTATION_TARGETS in noxfile.py picks it per target). fork is
    # the fast one and works for the spec and torch; JAX's runtime segfaults in a forked worker, so the
    # jax target uses forkserver (a fresh interpreter per worker pool, slower to start).
    parser.add_argument("--isolation", choices=["fork", "forkserver"], default="fork")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--mutants", nargs="*", default=[],
                        help="re-run only these mutants (globs; 'survivors': the last report's survivors and unchecked)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a survivor is not explained or the equivalents' table has a stale item")
    parser.add_argument("--check", action="store_true", help="equivalents: exit 1 when the table has a stale item")
    args = parser.parse_args(argv)
    if args.action == "equivalents":
        if args.names:
            parser.error("equivalents takes no target name")
        stale = report_stale_equivalents()
        return 1 if (args.check and stale) else 0
    if not args.names:
        parser.error(f"{args.action} takes a target name")
    if args.action == "run":
        import importlib.metadata

        if len(args.names) != 1 or not args.mutate:
            parser.error("run takes one target name and --mutate")
        args.name = args.names[0]
        have = importlib.metadata.version("mutmut")
        if f"mutmut=={have}" != MUTMUT:
            raise SystemExit(f"tools/mutation.py needs {MUTMUT}, found mutmut {have}")
        if args.mutants:  # re-check some mutants of an earlier run, with the current tests
            where = ROOT / "build" / "mutation" / args.name
            copy_tests(where)
            copy_tests(where / "mutants")
            if args.mutants == ["survivors"]:
                args.mutants = (where / "survivors.txt").read_text().split()
                if not args.mutants:
                    print("tools/mutation.py: no unexplained survivor to re-run")
                    return 0
        else:
            where = stage(args.name, args.mutate, args.tests, args.pytest_arg, args.isolation)
        earlier = read_verdict_codes(where) if args.mutants else {}
        cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *args.mutants]
        print(f"tools/mutation.py: {' '.join(cmd)}  (in {where.relative_to(ROOT)})", flush=True)
        rc = subprocess.run(cmd, cwd=where, check=False).returncode
        if earlier:
            kept = keep_earlier_kills(where, earlier)
            print(f"tools/mutation.py: kept {kept} kill(s) of the earlier run that mutmut reset when the tests grew")
        if rc != 0:
            print(f"tools/mutation.py: mutmut exited with {rc}", file=sys.stderr)
            return rc
    unexplained = sum(report(name) for name in args.names)
    stale = report_stale_equivalents()
    return 1 if (args.strict and (unexplained or stale)) else 0


def report_stale_equivalents() -> int:
    """Print what in the equivalents' table no longer matches the tree; returns how many items."""
    problems = stale_equivalents()
    rules, entries = load_equivalent()
    print(f"\n{EQUIVALENT_FILE.relative_to(ROOT)}: {len(rules)} rules, {len(entries)} one-off entries, "
          f"{len(problems)} stale")
    for line in problems:
        print(f"  stale: {line}")
    return len(problems)


if __name__ == "__main__":
    sys.exit(main())
