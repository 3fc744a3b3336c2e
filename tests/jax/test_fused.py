"""cegppo.jax.fused_linear_policy_loss (issue 5) beyond the conformance suite's S11.1 properties.

The jitted fused loss, metrics and gradients against the float64 unfused path (every aggregation
mode, global normalizers, chunk sizes, temperature, bias, entropy bonus, all regions), masked
garbage and all-masked batches of B, T >= 1 are S11.1 properties of the conformance suite
(`pytest tests/conformance --backend=jax`, tests/conformance/test_fused_conformance.py). Here:
the eager path against the jitted one, empty shapes (B = 0, T = 0), the vocabulary-blocked
weight gradient, bf16/fp16 inputs (which the fused adapter does not draw), the (N, V) bound of
the jaxpr, and argument checks. Shapes are fixed per test so that XLA compiles once per option
set. float64 needs `jax_enable_x64`, switched on by tests/jax/conftest.py.
"""

from __future__ import annotations

import functools
from typing import Any

import cegppo
import cegppo.conformance as cc
import cegppo.jax as cj
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backend_cases import FUSED_BAD_OPTIONS, fused_option_id
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax_cases import CONFIGS, TOL, away_from_kinks, to_np

REGIONS = ("clip_low", "clip_high", "dual_clip", "inside")
FINITE = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}  # XLA CPU flushes subnormals
B, T, H, V = 2, 5, 3, 7  # fixed: one XLA compilation per option set


@st.composite
def fused_cases(draw: Any) -> dict[str, Any]:
    """A float64 NumPy fused-head problem of shape (B, T, H), V with every option drawn (labelled)."""
    unit = st.floats(-1.5, 1.5, **FINITE)
    hidden = draw(hnp.arrays(np.float64, (B, T, H), elements=unit), label="hidden")
    weight = draw(hnp.arrays(np.float64, (V, H), elements=unit), label="weight")
    bias = draw(st.none() | hnp.arrays(np.float64, (V,), elements=unit), label="bias")
    ids = draw(hnp.arrays(np.int32, (B, T), elements=st.integers(0, V - 1)), label="token_ids")
    mask = draw(hnp.arrays(np.bool_, (B, T)), label="mask")
    cfg = draw(st.sampled_from(CONFIGS), label="cfg")
    per_seq = draw(st.booleans(), label="per-sequence advantages")
    elements = st.just(0.0) | st.floats(-2, 2, **FINITE)
    adv = draw(hnp.arrays(np.float64, (B,) if per_seq else (B, T), elements=elements), label="advantages")
    logr = draw(hnp.arrays(np.float64, (B, T), elements=st.floats(-1.2, 1.2, **FINITE)), label="logr")
    agg = draw(st.sampled_from(cegppo.AGG_MODES), label="agg")
    n_valid, n_rows = int(mask.sum()), int(mask.any(-1).sum())
    case = {
        "hidden": hidden, "weight": weight, "bias": bias, "token_ids": ids, "advantages": adv, "mask": mask,
        "cfg": cfg, "agg": agg,
        "temperature": draw(st.sampled_from([1.0, 0.7]), label="temperature"),
        "entropy_coef": draw(st.sampled_from([0.0, -0.3]), label="entropy_coef"),
        "num_tokens": draw(st.none() | st.just(n_valid + 3), label="num_tokens"),
        "num_seqs": draw(st.none() | st.just(n_rows + 2), label="num_seqs"),
        "norm_length": 7.0 if agg == "seq-mean-token-sum-norm" else None,
        "chunk_size": draw(st.sampled_from([None, 1, 3, 4, 64]), label="chunk_size"),  # B*T = 10
    }  # fmt: skip
    z = (hidden @ weight.T + (0 if bias is None else bias)) / case["temperature"]
    case["old_log_prob"] = cegppo.token_log_probs(z, ids) - away_from_kinks(logr, cfg)
    return case


