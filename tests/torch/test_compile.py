"""torch.compile: policy_loss compiles with fullgraph=True (no graph break, no host sync) and equals eager.

Inductor compiles are slow on CPU, so only two real compiles run here; the graph-break checks of
every mode use Dynamo alone (`torch._dynamo.explain`, no code generation).
"""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch


def _inputs(dtype: torch.dtype, per_sequence: bool = False):
    gen = torch.Generator().manual_seed(11)
    b, t = 6, 17
    lp = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 4
    logr = torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.6
    logr[0, :4] = torch.tensor([1e4, -1e4, 300.0, -300.0], dtype=torch.float64)
    adv = torch.randn(b if per_sequence else (b, t), generator=gen, dtype=torch.float64)
    if not per_sequence:
        adv[1, :3] = 0.0
    mask = torch.rand(b, t, generator=gen) > 0.3
    mask[2] = False
    lp_dirty = torch.where(mask, lp, torch.tensor(float("nan"), dtype=torch.float64))
    olp = torch.where(mask, lp - logr, torch.tensor(float("inf"), dtype=torch.float64))
    return lp_dirty.to(dtype), olp.to(dtype), adv.to(dtype), mask


@pytest.mark.parametrize(
    ("dtype", "agg", "normalizers"),
    [
        (torch.float32, "token-mean", "tensor"),
        (torch.float64, "seq-mean-token-mean", "python"),
    ],
    ids=["float32-token-mean-tensor-counts", "float64-seq-mean-token-mean-int-counts"],
)
def test_compiled_fullgraph_equals_eager(dtype, agg, normalizers):
    """torch.compile(policy_loss, fullgraph=True) (inductor) gives the eager value and gradient, same dtype."""
    torch._dynamo.reset()
    cfg = cegppo.presets.ce_gppo_official()
    lp, olp, adv, mask = _inputs(dtype, per_sequence=dtype == torch.float64)
    n_tok, n_seq = cg.global_counts(mask)
    if normalizers == "python":
        n_tok, n_seq = int(n_tok) + 3, int(n_seq) + 1
    compiled = torch.compile(cg.policy_loss, fullgraph=True)
    results = []
    for fn in (cg.policy_loss, compiled):
        x = lp.clone().requires_grad_()
        loss = fn(x, olp, adv, mask, cfg, agg, n_tok, n_seq)
        loss.backward()
        results.append((loss.detach(), x.grad))
    (eager, eager_grad), (comp, comp_grad) = results
    assert comp.dtype == eager.dtype == dtype
    assert torch.isfinite(comp) and torch.isfinite(comp_grad).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(comp, eager, rtol=tol, atol=tol)
    torch.testing.assert_close(comp_grad, eager_grad, rtol=tol, atol=tol)
    want = cegppo.policy_loss_grad(
        *(t.detach().numpy() for t in (lp, olp, adv, mask)),
        cfg,
        agg,
        n_tok if normalizers == "python" else int(n_tok),
        n_seq if normalizers == "python" else int(n_seq),
    )
    np.testing.assert_allclose(comp_grad.numpy(), want, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_no_graph_break_in_any_mode(agg):
    """Dynamo traces policy_loss (every mode, tensor normalizers) and policy_metrics as ONE graph: no break, no .item()."""
    cfg = cegppo.presets.ce_gppo_official()
    lp, olp, adv, mask = _inputs(torch.float32)
    n_tok, n_seq = cg.global_counts(mask)
    torch._dynamo.reset()
    report = torch._dynamo.explain(cg.policy_loss)(
        lp.requires_grad_(), olp, adv, mask, cfg, agg, n_tok, n_seq
    )
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
    torch._dynamo.reset()
    report = torch._dynamo.explain(cg.policy_metrics)(lp, olp, adv, mask, cfg)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons


@pytest.mark.parametrize(
    "cfg",
    [cegppo.CISPOConfig(), cegppo.CISPOCapConfig(), cegppo.SAPOConfig(), cegppo.GSPOConfig(eps_low=0.05, eps_high=0.05)],
    ids=lambda c: type(c).__name__,
)
def test_family_metrics_trace_as_one_graph(cfg):
    """Dynamo traces family_metrics of every member beside CE-GPPO (whose are policy_metrics') as ONE graph."""
    lp, olp, adv, mask = _inputs(torch.float32)
    torch._dynamo.reset()
    report = torch._dynamo.explain(cg.family_metrics)(lp, olp, adv, mask, cfg)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
