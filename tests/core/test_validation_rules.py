"""Rules of cegppo._validation that the backends share and the reference itself does not call.

`read_normalizers` decides which normalizer each aggregation mode reads (spec S8.2) for the
backends' `validate=True` checks; a test through `cegppo.policy_loss` cannot see it. Added when
mutation testing (`nox -s mutation`, docs/contributing.md) showed every mutant of it untested.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from cegppo._aggregation_modes import read_normalizers


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


def test_S8_2_normalizer_value_rule() -> None:
    from cegppo._validation import check_normalizer_value

    check_normalizer_value("num_tokens", 1.7976931348623157e308, 1)  # the largest float is finite
    check_normalizer_value("num_tokens", 0.0, 0)  # 0 for a batch with no valid token
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match=rf"^num_seqs must be a finite number >= 0 .*got {bad!r}$"):
            check_normalizer_value("num_seqs", bad, 1)
    with pytest.raises(ValueError, match=r"^num_tokens is 0 but this batch has 1 valid tokens: .* micro-batch "
                                         r"with no valid token \(pass the global count"):
        check_normalizer_value("num_tokens", 0.0, 1)
    with pytest.raises(ValueError, match=r"^num_seqs is 0 but this batch has 2 valid sequences: "):
        check_normalizer_value("num_seqs", 0.0, 2)


def test_S12_group_shape_returns_the_number_of_groups() -> None:
    from cegppo._validation import check_group_shape

    p = check_group_shape((6,), 3)
    assert p == 2 and type(p) is int


def test_S12_type_errors_name_the_type_received() -> None:
    r = np.array([1.0, 0.0, 1.0, 0.0])
    with pytest.raises(TypeError, match=r"^group_size must be an int, got float$"):
        cegppo.grpo_advantages(r, 2.0)
    with pytest.raises(TypeError, match=r"^eps must be a number, got str$"):
        cegppo.grpo_advantages(r, 2, eps="1e-6")


def test_S8_2_normalizer_type_and_host_value_rule() -> None:
    import warnings

    from cegppo._validation import check_normalizer

    big = 1.7976931348623157e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy float32 is compared without a cast warning
        for ok in (None, 0, 0.0, 0.5, big, np.float32(5.0), np.array(big), np.array([3]), np.array(0.0),
                   np.array(0.5), np.array(7, dtype=np.int32)):
            check_normalizer("num_tokens", ok)
    for bad, shown in ((-1.0, "-1.0"), (float("inf"), "inf"), (np.array(-2.0), "-2.0"), (np.array([np.nan]), "nan")):
        with pytest.raises(ValueError, match=rf"^num_tokens must be a finite number >= 0 .*got {shown}$"):
            check_normalizer("num_tokens", bad)
    with pytest.raises(TypeError, match=r"^num_seqs must be a number or a scalar array, got list$"):
        check_normalizer("num_seqs", [3])
    with pytest.raises(TypeError, match=r"^num_seqs must be a real number or a numeric scalar array, got dtype bool$"):
        check_normalizer("num_seqs", np.array(True))
    with pytest.raises(TypeError, match=r"^num_seqs must be a real number or a numeric scalar array, got dtype complex128$"):
        check_normalizer("num_seqs", np.array(1 + 0j))


def test_S8_2_float32_and_float16_scalar_arrays_are_normalizers() -> None:
    from cegppo._validation import check_normalizer

    for dtype in (np.float16, np.float32, np.int8, np.uint16):
        check_normalizer("num_tokens", np.array(3, dtype=dtype))


def test_S9_6_ids_shape_error_names_the_leading_shape_of_batched_logits() -> None:
    z = np.zeros((2, 3, 5))
    with pytest.raises(ValueError, match=r"^ids must have shape \(2, 3\) \(logits without the vocab axis\), got shape \(2,\)"):
        cegppo.token_log_probs(z, np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("fn", ["policy_loss", "policy_loss_grad"])
def test_S9_6_aggregation_arguments_are_checked_before_any_array_value(fn: str) -> None:
    """The metadata checks come first: a bad normalizer is reported even when validate=True would
    also refuse a non-finite log-prob (no value is read before the arguments are known good)."""
    lp = np.array([[np.inf, 0.0]])
    args = (lp, np.zeros((1, 2)), np.ones(1), np.ones((1, 2), bool), cegppo.presets.ce_gppo_1p5b())
    for agg, kwargs, name in (("seq-mean-token-sum", {"num_tokens": -1.0}, "num_tokens"),
                              ("token-mean", {"num_seqs": -1.0}, "num_seqs"),
                              ("token-mean", {"norm_length": -1.0}, "norm_length")):
        with pytest.raises(ValueError, match=rf"^{name} must be a finite number"):
            getattr(cegppo, fn)(*args, agg, validate=True, **kwargs)


def test_S9_6_policy_shape_rules_name_what_they_expect() -> None:
    from cegppo._validation import check_policy_shapes

    lp = np.zeros((2, 3))
    assert check_policy_shapes(lp, lp, np.ones(2), None) == (2, 3)
    with pytest.raises(ValueError, match=r"^advantages must have shape \(2, 3\) \(per token\) or \(2,\) \(per sequence\), "
                                         r"got shape \(3,\)$"):
        check_policy_shapes(lp, lp, np.ones(3), None)
    with pytest.raises(TypeError, match=r"^cfg must be a cegppo.CEGPPOConfig, got dict$"):
        cegppo.per_token_objective(lp, lp, np.ones(2), {})
