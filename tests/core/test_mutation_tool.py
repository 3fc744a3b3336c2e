"""`tools/mutation.py` and its table of equivalent mutants (`nox -s mutation`, docs/contributing.md).

The session itself is long and not in CI; these check, in CI, what it relies on: the staging path of
each mutated module, the reading of a mutant's diff, the equivalents' rules and entries (and that
none of them has been left behind by a change to the code), and that the docs list the modules
`MUTATION_TARGETS` mutates.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest
from repo_tools import ROOT, load_tool

tool = load_tool("mutation.py")


def _targets() -> dict[str, dict[str, list[str]]]:
    """MUTATION_TARGETS, read from noxfile.py without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MUTATION_TARGETS":
            assert node.value is not None
            return ast.literal_eval(node.value)
    raise AssertionError("noxfile.py has no MUTATION_TARGETS")


def test_every_mutated_module_exists_and_stages_in_the_installed_layout() -> None:
    expected = {"spec/_loss.py": "cegppo/_loss.py", "backends/torch/_objective.py": "cegppo/torch/_objective.py",
                "backends/jax/_aggregation.py": "cegppo/jax/_aggregation.py"}
    for repo_path, staged in expected.items():
        assert tool.staged_path(repo_path) == staged
    for target in _targets().values():
        for repo_path in target["mutate"]:
            assert (ROOT / repo_path).is_file(), repo_path
            tool.staged_path(repo_path)  # SystemExit if not in a package folder
    with pytest.raises(SystemExit, match="not in a package folder"):
        tool.staged_path("tools/mutation.py")


# Modules of spec/ added while noxfile.py was rewritten elsewhere (issue 22): packaging and CLI support, no
# numerics, each with its own tests in tests/core. They join MUTATION_TARGETS["spec"] with the next noxfile
# change (and the docs/contributing.md row with them); until then they are the only ones allowed out.
NOT_YET_MUTATED = {"spec/_extras.py", "spec/_progress.py"}
# The family beside CE-GPPO (docs/spec.md S14): numerics, checked by tests/core/test_s14_family.py. They join
# MUTATION_TARGETS["spec"] once a mutation run over them has classified every survivor; until then they are out.
NOT_YET_MUTATED |= {"spec/_cispo.py", "spec/_sapo.py", "spec/_gspo.py", "spec/_family.py", "spec/_family_inputs.py"}


def test_every_module_of_spec_with_code_is_mutated() -> None:
    mutated = {m for target in _targets().values() for m in target["mutate"]}
    modules = {f"spec/{p.name}" for p in (ROOT / "spec").glob("*.py")}
    assert modules - mutated - NOT_YET_MUTATED == {"spec/__init__.py", "spec/__main__.py"}


def test_the_docs_table_lists_each_target_s_modules() -> None:
    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    for name, target in _targets().items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row is not None, name
        for repo_path in target["mutate"]:
            assert Path(repo_path).stem in row, (name, repo_path)


def _rule(name: str) -> object:
    rules, _ = tool.load_equivalent()
    return next(r for r in rules if r.name == name)


def test_a_diff_is_read_as_its_changed_lines_and_matched_against_an_entry(tmp_path: Path) -> None:
    diff = "--- a\n+++ b\n@@ -3 +3 @@\n-    x = a.sum(axis=-1)\n+    x = a.sum(axis=+1)"
    assert tool.changed_lines(diff) == ("x = a.sum(axis=-1)", "x = a.sum(axis=+1)")
    entry = tool.Entry("spec/_x.py", "f", "x = a.sum( axis = -1 )  # reformatted", ("x = a.sum(axis=+1)",), "2-D")
    table = ([], [entry])
    assert tool.equivalent_reason("spec/_x.py", "x_f", diff, table) == "2-D"
    assert tool.equivalent_reason("spec/_x.py", "x_g", diff, table) is None  # another function
    assert tool.equivalent_reason("spec/_y.py", "x_f", diff, table) is None  # another module
    other = diff.replace("+1", "0")
    assert tool.equivalent_reason("spec/_x.py", "x_f", other, table) is None  # another mutant of the line


