"""Every conformance property against the backend picked with --backend (numpy, torch or jax).

One test per registered property; its id is the property id, which starts with the spec clause
(``S5 gradient bound clip_high``). A failure shows the kit's report for that property: what was
compared, expected vs got, and a pasteable minimal reproducer.
"""

from __future__ import annotations

from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance import PROPERTIES, Report


@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.id for p in PROPERTIES])
def test_property(prop: cc.Property, adapter: Any, max_examples: int) -> None:
    result = cc.run_property(prop, adapter, max_examples=max_examples)
    if result.status == "SKIP":
        pytest.skip(f"{prop.id}: {result.reason}")
    if result.status == "FAIL":
        report = Report(adapter.name, adapter.framework, adapter.kind, max_examples, None, [result])
        pytest.fail(report.format(verbose=True), pytrace=False)
    assert result.examples >= 1, f"{prop.id} ran no example"


def test_every_clause_is_covered() -> None:
    """The registry reaches every clause the issue asks for (S3-S9), each property id is unique."""
    ids = [p.id for p in PROPERTIES]
    assert len(ids) == len(set(ids))
    clauses = {p.clause for p in PROPERTIES}
    for clause in ("S1", "S3", "S4", "S5", "S6.1", "S6.2", "S7", "S8.1", "S8.3", "S8.4", "S9.1", "S9.3", "S9.5", "S9"):
        assert clause in clauses, clause
    assert all(p.doc for p in PROPERTIES)
    ids = set(ids)
    for new in ("S1 declared advantage shapes are accepted", "S1 inputs are not modified",
                "S3 value and gradient across kernel block sizes", "S3 value and gradient at a million tokens",
                "S9.5 float16 inputs are computed in float32"):
        assert new in ids, new


def test_scale_shapes_cross_the_block_sizes() -> None:
    """The scale strategies reach both sides of 64/128/1024/4096 along T, B up to 64, and ~2^20 tokens."""
    assert set(cc.BLOCK_T) >= {1, 63, 64, 65, 127, 128, 129, 1000, 4097}
    assert max(cc.BLOCK_B) == 64
    assert all(2**20 <= b * t < 2**20 + 4096 for b, t in cc.LARGE_SHAPES)
    import cegppo

    case = cc.scale_case(b=3, t=129, seed=7, dtype="float32", cfg=cegppo.CEGPPOConfig(), mask="ragged")
    again = cc.scale_case(b=3, t=129, seed=7, dtype="float32", cfg=cegppo.CEGPPOConfig(), mask="ragged")
    assert (case.log_prob == again.log_prob).all() and (case.mask == again.mask).all()
    assert case.mask[:, [63, 64, 65, 127, 128]].any(axis=0).all()  # every block edge has a valid token
    assert not case.mask.all() and case.mask.any(axis=1).all()
    assert not case.log_prob.flags.writeable  # the kit's own copy


def test_scale_case_rejects_bad_arguments() -> None:
    import cegppo

    cfg = cegppo.CEGPPOConfig()
    with pytest.raises(ValueError, match="mask must be one of"):
        cc.scale_case(b=2, t=3, seed=0, dtype="float32", cfg=cfg, mask="zigzag")
    with pytest.raises(ValueError, match="advantages must be 'token' or 'sequence'"):
        cc.scale_case(b=2, t=3, seed=0, dtype="float32", cfg=cfg, advantages="both")
    with pytest.raises(ValueError, match="b and t must be >= 1"):
        cc.scale_case(b=0, t=3, seed=0, dtype="float32", cfg=cfg)
