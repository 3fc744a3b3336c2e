"""cegppo.jax on a batch sharded over 2 host devices equals the unsharded computation (spec S8.3).

XLA fixes the number of host devices when jax is imported, so the sharded side runs in a child
process (this file run as a script, `--worker`) with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`; the unsharded side runs here, on one device.
Both in float64 (`jax_enable_x64`), so the comparison is tight.

Set-up: a tiny linear policy (logits = x @ W, log-probs by `cg.token_log_probs`) with replicated
parameters W (D, V). The batch of 8 sequences is split over a 1-D mesh axis "data" (rows 0-3 dense,
rows 4-7 sparse with one fully masked row, NaN/inf garbage at masked positions). Three ways:

1. `jit` on globally sharded arrays (`NamedSharding(mesh, P("data"))`): jit sees the global
   array, so the default normalizers are already global: value and gradients equal the unsharded.
2. `shard_map` (each program sees its shard): `cg.global_counts(mask, "data")` (`lax.psum`) as
   num_tokens / num_seqs, two micro-batches per shard, `lax.psum` of the losses; `jax.grad` of the
   whole mapped function (W's cotangent is summed over the axis by autodiff).
3. negative control: the same `shard_map` with local (per-micro-batch) normalizers gives a
   different answer for every normalised mode. That is what shows these tests can fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import cegppo
import numpy as np
import pytest

B, T, D, V = 8, 6, 4, 5
CFG = cegppo.presets.ce_gppo_official()
TIMEOUT_S = 180


def make_problem() -> dict[str, np.ndarray]:
    """The global batch as float64 NumPy arrays (deterministic)."""
    rng = np.random.default_rng(4321)
    x = rng.standard_normal((B, T, D))
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    w0 = rng.standard_normal((D, V)) * 0.7
    logits = x @ w0
    lp0 = np.take_along_axis(logits, ids[..., None], -1)[..., 0] - np.log(np.exp(logits).sum(-1))
    logr = rng.standard_normal((B, T)) * 0.8
    logr[0, 0] = 3.0  # > log(c = 10): with a negative advantage, a dual-clip token
    adv = rng.standard_normal((B, T))
    adv[0, 0] = -1.5
    density = np.array([0.9, 0.9, 0.9, 0.9, 0.4, 0.4, 0.0, 0.4])[:, None]
    mask = rng.random((B, T)) < density
    mask[0, 0] = mask[4, 0] = True
    old = np.where(mask, lp0 - logr, np.nan)
    adv = np.where(mask, adv, np.inf)
    return {"x": x, "ids": ids, "w0": w0, "old": old, "adv": adv, "mask": mask}


def _loss_fns(cg: Any, agg: str) -> tuple[Any, Any]:
    """(loss of W, loss of log_prob) on one (shard of the) batch with given normalizers."""

    def loss_w(w, x, ids, old, adv, mask, n_tok=None, n_seq=None):
        lp = cg.token_log_probs(x @ w, ids)
        return cg.policy_loss(lp, old, adv, mask, CFG, agg, n_tok, n_seq)

    def loss_lp(lp, old, adv, mask):
        return cg.policy_loss(lp, old, adv, mask, CFG, agg)

    return loss_w, loss_lp


def _worker(out: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import cegppo.jax as cg
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 2, jax.devices()
    mesh = jax.make_mesh((2,), ("data",))
    p = make_problem()
    rows, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    w = jax.device_put(jnp.asarray(p["w0"]), repl)
    batch = {k: jax.device_put(jnp.asarray(p[k]), rows) for k in ("x", "ids", "old", "adv", "mask")}
    res: dict[str, Any] = {"n_devices_of_x": len(batch["x"].sharding.device_set)}

    for agg in cegppo.AGG_MODES:
        loss_w, loss_lp = _loss_fns(cg, agg)
        # 1. jit on globally sharded arrays: default normalizers are global already.
        f = jax.jit(jax.value_and_grad(loss_w))
        val, gw = f(w, batch["x"], batch["ids"], batch["old"], batch["adv"], batch["mask"])
        res[f"{agg}/jit/loss"], res[f"{agg}/jit/grad_w"] = np.asarray(val), np.asarray(gw)
        lp = jax.device_put(jnp.asarray(cg.token_log_probs(jnp.asarray(p["x"] @ p["w0"]), p["ids"])), rows)
        val, glp = jax.jit(jax.value_and_grad(loss_lp))(lp, batch["old"], batch["adv"], batch["mask"])
        res[f"{agg}/jit/loss_lp"], res[f"{agg}/jit/grad_lp"] = np.asarray(val), np.asarray(glp)
        res[f"{agg}/jit/grad_lp_sharded"] = np.asarray(glp.sharding.is_equivalent_to(rows, 2))

        # 2./3. shard_map: per-shard losses over 2 micro-batches, psum over "data".
        for counts in ("global", "local"):

            @partial(
                jax.shard_map,
                mesh=mesh,
                in_specs=(P(), P("data"), P("data"), P("data"), P("data"), P("data")),
                out_specs=P(),
            )
            def mapped(w, x, ids, old, adv, mask, loss_w=loss_w, counts=counts):
                if counts == "global":
                    n_tok, n_seq = cg.global_counts(mask, "data")  # one psum per count
                else:
                    n_tok = n_seq = None
                half = x.shape[0] // 2
                total = 0.0
                for s in (slice(0, half), slice(half, None)):  # gradient accumulation
                    total = total + loss_w(w, x[s], ids[s], old[s], adv[s], mask[s], n_tok, n_seq)
                return jax.lax.psum(total, "data")

            val, gw = jax.jit(jax.value_and_grad(mapped))(
                w, batch["x"], batch["ids"], batch["old"], batch["adv"], batch["mask"]
            )
            res[f"{agg}/shard_map_{counts}/loss"] = np.asarray(val)
            res[f"{agg}/shard_map_{counts}/grad_w"] = np.asarray(gw)

    counts_fn = jax.jit(
        jax.shard_map(lambda m: cg.global_counts(m, "data"), mesh=mesh, in_specs=P("data"), out_specs=P())
    )
    res["counts"] = np.asarray(counts_fn(batch["mask"]))
    np.savez(out, **res)


@pytest.fixture(scope="module")
def sharded() -> dict[str, np.ndarray]:
    """Run the 2-device worker once for the whole module; return its results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.npz")
        env = {
            **os.environ,
            "XLA_FLAGS": (
                os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
            ).strip(),
            "JAX_PLATFORMS": "cpu",
        }
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", out],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        assert proc.returncode == 0, f"2-device worker failed:\n{proc.stdout}\n{proc.stderr}"
        with np.load(out) as f:
            return dict(f)