def test_a_line_is_compared_without_its_spacing_and_comments_but_with_its_strings() -> None:
    assert tool.normalise("y = f(a,b)  # why") == tool.normalise("y = f( a, b )")
    assert tool.normalise('s = "a b"') != tool.normalise('s = "ab"')
    assert tool.normalise('s = "# not a comment"') == 's="# not a comment"'
    assert tool.plain_function("x_policy_loss") == "policy_loss"
    assert tool.plain_function("x__prepare") == "_prepare"
    assert tool.plain_function("x\u01c1Config\u01c1__post_init__") == "Config.__post_init__"


# rule -> original line -> (mutants the rule calls equivalent, mutants it must not).
RULE_EXAMPLES: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "typing.cast": {
        "return cast(np.ndarray, c / den)": (["return cast(None, c / den)"], ["return cast(np.ndarray, c * den)"]),
        "return cast(dict[str, Any], out)": (["return cast(None, out)"], ["return cast(dict[str, Any], None)"]),
        # a method named cast (ArrayOps.cast converts an array) is not typing.cast
        "weights = ops.cast(m, dtype)": ([], ["weights = ops.cast(None, dtype)"]),
    },
    "astype copy": {
        "return arr.astype(dtype, copy=False)": (
            ["return arr.astype(dtype, copy=None)", "return arr.astype(dtype, copy=True)", "return arr.astype(dtype, )"],
            ["return arr.astype(None, copy=False)"]),
        "r = r.astype(np.result_type(r.dtype, np.float32), copy=False)": (
            ["r = r.astype(np.result_type(r.dtype, np.float32), copy=True)"],
            ["r = r.astype(np.result_type(r.dtype, None), copy=False)"]),
        "x = np.array(a, copy=False)": ([], ["x = np.array(a, copy=True)"]),
    },
    "last axis of a 2-D array": {
        "n = m.any(axis=-1).sum() - 1": (["n = m.any(axis=+1).sum() - 1"],
                                         ["n = m.any(axis=-2).sum() - 1", "n = m.any(axis=-1).sum() + 1"]),
        "t = m.shape[-1]": (["t = m.shape[+1]"], ["t = m.shape[-2]"]),
    },
    "integer row counts": {
        "return jnp.sum(x, axis=-1, dtype=dtype, keepdims=keepdims)": (
            ["return jnp.sum(x, axis=-1, keepdims=keepdims)",
             "return jnp.sum(x, axis=-1, dtype=None, keepdims=keepdims)"],
            ["return jnp.sum(x, axis=-1, dtype=dtype, keepdims=None)", "return jnp.sum(None, axis=-1, dtype=dtype, keepdims=keepdims)"]),
        "return rows if dtype is None else rows.to(dtype)": (
            ["return rows if dtype is None else rows.to(None)"], ["return rows if dtype is not None else rows.to(dtype)"]),
        "total = ops.total(ops.row_total(masked_loss) / _row_counts(ops, m, dt))": (
            ["total = ops.total(ops.row_total(masked_loss) / _row_counts(ops, m, None))",
             "total = ops.total(ops.row_total(masked_loss) / _row_counts(ops, m, ))"],
            ["total = ops.total(ops.row_total(masked_loss) / _row_counts(ops, None, dt))"]),
    },
}


@pytest.mark.parametrize("name", sorted(RULE_EXAMPLES))
def test_a_rule_matches_its_class_of_mutant_and_no_other(name: str) -> None:
    rule = _rule(name)
    for original, (equivalent, other) in RULE_EXAMPLES[name].items():
        assert [m for m in equivalent if not rule.matches(original, m)] == [], original
        assert [m for m in other if rule.matches(original, m)] == [], original


