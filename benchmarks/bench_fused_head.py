"""Fused LM-head CE-GPPO loss vs the unfused path (materialised logits): time and peak memory.

One training step = loss + gradients w.r.t. hidden (B, T, H) and the LM-head weight (V, H), fp32,
every token valid, config `ce_gppo_official`, token-mean, entropy bonus 1e-3. Variants:

- torch-unfused: logits = h @ W.T (N x V) -> cegppo.torch.token_log_probs / entropy -> policy_loss, autograd;
- torch-fused:   cegppo.torch.fused_linear_policy_loss (chunked, no N x V array);
- torch-floor:   the three bare matmuls of any LM-head step (logits, grad-hidden, grad-weight), full size;
- torch-chunked-gemms: the same three matmuls over token chunks of the fused head's size, the
                 weight gradient accumulated chunk by chunk: what chunking alone costs (the
                 weight is read twice and its gradient read and written once per chunk), so
                 fused minus this is the softmax/entropy/gradient algebra;
- jax-unfused / jax-fused: the same two under jax.jit(jax.value_and_grad).

Each variant runs in its own process so that its peak memory is clean. Memory (CPU has no
allocator peak counter for torch tensors, and tracemalloc does not see them):

- peak RSS growth: the process's peak resident set size during the step minus its RSS just
  before it (the peak is reset with /proc/self/clear_refs = 5 on Linux, so imports and input
  creation do not count). It includes the gradients themselves (V x H for the weight).
- JAX also: XLA's `temp_size_in_bytes` from `compiled.memory_analysis()` (scratch buffers of the
  compiled step, arguments and outputs excluded): an exact, allocator-independent figure.

Time: median of `--repeats` steps after one warm-up step (the warm-up, which includes JAX
compilation, is the one measured for memory). Ratios are against torch-unfused of the same run.
CUDA figures are not produced by this script's CPU run; with a GPU use torch.cuda.max_memory_allocated.

    python benchmarks/bench_fused_head.py            # (B, T, H, V) = (4, 512, 896, 151936): Qwen2.5-0.5B head
    python benchmarks/bench_fused_head.py --quick    # small shapes, 2 repeats (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

FULL = [(4, 512, 896, 151936)]
QUICK = [(2, 256, 256, 32000), (4, 256, 512, 32000)]
VARIANTS = ["torch-unfused", "torch-fused", "torch-floor", "torch-chunked-gemms", "jax-unfused", "jax-fused"]
ENTROPY_COEF = 1e-3


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _inputs(b: int, t: int, h: int, v: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    hidden = (rng.standard_normal((b, t, h)) * 0.5).astype(np.float32)
    weight = (rng.standard_normal((v, h)) / np.sqrt(h)).astype(np.float32)
    ids = rng.integers(0, v, (b, t))
    return {
        "hidden": hidden,
        "weight": weight,
        "ids": ids,
        "old": (-rng.exponential(2.0, (b, t)) + rng.normal(0, 0.3, (b, t))).astype(np.float32),
        "adv": rng.standard_normal((b, t)).astype(np.float32),
        "mask": np.ones((b, t), bool),
    }


def _chunk_rows(v: int, chunk_mib: float | None) -> int | None:
    """Token rows per chunk for `chunk_mib` MiB of fp32 logits (None: the library's default)."""
    if chunk_mib is None:
        from cegppo.torch._fused import DEFAULT_CHUNK_BYTES

        return max(1, DEFAULT_CHUNK_BYTES // (v * 4))
    return max(1, int(chunk_mib * (1 << 20)) // (v * 4))


def _torch_step(variant: str, x: dict[str, Any], chunk_mib: float | None = None) -> Any:
    import cegppo
    import cegppo.torch as cg
    import torch

    cfg = cegppo.presets.ce_gppo_official()
    h = torch.from_numpy(x["hidden"]).requires_grad_()
    w = torch.from_numpy(x["weight"]).requires_grad_()
    ids, old, adv, mask = (torch.from_numpy(x[k]) for k in ("ids", "old", "adv", "mask"))

    rows = _chunk_rows(w.shape[0], chunk_mib)
    chunk = None if chunk_mib is None else rows

    def step() -> None:
        h.grad = w.grad = None
        if variant == "torch-fused":
            loss, _ = cg.fused_linear_policy_loss(h, w, ids, old, adv, mask, cfg, entropy_coef=ENTROPY_COEF,
                                                  chunk_size=chunk)  # fmt: skip
            loss.backward()
        elif variant == "torch-chunked-gemms":
            with torch.no_grad():
                hf = h.view(-1, h.shape[-1])
                n = hf.shape[0]
                z, gh, gw = torch.empty(rows, w.shape[0]), torch.empty_like(hf), torch.empty_like(w)
                for i0 in range(0, n, rows):
                    hc, zc = hf[i0 : i0 + rows], z[: min(rows, n - i0)]
                    torch.mm(hc, w.T, out=zc)
                    torch.mm(zc, w, out=gh[i0 : i0 + rows])
                    torch.mm(zc.T, hc, out=gw) if i0 == 0 else gw.addmm_(zc.T, hc)
        elif variant == "torch-unfused":
            z = h @ w.T
            lp = cg.token_log_probs(z, ids)
            loss = cg.policy_loss(lp, old, adv, mask, cfg) - ENTROPY_COEF * cg.aggregate_loss(
                cg.entropy(z), mask
            )
            loss.backward()
        else:  # floor: logits, grad-hidden, grad-weight GEMMs
            with torch.no_grad():
                hf = h.view(-1, h.shape[-1])
                z = hf @ w.T
                _ = z @ w
                _ = z.T @ hf

    return step


def _jax_step(variant: str, x: dict[str, Any]) -> tuple[Any, int]:
    import cegppo
    import cegppo.jax as cj
    import jax
    import jax.numpy as jnp

    cfg = cegppo.presets.ce_gppo_official()
    ids, old, adv, mask = (jnp.asarray(x[k]) for k in ("ids", "old", "adv", "mask"))
    params = {"h": jnp.asarray(x["hidden"]), "w": jnp.asarray(x["weight"])}

    def loss_fn(p: dict[str, Any]) -> Any:
        if variant == "jax-fused":
            return cj.fused_linear_policy_loss(
                p["h"], p["w"], ids, old, adv, mask, cfg, entropy_coef=ENTROPY_COEF
            )[0]
        z = p["h"] @ p["w"].T
        lp = cj.token_log_probs(z, ids)
        return cj.policy_loss(lp, old, adv, mask, cfg) - ENTROPY_COEF * cj.aggregate_loss(cj.entropy(z), mask)

    f = jax.jit(jax.value_and_grad(loss_fn))
    compiled = f.lower(params).compile()
    temp = int(compiled.memory_analysis().temp_size_in_bytes)

    def step() -> None:
        jax.block_until_ready(compiled(params))

    return step, temp


def worker(variant: str, shape: tuple[int, int, int, int], repeats: int, chunk_mib: float | None = None) -> dict[str, Any]:
    x = _inputs(*shape)
    temp = None
    if variant.startswith("torch"):
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        step = _torch_step(variant, x, chunk_mib)
    else:
        step, temp = _jax_step(variant, x)
    rss0 = _rss()
    exact = _reset_peak()
    peak0 = _peak()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    growth = _peak() - (rss0 if exact else max(rss0, peak0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "shape": shape, "seconds": statistics.median(times), "first_s": first,
            "peak_growth_bytes": growth, "peak_reset": exact, "xla_temp_bytes": temp}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--chunk-mib", type=float, default=None,
                    help="torch fused / chunked GEMMs: MiB of fp32 logits per chunk (default: the library's)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    if args.worker:
        shape = tuple(int(s) for s in args.shape.split("x"))
        print(json.dumps(worker(args.worker, shape, repeats, args.chunk_mib)))  # type: ignore[arg-type]
        return
    shapes = QUICK if args.quick else FULL
    variants = args.variants.split(",")
    print(f"# fused LM-head benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, fp32, CPU; CUDA not measured")  # fmt: skip
    print(f"# command: python {' '.join(sys.argv)}")
    mib = 1 << 20
    for shape in shapes:
        b, t, h, v = shape
        n = b * t
        print(f"\n## (B, T, H, V) = {shape}: N*V*4 = {n * v * 4 / mib:.0f} MiB of fp32 logits, "
              f"weight gradient V*H*4 = {v * h * 4 / mib:.0f} MiB\n")  # fmt: skip
        print(f"torch chunk: {_chunk_rows(v, args.chunk_mib)} token rows\n")
        print("| variant | time s | x unfused | x floor | peak RSS growth MiB | x unfused | XLA temp MiB |")
        print("|---|---|---|---|---|---|---|")
        rows = []
        for var in variants:
            cmd = [sys.executable, __file__, "--worker", var, "--shape", "x".join(map(str, shape)),
                   "--repeats", str(repeats)]  # fmt: skip
            if args.chunk_mib is not None:
                cmd += ["--chunk-mib", str(args.chunk_mib)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(
                    f"| {var} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode} |"
                )
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = next((r for r in rows if r["variant"] == "torch-unfused"), None)
        floor = next((r for r in rows if r["variant"] == "torch-floor"), None)
        for r in rows:
            tr = f"{r['seconds'] / base['seconds']:.2f}" if base else "-"
            fr = f"{r['seconds'] / floor['seconds']:.2f}" if floor else "-"
            mr = f"{r['peak_growth_bytes'] / max(base['peak_growth_bytes'], 1):.2f}" if base else "-"
            temp = "-" if r["xla_temp_bytes"] is None else f"{r['xla_temp_bytes'] / mib:.1f}"
            print(
                f"| {r['variant']} | {r['seconds']:.3f} | {tr} | {fr} | {r['peak_growth_bytes'] / mib:.1f} | {mr} | {temp} |"
            )


if __name__ == "__main__":
    main()
