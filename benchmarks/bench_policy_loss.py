"""Forward + backward of the CE-GPPO policy loss: cegppo.torch (eager, compiled), cegppo.jax (jit).

Every figure is measured in the same run, on the same inputs (fp32, (B, T) log-probs, per-token
advantages, ~80 % valid tokens with right padding, log-ratios ~ N(0, 0.3) so every region is
populated), against:

- the floor: a memcpy moving the bytes a fused kernel must move, 17 bytes per token (read
  log_prob, old_log_prob, advantages as fp32 and the bool mask, write the fp32 gradient), i.e.
  `dst.copy_(src)` of 8.5 bytes per token (a copy reads and writes each byte);
- a naive textbook PPO-clip loss written with the usual torch ops, as verl's `vanilla` policy
  loss does (ratio = exp(clamp(logp - old, -20, 20)), -A * ratio vs -A * clamp(ratio), max, dual
  clip, clip-fraction and KL metrics, masked token-mean): eager, compiled and in JAX (jit);
- verl's own `compute_policy_loss_vanilla`, when verl is installed.

Timed: `loss = f(...)` then the gradient w.r.t. log_prob (`torch.autograd.grad`,
`jax.value_and_grad`), median and min of `--repeats` rounds after warm-up, the implementations
timed round-robin (compilation excluded, the first call reported separately). Memory: bytes saved for backward per token (torch, eager and compiled: unique storages captured by
`saved_tensors_hooks`, inputs excluded) and XLA's temp buffer size per token (JAX,
`compiled.memory_analysis()`); CPU has no allocator peak counter, so these are the honest figures.

    python benchmarks/bench_policy_loss.py            # (B, T) in {(64, 1024), (256, 4096), (512, 8192)}
    python benchmarks/bench_policy_loss.py --quick    # small sizes, few repeats (smoke test)

Prints Markdown tables (docs/benchmarks.md). CUDA is used when available (`--device cuda`).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import cegppo
import numpy as np

CFG = cegppo.presets.ce_gppo_official()  # eps 0.2/0.2, beta 0.75/1, dual clip c = 10
BYTES_PER_TOKEN = 4 + 4 + 4 + 1 + 4  # read lp, old, adv (fp32), mask (bool); write grad (fp32)
FULL_SIZES = [(64, 1024), (256, 4096), (512, 8192)]
QUICK_SIZES = [(16, 256), (64, 1024)]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def make_inputs(b: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lp = -rng.exponential(1.0, (b, t)).astype(np.float32)
    logr = (rng.standard_normal((b, t)) * 0.3).astype(np.float32)
    adv = rng.standard_normal((b, t)).astype(np.float32)
    lengths = rng.integers(int(0.6 * t), t + 1, b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    return {"lp": lp, "old": lp - logr, "adv": adv, "mask": mask}


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------


def naive_ppo_torch(
    lp: Any, old: Any, adv: Any, mask: Any, clip_low: float = 0.2, clip_high: float = 0.2, c: float = 10.0
):
    """Textbook dual-clip PPO with masked token-mean, written like verl's `vanilla` loss."""
    import torch

    neg_kl = torch.clamp(lp - old, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    losses1 = -adv * ratio
    losses2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip1 = torch.maximum(losses1, losses2)
    clipfrac = (torch.gt(losses2, losses1).float() * m).sum() / n
    losses3 = -adv * c
    clip2 = torch.min(losses3, clip1)
    clipfrac_lower = (torch.gt(clip1, losses3).float() * (adv < 0).float() * m).sum() / n
    losses = torch.where(adv < 0, clip2, clip1)
    ppo_kl = (-neg_kl * m).sum() / n
    loss = (losses * m).sum() / n
    return loss, (clipfrac.detach(), clipfrac_lower.detach(), ppo_kl.detach())


def naive_ppo_jax(
    lp: Any, old: Any, adv: Any, mask: Any, clip_low: float = 0.2, clip_high: float = 0.2, c: float = 10.0
):
    """The same textbook loss in jax.numpy (returns the loss only: metrics under stop_gradient)."""
    import jax.numpy as jnp

    neg_kl = jnp.clip(lp - old, -20.0, 20.0)
    ratio = jnp.exp(neg_kl)
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    losses1 = -adv * ratio
    losses2 = -adv * jnp.clip(ratio, 1 - clip_low, 1 + clip_high)
    clip1 = jnp.maximum(losses1, losses2)
    clip2 = jnp.minimum(-adv * c, clip1)
    losses = jnp.where(adv < 0, clip2, clip1)
    return (losses * m).sum() / n


def verl_vanilla() -> Callable[..., Any] | None:
    """verl's compute_policy_loss_vanilla with an actor config for eps 0.2 and c = 10, or None."""
    try:
        from verl.trainer.ppo import core_algos  # type: ignore[import-not-found]
    except Exception:
        return None
    fn = getattr(core_algos, "compute_policy_loss_vanilla", None)
    if fn is None:
        return None
    try:
        from verl.workers.config import ActorConfig  # type: ignore[import-not-found]

        config: Any = ActorConfig(
            strategy="fsdp",
            rollout_n=1,
            ppo_micro_batch_size_per_gpu=1,
            clip_ratio=0.2,
            clip_ratio_low=0.2,
            clip_ratio_high=0.2,
            clip_ratio_c=10.0,
            loss_agg_mode="token-mean",
        )
    except Exception:
        return None

    def run(lp: Any, old: Any, adv: Any, mask: Any) -> Any:
        out = fn(
            old_log_prob=old,
            log_prob=lp,
            advantages=adv,
            response_mask=mask,
            loss_agg_mode="token-mean",
            config=config,
        )
        return out[0]

    return run


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------


def first_call(fn: Callable[[], Any]) -> float:
    """ms of the first call of fn (which includes any compilation)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


class Row:
    """One implementation: its timed callable, figures (median / min ms of the repeats, first-call
    ms, memory per token: torch bytes saved for backward, JAX XLA temp buffers), or a note when it
    did not run."""

    def __init__(
        self,
        name: str,
        fn: Callable[[], Any] | None,
        first_ms: float | None = None,
        saved: float | None = None,
        *,
        xla_temp: float | None = None,
        note: str = "",
    ) -> None:
        self.name, self.fn, self.first_ms, self.note = name, fn, first_ms, note
        self.saved, self.xla_temp = saved, xla_temp
        self.ms: float | None = None
        self.best: float | None = None


def time_rows(rows: list[Row], repeats: int, warmup: int) -> None:
    """Warm every implementation up, then time them round-robin (one call of each per round), so a
    burst of load on the shared machine hits all of them alike; median and min over the rounds.
    Called once per framework (see `main`)."""
    live = [r for r in rows if r.fn is not None]
    for r in live:
        for _ in range(warmup):
            r.fn()  # type: ignore[misc]
    times: dict[str, list[float]] = {r.name: [] for r in live}
    for _ in range(repeats):
        for r in live:
            t0 = time.perf_counter()
            r.fn()  # type: ignore[misc]
            times[r.name].append((time.perf_counter() - t0) * 1e3)
    for r in live:
        r.ms, r.best = statistics.median(times[r.name]), min(times[r.name])


def torch_rows(x: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    import cegppo.torch as cg
    import torch

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lp0 = torch.from_numpy(x["lp"]).to(dev)
    old = torch.from_numpy(x["old"]).to(dev)
    adv = torch.from_numpy(x["adv"]).to(dev)
    mask = torch.from_numpy(x["mask"]).to(dev)
    lp = lp0.clone().requires_grad_()
    n = lp.numel()
    rows: list[Row] = []
    losses: dict[str, float] = {}

    # floor: a memcpy of the 17 B/token traffic (8.5 B/token read + written)
    src = torch.empty(int(n * BYTES_PER_TOKEN // 2), dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)

    def floor() -> None:
        dst.copy_(src)
        sync()

    rows.append(Row(f"floor: memcpy of {BYTES_PER_TOKEN} B/token traffic", floor, first_call(floor)))

    def fwd_bwd(f: Callable[..., Any], key: str) -> Callable[[], None]:
        def run() -> None:
            loss = f(lp, old, adv, mask)
            loss = loss[0] if isinstance(loss, tuple) else loss
            torch.autograd.grad(loss, lp)
            sync()
            losses[key] = float(loss.detach())

        return run

    def saved_bytes(f: Callable[..., Any]) -> float:
        """Unique storages saved for backward, inputs excluded, per token."""
        inputs = {t.untyped_storage().data_ptr() for t in (lp, old, adv, mask)}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in inputs:
                seen[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = f(lp, old, adv, mask)
        del out
        return sum(seen.values()) / n

    def add(name: str, key: str, f: Callable[..., Any]) -> None:
        run = fwd_bwd(f, key)
        first = first_call(run)  # compiles, for torch.compile: before saved_bytes, outside the hooks
        rows.append(Row(name, run, first, saved_bytes(f)))

    cegppo_eager = functools.partial(cg.policy_loss, cfg=CFG, agg="token-mean")
    add("cegppo.torch eager", "cegppo.torch", cegppo_eager)
    add("naive PPO, torch eager (baseline)", "naive.torch", naive_ppo_torch)
    if not args.no_compile:
        torch._dynamo.reset()
        add("cegppo.torch torch.compile", "cegppo.torch.compile", torch.compile(cegppo_eager, fullgraph=True))
        add("naive PPO, torch.compile", "naive.torch.compile", torch.compile(naive_ppo_torch, fullgraph=True))
    verl = verl_vanilla()
    if verl is None:
        rows.append(Row("verl vanilla (compute_policy_loss_vanilla)", None, note="verl not installed"))
    else:
        add("verl vanilla (compute_policy_loss_vanilla)", "verl", verl)
    return rows, losses


def jax_rows(x: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    import cegppo.jax as cgj
    import jax
    import jax.numpy as jnp

    arrs = [jnp.asarray(x[k]) for k in ("lp", "old", "adv", "mask")]
    n = x["lp"].size
    rows: list[Row] = []
    losses: dict[str, float] = {}
    for name, key, f in (
        ("cegppo.jax jit", "cegppo.jax", functools.partial(cgj.policy_loss, cfg=CFG, agg="token-mean")),
        ("naive PPO, jax jit", "naive.jax", naive_ppo_jax),
    ):
        vg = jax.jit(jax.value_and_grad(f))

        def run(vg: Any = vg, key: str = key) -> None:
            val, g = vg(*arrs)
            g.block_until_ready()
            losses[key] = float(val)

        first = first_call(run)
        mem = vg.lower(*arrs).compile().memory_analysis()
        temp = None if mem is None else mem.temp_size_in_bytes / n
        rows.append(Row(name, run, first, xla_temp=temp))
    return rows, losses


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def report(b: int, t: int, rows: list[Row], losses: dict[str, float]) -> None:
    n = b * t
    by = {r.name: r.ms for r in rows if r.ms is not None}
    floor = rows[0].ms
    naive = by.get("naive PPO, torch eager (baseline)")
    print(f"\n### (B, T) = ({b}, {t}): {n:,} tokens, fp32\n")
    print(
        "| implementation | fwd+bwd ms (median) | min ms | x floor | speed-up vs naive torch eager | first call ms "
        "| saved for backward B/token | XLA temp B/token |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.ms is None:
            print(f"| {r.name} | {r.note} | | | | | | |")
            continue
        speed = None if naive is None or r is rows[0] else naive / r.ms
        print(
            f"| {r.name} | {r.ms:.3f} | {_fmt(r.best, '.3f')} | {r.ms / floor:.2f} | {_fmt(speed)} | {_fmt(r.first_ms, '.0f')} "
            f"| {_fmt(r.saved, '.1f')} | {_fmt(r.xla_temp, '.1f')} |"
        )
    tc, jj = by.get("cegppo.torch torch.compile"), by.get("cegppo.jax jit")
    verl = by.get("verl vanilla (compute_policy_loss_vanilla)")
    print()
    if tc:
        print(f"- cegppo.torch compiled / floor = {tc / floor:.2f} (target <= 3)")
        for label, base in (("verl vanilla", verl), ("naive PPO torch eager", naive)):
            if base:
                print(f"- {label} / cegppo.torch compiled = {base / tc:.2f} (target >= 10)")
    if tc and jj:
        print(f"- cegppo.jax jit / cegppo.torch compiled = {jj / tc:.2f} (target <= 1.5)")
    ref = losses.get("cegppo.torch")
    if ref is not None:
        diffs = {k: abs(v - ref) for k, v in losses.items() if k.startswith("cegppo")}
        print(f"- max |loss - cegppo.torch eager| over the cegppo variants: {max(diffs.values()):.2e}")
    if "verl" in losses and "naive.torch" in losses:
        print(
            f"- |naive PPO torch - verl vanilla| loss difference: {abs(losses['verl'] - losses['naive.torch']):.2e}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke test, seconds)")
    p.add_argument("--sizes", default=None, help="comma-separated BxT list, e.g. 64x1024,512x8192")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per implementation (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs after the first call")
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda); JAX uses its default device")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-jax", action="store_true", help="skip JAX")
    args = p.parse_args(argv)
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    args.repeats = args.repeats or (3 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    import torch

    print("## policy_loss forward + backward (benchmarks/bench_policy_loss.py)\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, python {platform.python_version()}"
    )
    versions = f"torch {torch.__version__}"
    if not args.no_jax:
        import jax

        versions += f", jax {jax.__version__} ({jax.default_backend()})"
    print(f"- {versions}; torch device {args.device}; config ce_gppo_official, agg token-mean")
    print(
        f"- median (and min) of {args.repeats} rounds, implementations timed round-robin, after "
        f"{args.warmup} warm-up runs; the first call (compilation included) is timed separately"
    )
    if hasattr(os, "getloadavg"):
        print(f"- load average at the start: {os.getloadavg()[0]:.2f} (1 min)")
    for b, t in sizes:
        x = make_inputs(b, t)
        rows, losses = torch_rows(x, args)
        # One framework at a time: torch's OpenMP workers keep spinning for a while after a
        # parallel region, and would slow down whichever XLA computation ran right after them.
        time_rows(rows, args.repeats, args.warmup)
        if not args.no_jax:
            jrows, jlosses = jax_rows(x, args)
            time_rows(jrows, args.repeats, args.warmup)
            rows += jrows
            losses.update(jlosses)
        report(b, t, rows, losses)
    if hasattr(os, "getloadavg"):
        print(f"\n- load average at the end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
