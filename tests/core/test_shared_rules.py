"""Rules of cegppo._validation that the backends share and the reference itself does not call.

`read_normalizers` decides which normalizer each aggregation mode reads (spec S8.2) for the
backends' `validate=True` checks; a test through `cegppo.policy_loss` cannot see it. Added when
mutation testing (`nox -s mutation`, docs/design.md) showed every mutant of it untested.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from cegppo._validation import read_normalizers


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("token-mean", (("num_tokens", 7),)),
        ("token-sum", ()),
        ("seq-mean-token-mean", (("num_seqs", 3),)),
        ("seq-mean-token-sum", (("num_seqs", 3),)),
        ("seq-mean-token-sum-norm", (("num_seqs", 3),)),
    ],
)
def test_S8_2_each_mode_reads_only_its_normalizer(agg: str, expected: tuple) -> None:
    assert read_normalizers(agg, 7, 3) == expected
    assert agg in cegppo.AGG_MODES


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("inf"), float("nan")])
def test_S12_grpo_eps_is_named_when_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^eps must be a finite number > 0"):
        cegppo.grpo_advantages(np.array([1.0, 0.0, 1.0, 0.0]), 2, eps=bad)


def test_config_as_dict_round_trips() -> None:
    cfg = cegppo.presets.ce_gppo_1p5b()
    d = cfg.as_dict()
    assert type(d) is dict and d["eps_low"] == cfg.eps_low and d["dual_clip"] == cfg.dual_clip
    assert cegppo.CEGPPOConfig(**d) == cfg
