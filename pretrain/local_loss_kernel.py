"""Hand-written forward and backward of the word–region attention statistics (``form="paper"``).

For packed real words ``w [N, D]`` (the reports' words, padding removed) and regions
``v [B, R, D]`` it returns, for every word n and image i,

    numer[n, i]  = Σ_r a_{n,i,r} s_{n,i,r}          (= w_n · c_{n,i})
    ctx_sq[n, i] = a_{n,i}ᵀ G_i a_{n,i}             (= ‖c_{n,i}‖², G_i = V_i V_iᵀ)

with s = w·v and a = softmax_r(τ1 s). The words are processed in chunks (given as word offsets).

Backward, per chunk, with g_num, g_ctx the incoming gradients of numer and ctx_sq:

    g_a  = g_num s + 2 g_ctx (a G)                   (∂numer/∂a, ∂ctx_sq/∂a)
    ∂s   = g_num a + τ1 a ⊙ (g_a − Σ_r a g_a)         (softmax backward)
         = a ⊙ (α + g_num (τ1 s) + 2 τ1 g_ctx (a G)),  α = g_num − g_num (τ1 numer) − 2 τ1 g_ctx ctx_sq

since Σ_r a g_a = g_num numer + 2 g_ctx ctx_sq is already known from the forward: the whole
softmax backward is three in-place passes over one buffer, with no reduction. Then
``∂w = ∂s V``, ``∂V += ∂sᵀ w`` (two GEMMs over all images at once) and ``∂G_i += aᵀ diag(g_ctx) a``;
at the end ``∂V_i += 2 ∂G_i V_i`` (∂G is symmetric, so one GEMM instead of autograd's two).

What is kept for backward: with ``recompute=False`` τ1·s, a and a·G of every chunk (three
[n, B, R] tensors, plus a's GEMM-dtype copy under bf16; autograd keeps these and more); with ``recompute=True`` only the inputs, G and
the [N, B] statistics, and each chunk's s, a, a·G are recomputed in backward (one more score GEMM
and one more a·G product per chunk), so the memory of forward+backward is bounded by one chunk.

Precision: the GEMMs run in ``mm_dtype`` (e.g. bfloat16 under ``torch.autocast``), everything
else (softmax, the row sums, the backward's elementwise passes, the gradient accumulation) in
``acc_dtype`` (float32, or float64 for float64 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["compute_dtypes", "paper_pair_stats"]

_LOW = (torch.bfloat16, torch.float16)


def compute_dtypes(*tensors: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(GEMM dtype, accumulation dtype) for these inputs under the current autocast state."""
    dtype = tensors[0].dtype
    device_type = tensors[0].device.type
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if torch.is_autocast_enabled(device_type) and dtype != torch.float64:
        return torch.get_autocast_dtype(device_type), acc
    return (dtype if dtype in _LOW else acc), acc