def reference(case: dict[str, Any]) -> tuple[float, dict[str, float], dict[str, np.ndarray]]:
    """Loss, metrics and gradients from the NumPy reference in float64 (analytic chain rule).

    dloss/dz = token_log_probs_grad(z, a, dloss/dl) + entropy_grad(z, -entropy_coef c);
    dloss/dh = (dloss/dz) W / tau, dloss/dW = (dloss/dz)^T h / tau, dloss/db = sum (dloss/dz) / tau.
    """
    m = np.asarray(case["mask"], bool)
    hid = np.where(m[..., None], np.asarray(case["hidden"], np.float64), 0.0)
    ids = np.where(m, case["token_ids"], 0)
    w_ = np.asarray(case["weight"], np.float64)
    b_ = case["bias"]
    olp, adv, cfg, tau, agg = (case[k] for k in ("old_log_prob", "advantages", "cfg", "temperature", "agg"))
    norms = {k: case[k] for k in ("num_tokens", "num_seqs", "norm_length")}
    z = (hid @ w_.T + (0 if b_ is None else np.asarray(b_, np.float64))) / tau
    lp, ent = cegppo.token_log_probs(z, ids), cegppo.entropy(z)
    c = cegppo.aggregation_weights(m, agg, **norms)
    ecoef = case["entropy_coef"]
    loss = cegppo.policy_loss(lp, olp, adv, m, cfg, agg, **norms)
    loss = loss - ecoef * cegppo.aggregate_loss(np.where(m, ent, 0.0), m, agg, **norms)
    g_lp = cegppo.policy_loss_grad(lp, olp, adv, m, cfg, agg, **norms)
    gz = (cegppo.token_log_probs_grad(z, ids, g_lp) + cegppo.entropy_grad(z, -ecoef * c)) / tau
    grads = {"hidden": gz @ w_, "weight": np.einsum("btv,bth->vh", gz, hid)}
    if b_ is not None:
        grads["bias"] = gz.sum((0, 1))
    metrics = {k: float(v) for k, v in cegppo.policy_metrics(lp, olp, adv, m, cfg).items()}
    metrics["entropy_mean"] = float(np.sum(np.where(m, ent, 0.0)) / max(int(m.sum()), 1))
    dent = cegppo.entropy_change_first_order(z, ids, -g_lp)  # w_t = c_t F_t A_t = -dloss/dl_t
    regions = cegppo.token_regions(lp, olp, adv, cfg)
    for name in REGIONS:
        metrics[f"entropy_change_{name}"] = float(np.sum(np.where(getattr(regions, name) & m, dent, 0.0)))
    return float(loss), metrics, grads


@functools.cache
def fused_fn(cfg: Any, agg: str, tau: float, ecoef: float, norm_length: Any, chunk: Any) -> Any:
    """jit(value_and_grad) of the fused loss w.r.t. (hidden, weight, bias); options static."""

    def f(params: dict[str, Any], ids: Any, olp: Any, adv: Any, mask: Any, nt: Any, ns: Any) -> Any:
        return cj.fused_linear_policy_loss(
            params["hidden"], params["weight"], ids, olp, adv, mask, cfg, bias=params.get("bias"),
            temperature=tau, entropy_coef=ecoef, agg=agg, num_tokens=nt, num_seqs=ns,
            norm_length=norm_length, chunk_size=chunk,
        )  # fmt: skip

    return jax.jit(jax.value_and_grad(f, has_aux=True))


