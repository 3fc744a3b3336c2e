"""The fused head's argument rules, `check_fused_args` / `check_fused_shapes` (docs/spec.md S9.6, S11.1).

These rules live once in `cegppo._validation` and every fused head applies them (the reference, torch,
JAX). Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed them checked only
through the backends' fused tests, which the spec's own suite does not run: a swapped argument name,
an optional bias made compulsory or `chunk_size=1` refused went unnoticed here.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest
from backend_cases import FUSED_BAD_OPTIONS, fused_option_id
from cegppo._fused_args import FusedArgs, check_fused_args, check_fused_shapes

B, T, H, V = 2, 3, 4, 5


def _arrays(bias: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "hidden": rng.normal(size=(B, T, H)),
        "weight": rng.normal(size=(V, H)),
        "token_ids": rng.integers(0, V, size=(B, T)),
        "old_log_prob": np.full((B, T), -1.5),
        "advantages": np.array([1.0, -1.0]),
        "mask": np.ones((B, T), bool),
        "bias": rng.normal(size=V) if bias else None,
    }


def _loss(a: dict[str, Any], **options: Any) -> Any:
    return cegppo.fused_linear_policy_loss(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"],
                                           a["advantages"], a["mask"], cegppo.CEGPPOConfig(), bias=a["bias"],
                                           **options)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_each_array_goes_through_the_backend_s_type_check_by_name(bias: bool) -> None:
    """`array_type(name, x)` sees every array under its own name, in signature order; bias only when given."""
    a = _arrays(bias)
    seen: list[tuple[str, int]] = []
    check_fused_shapes(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"],
                       a["bias"], array_type=lambda name, x: seen.append((name, id(x))))
    names = ["hidden", "weight", "token_ids", "old_log_prob", "advantages", "mask"] + (["bias"] if bias else [])
    assert seen == [(n, id(a[n])) for n in names]


def test_the_backend_s_type_check_runs_before_any_shape_check() -> None:
    a = _arrays()

    def refuse_lists(name: str, x: Any) -> None:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")

    with pytest.raises(TypeError, match=r"^mask must be a numpy array, got list$"):
        check_fused_shapes(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"],
                           [[True] * T] * B, array_type=refuse_lists)


BAD_ARRAYS: list[tuple[str, str, Any, type[Exception], str]] = [
    ("hidden 2-D", "hidden", lambda a: a["hidden"][0], ValueError, r"^hidden must have shape \(B, T, H\), got shape \(3, 4\)$"),
    ("hidden integer", "hidden", lambda a: a["hidden"].astype(np.int64), TypeError, r"^hidden must be floating-point"),
    ("weight wrong H", "weight", lambda a: a["weight"][:, :2], ValueError,
     r"^weight must have shape \(V, H\) with H = 4 \(like lm_head.weight\), got shape \(5, 2\)$"),
    ("weight 1-D", "weight", lambda a: a["weight"][0], ValueError, r"^weight must have shape \(V, H\)"),
    ("weight V = 0", "weight", lambda a: a["weight"][:0], ValueError, r"^weight must have shape \(V, H\)"),
    ("weight integer", "weight", lambda a: a["weight"].astype(np.int32), TypeError, r"^weight must be floating-point"),
    ("bias shape", "bias", lambda a: a["bias"][:3], ValueError, r"^bias must have shape \(5,\), got shape \(3,\)$"),
    ("bias integer", "bias", lambda a: a["bias"].astype(np.int64), TypeError, r"^bias must be floating-point"),
    ("token_ids float", "token_ids", lambda a: a["token_ids"].astype(np.float64), TypeError,
     r"^token_ids must be integer, got dtype float64$"),
    ("token_ids shape", "token_ids", lambda a: a["token_ids"][:, :2], ValueError,
     r"^token_ids must have shape \(2, 3\) \(B, T\), got shape \(2, 2\)$"),
    ("old_log_prob shape", "old_log_prob", lambda a: a["old_log_prob"][:1], ValueError,
     r"^old_log_prob must have shape \(2, 3\) \(B, T\), got shape \(1, 3\)$"),
    ("mask shape", "mask", lambda a: a["mask"][:, :1], ValueError, r"^mask must have shape \(2, 3\) \(B, T\), got shape \(2, 1\)$"),
    ("advantages shape", "advantages", lambda a: np.ones(3), ValueError,
     r"^advantages must have shape \(2, 3\) \(per token\) or \(2,\) \(per sequence\), got shape \(3,\)$"),
]


@pytest.mark.parametrize(("what", "name", "bad", "exc", "message"), BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
def test_a_bad_array_is_refused_naming_it(what: str, name: str, bad: Any, exc: type[Exception], message: str) -> None:
    a = _arrays()
    a[name] = bad(a)
    with pytest.raises(exc, match=message):
        _loss(a)


@pytest.mark.parametrize("advantages", [np.array([1.0, -1.0]), np.ones((B, T))], ids=["(B,)", "(B, T)"])
def test_both_advantage_shapes_and_no_bias_are_accepted(advantages: np.ndarray) -> None:
    a = _arrays(bias=False)
    a["advantages"] = advantages
    loss, _ = _loss(a)
    assert np.isfinite(loss)


@pytest.mark.parametrize(("options", "exc", "name"), FUSED_BAD_OPTIONS, ids=[fused_option_id(o) for o, _, _ in FUSED_BAD_OPTIONS])
def test_a_bad_option_is_refused_naming_it(options: dict[str, Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=rf"^{name} "):
        _loss(_arrays(), **options)


def test_chunk_size_error_names_the_type_given() -> None:
    with pytest.raises(TypeError, match=r"^chunk_size must be an int or None, got float$"):
        _loss(_arrays(), chunk_size=2.0)


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 1000])
def test_every_chunk_size_from_one_is_accepted_and_changes_nothing(chunk_size: int | None) -> None:
    """The reference has no chunks: chunk_size = 1 (one row at a time) included, the result is the same."""
    a = _arrays()
    loss, _ = _loss(a, chunk_size=chunk_size)
    assert loss == _loss(a)[0]


def test_check_fused_args_returns_the_checked_values() -> None:
    a = _arrays()
    got = check_fused_args(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"],
                           cegppo.CEGPPOConfig(), bias=a["bias"], temperature=2, entropy_coef=0.01,
                           agg="seq-mean-token-sum-norm", num_tokens=None, num_seqs=None, norm_length=6,
                           chunk_size=3)
    assert got[:6] == FusedArgs("seq-mean-token-sum-norm", 6.0, 2.0, 0.01, 3, (B, T, H, V), ())[:6]
    assert [(n, x is a[n]) for n, x in got.float_inputs] == [
        ("hidden", True), ("weight", True), ("old_log_prob", True), ("advantages", True), ("bias", True)]
    no_bias = check_fused_args(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"],
                               cegppo.CEGPPOConfig(), bias=None, temperature=1, entropy_coef=0, agg="token-mean",
                               num_tokens=None, num_seqs=None, norm_length=None, chunk_size=None)
    assert [n for n, _ in no_bias.float_inputs] == ["hidden", "weight", "old_log_prob", "advantages"]
    assert type(got.temperature) is float and type(got.norm_length) is float


@pytest.mark.parametrize("name", ["token_ids", "old_log_prob", "advantages", "mask"])
def test_an_argument_without_a_shape_is_refused_by_name(name: str) -> None:
    """The shared rule, without a backend's type check (the reference converts its inputs first): a list
    is named. (hidden, weight and bias have their dtype read first; every caller either converts them or
    refuses a non-array by name before, with its `array_type`.)"""
    a = _arrays()
    a[name] = a[name].tolist()
    with pytest.raises(TypeError, match=rf"^{name} must be an array or tensor, got list$"):
        check_fused_shapes(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"],
                           a["bias"])


def test_a_vocabulary_of_one_is_a_vocabulary() -> None:
    """V = 1 is a head (weight (1, H)), not a shape error: every token has log-prob 0 and entropy 0, so the
    fused loss is the policy loss of log_prob = 0."""
    a = _arrays()
    ids = np.zeros((B, T), np.int64)
    loss, metrics = cegppo.fused_linear_policy_loss(a["hidden"], a["weight"][:1], ids, a["old_log_prob"],
                                                    a["advantages"], a["mask"], cegppo.CEGPPOConfig(), bias=a["bias"][:1])
    assert float(loss) == float(cegppo.policy_loss(np.zeros((B, T)), a["old_log_prob"], a["advantages"], a["mask"],
                                                   cegppo.CEGPPOConfig()))
    assert float(metrics["entropy_mean"]) == 0.0


def test_check_fused_args_checks_the_normalizers_and_hands_every_array_to_the_type_check() -> None:
    a = _arrays()
    seen: list[str] = []
    kw: dict[str, Any] = {"bias": a["bias"], "temperature": 1.0, "entropy_coef": 0.0, "agg": "token-mean",
                          "num_seqs": None, "norm_length": None, "chunk_size": None}
    arrays = [a[n] for n in ("hidden", "weight", "token_ids", "old_log_prob", "advantages", "mask")]
    check_fused_args(*arrays, cegppo.CEGPPOConfig(), num_tokens=np.array(5.0), **kw,
                     array_type=lambda name, x: seen.append(name))
    assert seen == ["num_tokens", "hidden", "weight", "token_ids", "old_log_prob", "advantages", "mask", "bias"]
    for name in ("num_tokens", "num_seqs"):
        with pytest.raises(ValueError, match=rf"^{name} "):
            check_fused_args(*arrays, cegppo.CEGPPOConfig(), **{**kw, "num_tokens": None, name: -1.0})
