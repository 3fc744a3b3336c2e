"""The rules written once in spec/ (issue 13): argument checks, the aggregation-mode table, the metric
keys, and the fused head's float64 reference (docs/spec.md S8, S9.6, S10, S11.1)."""

from __future__ import annotations

import re
from pathlib import Path

import cegppo
import numpy as np
import pytest
from backend_cases import AGGREGATION_SHAPE_CASES, aggregation_shape_case_id, check_aggregation_shape_case
from cegppo._aggregation_modes import AGG_TABLE, read_normalizers
from cegppo._metrics import METRIC_TABLE
from cegppo._validation import check_chunk_size, check_normalizer, dtype_kind

ROOT = Path(__file__).resolve().parents[2]


def test_the_mode_table_is_the_one_list_of_modes() -> None:
    """AGG_MODES is the table's keys; the normalizer a mode reads comes from the table (S8.2)."""
    assert cegppo.AGG_MODES == tuple(AGG_TABLE)
    for agg, mode in AGG_TABLE.items():
        read = [name for name, _ in read_normalizers(agg, 3, 2)]
        assert read == ([] if mode.normalizer is None else [mode.normalizer]), agg


_MODE = "|".join(map(re.escape, cegppo.AGG_MODES))
BRANCH_ON_MODE_NAME = re.compile(
    r"agg\s*(==|!=|in\b)"  # agg == ..., agg in (...)
    r"|\w\.startswith\(['\"](seq-|token-)"  # mode.startswith("seq-mean")
    rf"|['\"]({_MODE})['\"]\s*(==|!=|in\b)"  # "token-sum" == mode
    rf"|(==|!=)\s*['\"]({_MODE})['\"]"  # loss_agg_mode == "token-mean"
)
"""A comparison that tells aggregation modes apart by name instead of by AGG_TABLE's fields."""