def test_a_rule_holds_only_within_its_scope() -> None:
    axis = _rule("last axis of a 2-D array")
    assert axis.applies_to("spec/_advantages.py", "grpo_advantages")
    assert axis.applies_to("backends/torch/_ops.py", "_TorchOps.row_total")
    assert not axis.applies_to("backends/torch/_ops.py", "_TorchOps.total")  # a sum over every axis
    assert not axis.applies_to("spec/_backend_core.py", "local_count")  # not shown 2-D there
    assert not axis.applies_to("spec/_logits.py", "entropy")  # (B, T, V) logits: -1 is not +1
    diff = "--- a\n+++ b\n@@ -3 +3 @@\n-    x = z.sum(axis=-1)\n+    x = z.sum(axis=+1)"
    assert tool.equivalent_reason("spec/_logits.py", "x_entropy", diff) is None
    assert "2-D" in (tool.equivalent_reason("spec/_aggregation.py", "x_local_counts", diff) or "")


def test_a_rule_or_entry_with_targets_holds_only_in_those_targets(tmp_path: Path) -> None:
    """A module that several targets mutate: a mutant equivalent under torch's primitives is still a gap under JAX's."""
    table = tmp_path / "eq.toml"
    table.write_text(
        '[[rule]]\nname = "r"\ntargets = ["torch"]\nscope = ["spec/_backend_core.py"]\n'
        "original = 'f\\((?P<x>a)\\)'\nmutant = 'None'\nreason = \"no-op in torch\"\n\n"
        '[[equivalent]]\ntargets = ["jax"]\nfile = "spec/_backend_core.py"\nfunction = "g"\noriginal = "y = 1"\n'
        'mutants = ["y = 2"]\nreason = "only in jax"\n')
    loaded = tool.load_equivalent(table)
    rule_diff = "--- a\n+++ b\n@@ -1 +1 @@\n-    f(a)\n+    f(None)"
    entry_diff = "--- a\n+++ b\n@@ -1 +1 @@\n-    y = 1\n+    y = 2"
    assert tool.equivalent_reason("spec/_backend_core.py", "x_g", rule_diff, loaded, "torch") is not None
    assert tool.equivalent_reason("spec/_backend_core.py", "x_g", rule_diff, loaded, "jax") is None
    assert tool.equivalent_reason("spec/_backend_core.py", "x_g", entry_diff, loaded, "jax") == "only in jax"
    assert tool.equivalent_reason("spec/_backend_core.py", "x_g", entry_diff, loaded, "torch") is None


def test_the_committed_table_matches_the_tree() -> None:
    """Every rule finds a line in its scope and every entry's line is where it says: none left behind by a move,
    a rename or a reworded line (which would stop explaining the survivor it was written for)."""
    assert tool.stale_equivalents() == []


def test_what_no_longer_matches_the_tree_is_listed(tmp_path: Path) -> None:
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "_x.py").write_text(
        "def f(a):\n    x = a.sum( axis=-1 )  # reformatted\n    return x\n\n\nclass C:\n    def m(self):\n"
        "        return 1\n", encoding="utf-8")
    rule = tool.Rule("axis", ("spec/_x.py::f", "spec/_y.py", "spec/_x.py::g", "spec/_x.py::C.m"),
                     re.compile(r"axis=(?P<x>-1)"), re.compile(r"\+1"), "2-D")
    entries = [
        tool.Entry("spec/_x.py", "f", "x = a.sum(axis=-1)", ("x = a.sum(axis=+1)",), "covered by the rule"),
        tool.Entry("spec/_x.py", "f", "return x", ("return None",), "holds"),
        tool.Entry("spec/_x.py", "C.m", "return 1", ("return 2",), "holds, in a method"),
        tool.Entry("spec/_x.py", "f", "return x + 1", ("return x - 1",), "its line is gone"),
        tool.Entry("spec/_x.py", "h", "return x", ("return None",), "its function is gone"),
        tool.Entry("spec/_z.py", "f", "return x", ("return None",), "its file is gone"),
    ]
    problems = tool.stale_equivalents(([rule], entries), root=tmp_path)
    assert problems == [
        "rule 'axis': no file matches 'spec/_y.py'",
        "rule 'axis': no function 'g' in 'spec/_x.py'",
        "rule 'axis': its pattern finds no line in 'spec/_x.py::C.m'",
        "entry spec/_x.py::f `x = a.sum(axis=-1)` -> `x = a.sum(axis=+1)`: rule 'axis' already covers it",
        "entry spec/_x.py::f `return x + 1`: the line is not in the function",
        "entry spec/_x.py::h `return x`: no function 'h' in spec/_x.py",
        "entry spec/_z.py::f `return x`: no file spec/_z.py",
    ]