def _unsharded(agg: str) -> dict[str, np.ndarray]:
    """One device, whole batch, default normalizers (this process: x64 on via tests/jax/conftest.py)."""
    import cegppo.jax as cg
    import jax
    import jax.numpy as jnp

    p = make_problem()
    loss_w, loss_lp = _loss_fns(cg, agg)
    args = [jnp.asarray(p[k]) for k in ("x", "ids", "old", "adv", "mask")]
    val, gw = jax.value_and_grad(loss_w)(jnp.asarray(p["w0"]), *args)
    lp = cg.token_log_probs(jnp.asarray(p["x"] @ p["w0"]), p["ids"])
    val_lp, glp = jax.value_and_grad(loss_lp)(lp, *args[2:])
    assert val.dtype == jnp.float64
    return {
        "loss": np.asarray(val),
        "grad_w": np.asarray(gw),
        "loss_lp": np.asarray(val_lp),
        "grad_lp": np.asarray(glp),
    }


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_worker_really_sharded(sharded):
    """The batch lives on 2 devices, and global_counts(mask, "data") inside shard_map is the global count."""
    assert int(sharded["n_devices_of_x"]) == 2
    assert tuple(sharded["counts"]) == cegppo.local_counts(make_problem()["mask"])


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_jit_on_sharded_arrays_equals_unsharded(sharded, agg):
    """jit(value_and_grad) on NamedSharding(P("data")) inputs = one device (loss, dW, dlog_prob; float64)."""
    ref = _unsharded(agg)
    _close(sharded[f"{agg}/jit/loss"], ref["loss"])
    _close(sharded[f"{agg}/jit/grad_w"], ref["grad_w"])
    _close(sharded[f"{agg}/jit/loss_lp"], ref["loss_lp"])
    _close(sharded[f"{agg}/jit/grad_lp"], ref["grad_lp"])
    assert bool(sharded[f"{agg}/jit/grad_lp_sharded"]), "the log_prob gradient should keep the batch sharding"


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_shard_map_with_global_counts_equals_unsharded(sharded, agg):
    """shard_map + global_counts(mask, "data") + psum of micro-batch losses = one device (loss and dW)."""
    ref = _unsharded(agg)
    _close(sharded[f"{agg}/shard_map_global/loss"], ref["loss"])
    _close(sharded[f"{agg}/shard_map_global/grad_w"], ref["grad_w"])


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_shard_map_with_local_counts_is_wrong(sharded, agg):
    """Negative control: per-micro-batch normalizers inside shard_map do NOT give the full batch (but token-sum)."""
    ref = _unsharded(agg)
    loss, grad = sharded[f"{agg}/shard_map_local/loss"], sharded[f"{agg}/shard_map_local/grad_w"]
    if agg == "token-sum":
        _close(loss, ref["loss"])
        _close(grad, ref["grad_w"])
    else:
        assert not np.allclose(loss, ref["loss"], rtol=1e-3, atol=0)
        assert not np.allclose(grad, ref["grad_w"], rtol=1e-3, atol=0)


def test_unsharded_matches_reference():
    """The one-device baseline equals the NumPy reference's loss, and the batch visits every region."""
    p = make_problem()
    import cegppo.jax as cg
    import jax.numpy as jnp

    lp = np.asarray(cg.token_log_probs(jnp.asarray(p["x"] @ p["w0"]), p["ids"]))
    metrics = cegppo.policy_metrics(lp, p["old"], p["adv"], p["mask"], CFG)
    for region in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac"):
        assert float(metrics[region]) > 0, region
    for agg in cegppo.AGG_MODES:
        ref = float(cegppo.policy_loss(lp, p["old"], p["adv"], p["mask"], CFG, agg))
        assert abs(float(_unsharded(agg)["loss"]) - ref) <= 1e-12 * max(1.0, abs(ref))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="2-device worker of tests/jax/test_sharding.py")
    parser.add_argument("--worker", required=True, help="output .npz path")
    _worker(parser.parse_args().worker)