@pytest.mark.parametrize("folder", ["backends", "integrations"])
def test_no_branch_on_a_mode_name(folder: str) -> None:
    """The backends and the framework adapters branch on AGG_TABLE's fields, never on mode names: a mode is
    defined in one place, so a new mode is one row of the table, not an edit of every if-chain."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not BRANCH_ON_MODE_NAME.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"


@pytest.mark.parametrize("line", [
    '    if agg == "token-sum":', "if agg.startswith('seq-mean'):", 'if loss_agg_mode.startswith("seq-mean"):',
    'if self.agg == "token-mean":', 'if mode != "seq-mean-token-sum-norm":', 'if "token-sum" in modes:',
])
def test_the_mode_name_rule_sees_a_branch(line: str) -> None:
    assert BRANCH_ON_MODE_NAME.search(line)


@pytest.mark.parametrize("line", [
    'agg="token-sum"', '"token-mean": "token-mean",', "if AGG_TABLE[mode].normalizer is None:",
    'if loss_agg_mode not in _TOKEN_LEVEL_OF_AGG:', '"token-mean" if ppo else agg',
])
def test_the_mode_name_rule_lets_a_mode_name_be_a_value(line: str) -> None:
    assert not BRANCH_ON_MODE_NAME.search(line)


def test_metric_table_lists_the_keys_in_order() -> None:
    assert cegppo.METRIC_KEYS == tuple(k for k, _, _ in METRIC_TABLE)
    assert cegppo.FUSED_METRIC_KEYS[: len(cegppo.METRIC_KEYS)] == cegppo.METRIC_KEYS
    assert {how for _, how, _ in METRIC_TABLE} == {"frac", "mean", "max"}


@pytest.mark.parametrize(
    "dtype,kind",
    [(np.bool_, "bool"), (np.int8, "int"), (np.uint32, "int"), (np.float16, "float"), (np.float64, "float"),
     (np.complex64, "complex"), (np.str_, "other")],
)
def test_dtype_kind_of_numpy_dtypes(dtype: type, kind: str) -> None:
    assert dtype_kind(np.dtype(dtype)) == kind


def test_dtype_kind_of_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dtype_kind(np.dtype(ml_dtypes.bfloat16)) == "float"


@pytest.mark.parametrize("value,exc", [(np.array(True), TypeError), (np.array(1 + 0j), TypeError),
                                       (np.array([1.0, 2.0]), ValueError), (np.array(-1.0), ValueError)])
def test_array_normalizers_must_be_real_numeric_scalars(value: np.ndarray, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="num_tokens"):
        check_normalizer("num_tokens", value)


@pytest.mark.parametrize("value,exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError),
                                       ("4", TypeError)])
def test_chunk_size_rule(value: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="chunk_size"):
        check_chunk_size(value)
    assert check_chunk_size(None) is None and check_chunk_size(5) == 5


# ---------------------------------------------------------------- aggregate_loss(validate=True)


def test_aggregate_loss_validate_checks_valid_positions_only() -> None:
    mask = np.array([[True, False], [True, True]])
    loss = np.array([[1.0, np.nan], [2.0, 3.0]])
    want = cegppo.aggregate_loss(loss, mask, validate=True)  # NaN at a masked position: fine
    assert float(want) == pytest.approx(2.0)
    loss[1, 1] = np.inf
    with pytest.raises(ValueError, match="per_token_loss"):
        cegppo.aggregate_loss(loss, mask, validate=True)
    assert np.isinf(cegppo.aggregate_loss(loss, mask))  # without validate: the value, inf


# ---------------------------------------------------------------- S11.1: the fused head's reference


def _head(seed: int, *, inside: bool = True, bias: bool = True) -> dict[str, np.ndarray]:
    """hidden, weight, bias, ids, old_log_prob (within 0.05 of log pi, so every token is `inside`:
    the value's derivative is then the gradient, S2), advantages, mask with an empty row."""
    rng = np.random.default_rng(seed)
    b, t, h, v = 3, 4, 5, 7
    hidden = rng.normal(size=(b, t, h))
    weight = rng.normal(size=(v, h)) * 0.5
    bias_v = rng.normal(size=v) * 0.3 if bias else None
    ids = rng.integers(0, v, size=(b, t))
    mask = rng.random((b, t)) < 0.7
    mask[2] = False
    z = (hidden @ weight.T + (0.0 if bias_v is None else bias_v)) / 1.3
    lp = cegppo.token_log_probs(z, ids)
    olp = lp + (rng.uniform(-0.05, 0.05, size=(b, t)) if inside else rng.normal(size=(b, t)))
    return {"hidden": hidden, "weight": weight, "bias": bias_v, "token_ids": ids, "old_log_prob": olp,
            "advantages": rng.normal(size=b), "mask": mask}


def _call(fn, a: dict[str, np.ndarray], agg: str, **kw):  # type: ignore[no-untyped-def]
    return fn(a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"],
              cegppo.CEGPPOConfig(), bias=a["bias"], temperature=1.3, entropy_coef=0.05, agg=agg, **kw)


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_fused_reference_gradients_are_the_value_s_derivative(agg: str) -> None:
    """S11.1: the chain-rule gradients equal float64 central differences of the reference's own value."""
    a = _head(0)
    grads = _call(cegppo.fused_linear_policy_loss_grad, a, agg)
    assert sorted(grads) == ["bias", "hidden", "weight"]
    step = 1e-6
    for name, g in grads.items():
        fd = np.zeros(g.size)
        for i in range(g.size):
            vals = []
            for sign in (1.0, -1.0):
                b = dict(a)
                x = a[name].astype(np.float64).copy().reshape(-1)
                x[i] += sign * step
                b[name] = x.reshape(a[name].shape)
                vals.append(float(_call(cegppo.fused_linear_policy_loss, b, agg)[0]))
            fd[i] = (vals[0] - vals[1]) / (2 * step)
        np.testing.assert_allclose(g.reshape(-1), fd, rtol=1e-6, atol=1e-8, err_msg=name)


def test_fused_reference_is_the_unfused_composition() -> None:
    """S11.1: loss = policy_loss(l) - k aggregate_loss(H), metrics keyed by FUSED_METRIC_KEYS."""
    a = _head(1, inside=False, bias=False)
    loss, metrics = _call(cegppo.fused_linear_policy_loss, a, "seq-mean-token-mean")
    z = a["hidden"] @ a["weight"].T / 1.3
    lp, ent = cegppo.token_log_probs(z, a["token_ids"]), cegppo.entropy(z)
    cfg = cegppo.CEGPPOConfig()
    want = (cegppo.policy_loss(lp, a["old_log_prob"], a["advantages"], a["mask"], cfg, "seq-mean-token-mean")
            - 0.05 * cegppo.aggregate_loss(ent, a["mask"], "seq-mean-token-mean"))
    assert float(loss) == pytest.approx(float(want), rel=1e-12)
    assert tuple(metrics) == cegppo.FUSED_METRIC_KEYS
    pm = cegppo.policy_metrics(lp, a["old_log_prob"], a["advantages"], a["mask"], cfg)
    for key in cegppo.METRIC_KEYS:
        assert float(metrics[key]) == pytest.approx(float(pm[key]), rel=1e-12, abs=1e-15), key
    assert float(metrics["entropy_mean"]) == pytest.approx(float(ent[a["mask"]].mean()), rel=1e-12)


def test_fused_reference_ignores_masked_garbage_and_checks_valid_ids() -> None:
    a = _head(2)
    clean = _call(cegppo.fused_linear_policy_loss, a, "token-mean")
    dirty = dict(a)
    m = a["mask"]
    dirty["hidden"] = np.where(m[..., None], a["hidden"], np.nan)
    dirty["token_ids"] = np.where(m, a["token_ids"], -100)
    dirty["old_log_prob"] = np.where(m, a["old_log_prob"], np.inf)
    got = _call(cegppo.fused_linear_policy_loss, dirty, "token-mean")
    assert float(got[0]) == float(clean[0])
    bad = dict(a)
    bad["token_ids"] = np.where(m, 7, a["token_ids"])  # V = 7: out of range at valid positions
    with pytest.raises(ValueError, match="token_ids"):
        _call(cegppo.fused_linear_policy_loss, bad, "token-mean")


@pytest.mark.parametrize("kw,exc,name", [
    ({"entropy_coef": np.float32(0.1)}, TypeError, "entropy_coef"),  # the config fields' rule
    ({"entropy_coef": True}, TypeError, "entropy_coef"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"agg": "mean"}, ValueError, "agg"),
])
def test_fused_reference_checks_its_options(kw: dict[str, object], exc: type[Exception], name: str) -> None:
    a = _head(3)
    args = (a["hidden"], a["weight"], a["token_ids"], a["old_log_prob"], a["advantages"], a["mask"])
    with pytest.raises(exc, match=name):
        cegppo.fused_linear_policy_loss(*args, cegppo.CEGPPOConfig(), **kw)