def test_the_check_command_fails_on_a_stale_item(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert tool.main(["equivalents", "--check"]) == 0
    monkeypatch.setattr(tool, "stale_equivalents", lambda: ["entry spec/_x.py::f `y`: no file spec/_x.py"])
    assert tool.main(["equivalents"]) == 0  # listed, not an error without --check
    assert tool.main(["equivalents", "--check"]) == 1
    assert "stale: entry spec/_x.py::f" in capsys.readouterr().out


def test_a_malformed_table_is_refused_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "eq.toml"
    bad.write_text('[[equivalent]]\nfile = "spec/_x.py"\nfunction = "f"\noriginal = "a"\nmutant = "b"\n'
                   'reason = "r"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['mutant'\].*missing key\(s\) \['mutants'\]"):
        tool.load_equivalent(bad)
    bad.write_text('[[rule]]\nname = "r"\nscope = ["*"]\noriginal = "("\nmutant = ""\nreason = "r"\n',
                   encoding="utf-8")
    with pytest.raises(ValueError, match="rule 'r' has a bad pattern"):
        tool.load_equivalent(bad)


def test_each_rule_and_entry_names_a_mutated_module_a_change_and_a_reason() -> None:
    rules, entries = tool.load_equivalent()
    mutated = {m for target in _targets().values() for m in target["mutate"]}
    assert len({r.name for r in rules}) == len(rules), "two rules share a name"
    for rule in rules:
        assert rule.reason.strip() and rule.scope, rule
        assert all(any(fnmatch.fnmatchcase(m, item.partition("::")[0]) for m in mutated) for item in rule.scope), rule
        assert set(rule.targets) <= set(_targets()), f"targets that MUTATION_TARGETS does not name: {rule}"
    seen = set()
    for e in entries:
        assert e.file in mutated, e
        assert all(e.file in _targets()[t]["mutate"] for t in e.targets), f"a target that does not mutate the file: {e}"
        assert e.mutants and all(tool.normalise(m) != tool.normalise(e.original) for m in e.mutants), e
        assert not e.function.startswith(("x_", "x\u01c1")), f"plain function names, not mutmut's: {e}"
        assert e.reason.strip(), e
        key = (e.file, e.function, tool.normalise(e.original), e.targets)
        assert key not in seen, f"one entry per line: {key}"
        seen.add(key)


def test_a_crashed_worker_is_not_a_kill() -> None:
    assert tool._VERDICT[255] == "crashed" and tool._VERDICT[-11] == "crashed"
    assert tool._VERDICT[1] == "killed" and tool._VERDICT[0] == "survived"


def test_a_re_check_keeps_the_earlier_kills_that_mutmut_reset(tmp_path: Path) -> None:
    import json

    meta = tmp_path / "mutants" / "cegppo" / "_x.py.meta"
    meta.parent.mkdir(parents=True)
    earlier = {"a": 1, "b": 0, "c": 36, "d": 0, "e": 255}
    meta.write_text(json.dumps({"exit_code_by_key": earlier}))
    before = tool.read_verdict_codes(tmp_path)
    # mutmut re-ran b (now killed), reset the rest to unchecked; d was re-run and still survives
    meta.write_text(json.dumps({"exit_code_by_key": {"a": None, "b": 1, "c": None, "d": 0, "e": None}}))
    assert tool.keep_earlier_kills(tmp_path, before) == 2
    after = json.loads(meta.read_text())["exit_code_by_key"]
    assert after == {"a": 1, "b": 1, "c": 36, "d": 0, "e": None}  # a crash is not a kill: checked again