def paper_pair_stats(
    v: Tensor,
    w: Tensor,
    bounds: Sequence[int],
    tau1: float,
    mm_dtype: torch.dtype,
    recompute: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(numer, ctx_sq)``, each ``[N, B]``, for regions ``v [B, R, D]`` and words ``w [N, D]``.

    ``v`` and ``w`` are in the accumulation dtype; ``bounds`` are the word offsets of the
    chunks (``0 = bounds[0] < … < bounds[-1] = N``). See the module docstring.
    """
    save = torch.is_grad_enabled() and (v.requires_grad or w.requires_grad)
    return _PaperStats.apply(v, w, tuple(bounds), float(tau1), mm_dtype, recompute, save)


class _PaperStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, w, bounds, tau1, mm_dtype, recompute, save):  # noqa: D102
        with torch.autocast(v.device.type, enabled=False):
            b, r, d = v.shape
            vm = v.to(mm_dtype)
            gram = torch.bmm(vm, vm.mT)  # [B, R, R]
            wm = w.to(mm_dtype)
            n = w.shape[0]
            numer = w.new_empty(n, b)
            ctx_sq = w.new_empty(n, b)
            kept = []
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                s1, a, am, ag = _chunk_forward(vm, gram, wm[lo:hi], tau1, w.dtype)
                numer[lo:hi] = _rowdot(a, s1)
                ctx_sq[lo:hi] = _rowdot(a, ag)
                if save and not recompute:
                    kept.append((s1, a, am, ag))
                del s1, a, am, ag
            numer1 = numer.clone()  # τ1 · numer, needed as is in backward
            numer.div_(tau1)
        if save:
            ctx.save_for_backward(v, w)
            ctx.vm, ctx.wm, ctx.gram = vm, wm, gram
            # clone: ctx_sq is an output, keeping it on ctx would make a reference cycle
            ctx.numer1, ctx.ctx_sq, ctx.kept = numer1, ctx_sq.clone(), kept
            ctx.conf = (bounds, tau1, mm_dtype, recompute)
        return numer, ctx_sq

    @staticmethod
    def backward(ctx, g_num, g_ctx):  # noqa: D102
        v, w = ctx.saved_tensors
        bounds, tau1, mm_dtype, recompute = ctx.conf
        vm, wm, gram, kept = ctx.vm, ctx.wm, ctx.gram, ctx.kept
        numer1, ctx_sq = ctx.numer1, ctx.ctx_sq
        acc = w.dtype
        same = mm_dtype == acc
        b, r, d = v.shape
        with torch.autocast(v.device.type, enabled=False):
            g_num = g_num.to(acc)
            g_ctx = g_ctx.to(acc)
            vflat = vm.reshape(b * r, d)
            dw = torch.empty_like(w)
            dv = None
            dgram = None
            for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                if recompute:
                    s1, a, am, ag = _chunk_forward(vm, gram, wm[lo:hi], tau1, acc)
                else:
                    s1, a, am, ag = kept[j]
                gn, gc = g_num[lo:hi], g_ctx[lo:hi]
                gamma = (2.0 * tau1) * gc
                alpha = gn - gn * numer1[lo:hi] - gamma * ctx_sq[lo:hi]
                # ∂s = a ⊙ (α + g_num·(τ1 s) + 2τ1 g_ctx·(a G)), built in one buffer in place
                ds = torch.mul(ag, gamma[..., None])
                del ag
                ds.addcmul_(s1, gn[..., None]).add_(alpha[..., None]).mul_(a)
                del s1
                dsm = ds.view(hi - lo, b * r).to(mm_dtype)
                if same:
                    torch.mm(dsm, vflat, out=dw[lo:hi])
                else:
                    dw[lo:hi] = dsm @ vflat
                if dv is None:
                    dv = (dsm.T @ wm[lo:hi]).to(acc)
                elif same:
                    dv.addmm_(dsm.T, wm[lo:hi])
                else:
                    dv += dsm.T @ wm[lo:hi]
                del dsm
                # ∂G_i += a_iᵀ diag(g_ctx) a_i (g_ctx·a in the GEMM dtype, from a's GEMM copy)
                if same:
                    ga = torch.mul(a, gc[..., None], out=ds)
                else:
                    ga = am * gc.to(mm_dtype)[..., None]
                gam = ga.transpose(0, 1)  # [B, n, R]
                am = am.transpose(0, 1).mT  # [B, R, n]
                if dgram is None:
                    dgram = torch.bmm(am, gam).to(acc)
                elif same:
                    dgram.baddbmm_(am, gam)
                else:
                    dgram += torch.bmm(am, gam)
                del a, ds, ga, am, gam
            # ∂G is symmetric (a sum of aᵀ diag(g) a), so ∂V += (∂G + ∂Gᵀ) V = 2 ∂G V
            dv = dv.view(b, r, d)
            if same:
                dv.baddbmm_(dgram, vm, alpha=2.0)
            else:
                dv += 2.0 * torch.bmm(dgram.to(mm_dtype), vm)
        return dv.to(v.dtype), dw, None, None, None, None, None


def _chunk_forward(
    vm: Tensor, gram: Tensor, wm: Tensor, tau1: float, acc: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """τ1·s, a, a in the GEMM dtype, and a·G of one chunk of words, each ``[n, B, R]``."""
    b, r, d = vm.shape
    n = wm.shape[0]
    s1 = ((wm * tau1) @ vm.reshape(b * r, d).T).view(n, b, r).to(acc)
    a = torch.softmax(s1, dim=-1)
    am = a.to(gram.dtype)
    ag = torch.empty(n, b, r, dtype=gram.dtype, device=vm.device)
    for i in range(b):  # a_i G_i written straight into the [n, B, R] layout
        torch.mm(am[:, i], gram[i], out=ag[:, i])
    return s1, a, am, ag.to(acc)


def _rowdot(x: Tensor, y: Tensor) -> Tensor:
    """Σ_r x[..., r] y[..., r] as a batched GEMV (no [.., R] product is materialised)."""
    return torch.einsum("nbr,nbr->nb", x, y)