def test_head_expected_is_the_spec_reference() -> None:
    """The conformance kit's `head_expected` (old import path) reports the spec's numbers."""
    cc = pytest.importorskip("cegppo.conformance")
    a = _head(4)
    case = cc.HeadCase(a["hidden"], a["weight"], a["bias"], a["token_ids"], a["old_log_prob"], a["advantages"],
                       a["mask"], cegppo.CEGPPOConfig(), dtype="float64", temperature=1.3, entropy_coef=0.05)
    exp = cc.head_expected(case)
    loss, metrics = _call(cegppo.fused_linear_policy_loss, a, "token-mean")
    assert exp.value == float(loss)
    assert exp.metrics == {k: float(v) for k, v in metrics.items()}
    assert set(exp.grad_scales) == set(exp.grads) == {"hidden", "weight", "bias"}


@pytest.mark.parametrize("case", AGGREGATION_SHAPE_CASES, ids=[aggregation_shape_case_id(c) for c in AGGREGATION_SHAPE_CASES])
def test_S9_6_aggregation_shapes_follow_the_one_rule(case: tuple[str, list[tuple[int, ...]], str]) -> None:
    """`check_aggregation_shapes`: a (B, T) mask, a loss of its shape, the same message everywhere."""
    check_aggregation_shape_case(cegppo, case, np.zeros, lambda s: np.ones(s, bool))


def test_S9_6_a_complex_per_token_loss_is_refused_by_name() -> None:
    """`check_input_dtype`, as in the backends: a cast to a real dtype would drop the imaginary part."""
    with pytest.raises(TypeError, match=r"^per_token_loss must be a real numeric array, got dtype complex128$"):
        cegppo.aggregate_loss(np.ones((2, 2), complex), np.ones((2, 2), bool))
    assert float(cegppo.aggregate_loss(np.ones((2, 2), bool), np.ones((2, 2), bool))) == 1.0