def arrays(case: dict[str, Any], dtype: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    params = {k: jnp.asarray(case[k], dtype) for k in ("hidden", "weight", "bias") if case[k] is not None}
    rest = (
        jnp.asarray(case["token_ids"]),
        jnp.asarray(case["old_log_prob"], dtype),
        jnp.asarray(case["advantages"], dtype),
        jnp.asarray(case["mask"]),
        None if case["num_tokens"] is None else jnp.asarray(case["num_tokens"]),  # traced normalizers
        None if case["num_seqs"] is None else jnp.asarray(case["num_seqs"]),
    )
    return params, rest


def run_fused(case: dict[str, Any], dtype: Any, **over: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    opts = {k: case[k] for k in ("cfg", "agg", "temperature", "entropy_coef", "norm_length", "chunk_size")}
    opts.update(over)
    params, rest = arrays(case, dtype)
    (loss, metrics), grads = fused_fn(*opts.values())(params, *rest)
    return loss, metrics, grads


HEAD_FIELDS = ("hidden", "weight", "bias", "token_ids", "old_log_prob", "advantages", "mask", "cfg", "agg",
               "num_tokens", "num_seqs", "norm_length", "temperature", "entropy_coef", "chunk_size")


def rounded(case: dict[str, Any], dtype: Any) -> dict[str, Any]:
    out = dict(case)
    for k in ("hidden", "weight", "bias", "old_log_prob", "advantages"):
        if out[k] is not None:
            out[k] = to_np(jnp.asarray(out[k], dtype))
    return out


def close(name: str, got: Any, want: Any, tol: tuple[float, float]) -> None:
    np.testing.assert_allclose(to_np(got), np.asarray(want), rtol=tol[0], atol=tol[1], err_msg=name)


def term_sums(case: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per gradient element, the sum of |terms| of its contraction times log-softmax's conditioning
    (the kit's `head_expected`, float64): the scale of that element's rounding error."""
    return cc.head_expected(cc.HeadCase(**{k: case[k] for k in HEAD_FIELDS}, dtype="float32")).grad_scales


def close_grad(name: str, got: Any, want: Any, terms: np.ndarray, dt: str, ulps: int = 1) -> None:
    """|got - want| <= atol + rtol |want| (TOL) + `ulps` units of `dt` rounding of the sum of |terms|.

    The last part is Higham's dot-product bound: an entry of dloss/dh = G W whose terms cancel
    (true value 3e-16 from terms of size 3) carries an absolute error of about eps * sum |terms| in
    float32 (2e-7 seen), which no tolerance relative to the result admits. It is one ulp of the
    terms, not a looser rtol: an entry that does not cancel is held to TOL as before."""
    rtol, atol = TOL[dt]["grad"]
    g, w = to_np(got).astype(np.float64), np.asarray(want, np.float64)
    err = np.abs(g - w)
    bound = atol + rtol * np.abs(w) + ulps * float(np.finfo(dt).eps) * terms
    bad = ~(err <= bound)  # NaN in got fails
    i = int(np.argmax(np.where(bad, np.nan_to_num(err - bound, nan=np.inf), -np.inf)))
    assert not bad.any(), (
        f"{name}: {int(bad.sum())}/{bad.size} entries off; worst at {np.unravel_index(i, err.shape)}: "
        f"got {g.flat[i]!r}, want {w.flat[i]!r}, bound {bound.flat[i]:.3g}"
    )


def assert_matches(
    got: tuple[Any, dict, dict], want: tuple[Any, dict, dict], dt: str, grad_dt: str, terms: dict[str, np.ndarray]
) -> None:
    close("loss", got[0], want[0], TOL[dt]["value"])
    assert set(got[1]) == set(cj.FUSED_METRIC_KEYS)
    for k, v in want[1].items():
        close(f"metric {k}", got[1][k], v, TOL[dt]["value"])
    assert set(got[2]) == set(want[2])
    for k, g in want[2].items():
        assert got[2][k].dtype == jnp.dtype(grad_dt), k
        close_grad(f"grad {k}", got[2][k], g, terms[k], grad_dt)


# --------------------------------------------------------------------------------------------


@settings(max_examples=5)
@given(case=fused_cases())
def test_eager_equals_jit_and_masked_garbage_is_inert(case: dict[str, Any]) -> None:
    """S9.3: NaN hidden rows, -100 ids, NaN old log-probs at masked positions change nothing,
    and the eager call (no jit) agrees with the jitted one."""
    m = case["mask"]
    dirty = dict(case)
    dirty["hidden"] = np.where(m[..., None], case["hidden"], np.nan)
    dirty["token_ids"] = np.where(m, case["token_ids"], -100).astype(np.int32)
    dirty["old_log_prob"] = np.where(m, case["old_log_prob"], np.nan)
    clean = run_fused(case, "float64")
    got = run_fused(dirty, "float64")
    tol = TOL["float64"]["value"]
    close("loss", got[0], clean[0], tol)
    for k in clean[1]:
        close(k, got[1][k], clean[1][k], tol)
    for k in clean[2]:
        close(k, got[2][k], clean[2][k], tol)
    assert not np.any(to_np(got[2]["hidden"])[~m])
    params, rest = arrays(dirty, "float64")
    eager, _ = cj.fused_linear_policy_loss(
        params["hidden"], params["weight"], *rest[:4], case["cfg"], bias=params.get("bias"), agg=case["agg"],
        temperature=case["temperature"], entropy_coef=case["entropy_coef"], num_tokens=case["num_tokens"],
        num_seqs=case["num_seqs"], norm_length=case["norm_length"], chunk_size=case["chunk_size"],
    )  # fmt: skip
    close("eager loss", eager, clean[0], tol)


@pytest.mark.parametrize("block_rows", [1, 2, 3, V], ids=["rows-1", "rows-2+rest", "rows-3+rest", "whole"])
def test_weight_gradient_in_vocabulary_blocks_is_exact(monkeypatch: Any, block_rows: int) -> None:
    """The weight gradient is accumulated over vocabulary blocks (a fori_loop over whole blocks,
    then the remainder; at real sizes 16 MiB each) so that XLA keeps no second (V, H) array: with
    blocks of 1, 2 (3 whole + 1), 3 (2 whole + 1) and V rows it equals the float64 reference. The
    jaxpr holds the in-place block update exactly when blocks are smaller than V (the path is run)."""
    import cegppo.jax._fused as jf

    monkeypatch.setattr(jf, "_WEIGHT_GRAD_BLOCK_BYTES", block_rows * H * 8)
    case = _case(chunk_size=4)
    params, rest = arrays(case, "float64")
    opts = {k: case[k] for k in ("agg", "temperature", "entropy_coef", "norm_length", "chunk_size")}

    def f(p: dict[str, Any]) -> Any:
        return cj.fused_linear_policy_loss(
            p["hidden"], p["weight"], *rest[:4], case["cfg"], bias=p["bias"], num_tokens=rest[4],
            num_seqs=rest[5], **opts,
        )  # fmt: skip

    (loss, metrics), grads = jax.value_and_grad(f, has_aux=True)(params)  # eager: traced with the patch
    assert_matches((loss, metrics, grads), reference(case), "float64", "float64", term_sums(case))
    blocked = "dynamic_update_slice" in str(jax.make_jaxpr(jax.grad(lambda p: f(p)[0]))(params))
    assert blocked == (block_rows < V)


@pytest.mark.parametrize("dt", ["bfloat16", "float16"])
@settings(max_examples=4)
@given(case=fused_cases())
def test_half_inputs_compute_in_float32(dt: str, case: dict[str, Any]) -> None:
    """S9.5: bf16/fp16 hidden/weight: float32 loss and metrics (GEMMs with float32 results), gradients
    in the input dtype. Reference: float64 on the rounded inputs. The gradient GEMMs take dloss/dz
    rounded to `dt` (as any half-precision backward does), so each gradient entry carries up to one
    `dt` ulp times the sum of |terms| of its contraction (Higham's dot-product bound; the result
    itself can cancel to 0: hidden = 0 and W = 1 give a true gradient of 0 and a bf16 one of
    2^-12), plus float32's rounding of the softmax algebra. The kit's `head_expected` gives those
    sums of |terms| (times log-softmax's conditioning)."""
    r = rounded(case, dt)
    r["old_log_prob"], r["advantages"] = case["old_log_prob"], case["advantages"]
    params, rest = arrays(case, dt)
    rest = (rest[0], jnp.asarray(case["old_log_prob"], "float32"), jnp.asarray(case["advantages"], "float32"),
            *rest[3:])  # fmt: skip
    opts = (case["cfg"], case["agg"], case["temperature"], case["entropy_coef"], case["norm_length"])
    (loss, metrics), grads = fused_fn(*opts, case["chunk_size"])(params, *rest)
    assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in metrics.values())
    want = reference(r)
    close("loss", loss, want[0], TOL["float32"]["value"])
    close("entropy_mean", metrics["entropy_mean"], want[1]["entropy_mean"], TOL["float32"]["value"])
    ulp = float(jnp.finfo(dt).eps)
    terms = cc.head_expected(cc.HeadCase(**{k: r[k] for k in HEAD_FIELDS}, dtype="float32")).grad_scales
    for k, g in want[2].items():
        assert grads[k].dtype == jnp.dtype(dt)
        err, bound = np.abs(to_np(grads[k]) - g), ulp * (np.abs(g) + terms[k]) + TOL["float32"]["value"][1]
        assert np.all(err <= bound), f"grad {k}: |error| {err.max():.3g} exceeds its bound at {np.argmax(err - bound)}"


def _case(**over: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    hidden, weight = rng.normal(size=(B, T, H)), rng.normal(size=(V, H))
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = np.ones((B, T), bool)
    mask[0, 3:] = False
    case = {
        "hidden": hidden, "weight": weight, "bias": rng.normal(size=V), "token_ids": ids,
        "old_log_prob": cegppo.token_log_probs(hidden @ weight.T, ids) - rng.normal(0, 0.4, (B, T)),
        "advantages": rng.normal(size=(B, T)), "mask": mask, "cfg": cegppo.presets.ce_gppo_official(),
        "agg": "token-mean", "temperature": 1.0, "entropy_coef": 0.05, "num_tokens": None, "num_seqs": None,
        "norm_length": None, "chunk_size": 3,
    }  # fmt: skip
    case.update(over)
    return case


@pytest.mark.parametrize("change", ["weight", "hidden", "bias", "temperature", "entropy_coef", "token_ids"])
def test_the_comparison_detects_a_changed_input(change: str) -> None:
    """Guard against a vacuous comparison: one perturbed input moves the loss or a gradient beyond
    the float64 tolerance, so a fused implementation ignoring that input would fail."""
    case = _case()
    other = dict(case)
    if change in ("weight", "hidden", "bias"):  # one entry: a shift of all logits alike is invisible
        other[change] = case[change].copy()
        other[change].flat[1] += 1e-3
    elif change == "temperature":
        other["temperature"] = 1.01
    elif change == "entropy_coef":
        other["entropy_coef"] = 0.06
    else:
        other["token_ids"] = (case["token_ids"] + 1) % V
    terms = term_sums(case)
    assert_matches(run_fused(case, "float64"), reference(case), "float64", "float64", terms)
    with pytest.raises(AssertionError):
        assert_matches(run_fused(other, "float64"), reference(case), "float64", "float64", terms)


def _largest_intermediate(jaxpr: Any) -> int:
    """Largest number of elements of any value produced inside a jaxpr (sub-jaxprs included)."""
    best = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            best = max(best, int(np.prod(getattr(v.aval, "shape", ()), dtype=np.int64)))
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    best = max(best, _largest_intermediate(inner))
    return best


def test_no_tokens_by_vocab_array_exists_under_grad() -> None:
    """Issue 5: in jax.grad of the fused loss no value has N x V elements (N = 256, V = 300, chunk
    16: the largest allowed are a chunk's logits, 16 x 300, and the weight gradient, V x H); the
    unfused path's jaxpr holds N x V (so the probe can fail)."""
    b, t, h, v = 4, 64, 8, 300
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, v, (b, t)))
    olp, adv, mask = (
        jnp.asarray(-rng.random((b, t)) * 5),
        jnp.asarray(rng.normal(size=(b, t))),
        jnp.ones((b, t), bool),
    )
    cfg = cegppo.presets.ce_gppo_official()
    params = {
        "hidden": jnp.asarray(rng.normal(size=(b, t, h))),
        "weight": jnp.asarray(rng.normal(size=(v, h))),
    }

    def fused(p: dict[str, Any]) -> Any:
        return cj.fused_linear_policy_loss(p["hidden"], p["weight"], ids, olp, adv, mask, cfg, chunk_size=16)[
            0
        ]

    def unfused(p: dict[str, Any]) -> Any:
        return cj.policy_loss(cj.token_log_probs(p["hidden"] @ p["weight"].T, ids), olp, adv, mask, cfg)

    assert _largest_intermediate(jax.make_jaxpr(jax.grad(fused))(params).jaxpr) <= 16 * v
    assert _largest_intermediate(jax.make_jaxpr(jax.grad(unfused))(params).jaxpr) >= b * t * v


def _args() -> tuple[list[Any], Any]:
    case = _case()
    params, rest = arrays(case, "float32")
    return [params["hidden"], params["weight"], *rest[:4]], case["cfg"]


BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("hidden 2-D", lambda a: a.__setitem__(0, a[0][0]), ValueError, "hidden"),
    ("hidden integer", lambda a: a.__setitem__(0, a[0].astype(jnp.int32)), TypeError, "hidden"),
    ("weight wrong H", lambda a: a.__setitem__(1, a[1][:, :2]), ValueError, "weight"),
    ("token_ids float", lambda a: a.__setitem__(2, a[2].astype(jnp.float32)), TypeError, "token_ids"),
    ("token_ids shape", lambda a: a.__setitem__(2, a[2][:, :2]), ValueError, "token_ids"),
    ("old_log_prob shape", lambda a: a.__setitem__(3, a[3][:1]), ValueError, "old_log_prob"),
    ("advantages shape", lambda a: a.__setitem__(4, a[4][:, :1]), ValueError, "advantages"),
    ("mask shape", lambda a: a.__setitem__(5, a[5][:1]), ValueError, "mask"),
    ("bias shape", {"bias": (3,)}, ValueError, "bias"),  # a shape: collection builds no JAX array
    ("validate ids", {"validate": True, "_ids": V}, ValueError, "token_ids"),
    *((fused_option_id(o), o, exc, name) for o, exc, name in FUSED_BAD_OPTIONS),
]


@pytest.mark.parametrize("what,edit,exc,name", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_argument(
    what: str, edit: Any, exc: type[Exception], name: str
) -> None:
    """S9.6: ValueError/TypeError naming the argument (shapes, dtypes, options, validate=True)."""
    args, cfg = _args()
    kw: dict[str, Any] = {}
    if callable(edit):
        edit(args)
    else:
        kw = dict(edit)
        if "bias" in kw:
            kw["bias"] = jnp.zeros(kw["bias"])
        if "_ids" in kw:
            args[2] = args[2].at[1, 0].set(kw.pop("_ids"))
    with pytest.raises(exc, match=name):
        cj.fused_linear_policy_loss(*args, cfg, **kw)
