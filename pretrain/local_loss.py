"""GLoRIA's word–region loss (Huang et al., ICCV 2021), vectorised over all image–report pairs.

Math (image i with regions v_{i,r}, r = 1..R; report k with real words w_{k,l}, l = 1..L_k)
------------------------------------------------------------------------------------------
    s_{l,r}   = w_{k,l} · v_{i,r}                       word–region dot products
    a_{l,r}   = softmax_r(τ1 · s_{l,r})                  ``form="paper"`` (the published math)
    a_{l,r}   = softmax_r(τ1 · softmax_l(s)_{l,r})       ``form="released"`` (GLoRIA's code)
    c_l       = Σ_r a_{l,r} v_{i,r}                      attended visual context of word l
    Z(i, k)   = log Σ_l exp(τ2 · cos(w_{k,l}, c_l))     ``aggregation="sum"``
              = log (1/L_k) Σ_l exp(τ2 · cos(...))       ``"mean"`` (= sum − log L_k)
              = max_l τ2 · cos(...)                      ``"max"`` (= log max_l exp(...))
    logits    = τ3 · Z;  loss = ½ [CE_k(logits[i, :], i) + CE_i(logits[:, k], k)]

(GLoRIA's code adds the two cross-entropies; here they are averaged, like the global loss, so
GLoRIA's weight w on the local loss corresponds to 2w here.)

In the released form the softmax over words runs over the real words of report k only (as in
GLoRIA's code, which slices each report to its own length). cos(x, y) = x·y / (max(‖x‖, ε)
·max(‖y‖, ε)), ε = 1e-8 (``torch.cosine_similarity``'s ε).

Defaults and why
----------------
* ``form="paper"``: the published equation; each word's attention depends on that word and the
  image only, so it does not change when other words (or the masking of [CLS]/[SEP]/padding)
  change. The released form (a DAMSM inheritance from AttnGAN) makes a word's attention depend
  on every other word of the report, and the τ1-softmax of values in [0, 1] is nearly flat over
  361 regions (τ1 · softmax_l ≤ 4), so its attention maps are much less selective. Use
  ``form="released"`` to reproduce GLoRIA's numbers.
* ``aggregation="sum"``, τ = (4, 5, 10): the paper's values. "sum" favours reports with more
  words in the image→report direction (Z grows with L_k); "mean" removes that length bias. GLoRIA
  switches to "max" at inference; pick it for :meth:`WordRegionLoss.scores` if wanted.
* ``normalize=False``: the published math uses the raw features in the attention; ``True``
  L2-normalises words and regions first (cosine attention, more stable temperatures).

Implementation
--------------
For a chunk of C reports all B_img images are scored at once: the dot products are one GEMM
([C·L, D] × [D, B·R]); the cosine numerator reuses them, w·c_l = Σ_r a_{l,r} s_{l,r}; the context
norm is ‖c_l‖² = a_lᵀ G_i a_l with the region Gram matrix G_i = V_i V_iᵀ when R < D (cost
L·R² instead of L·R·D per pair), else c is formed explicitly.

``form="paper"`` with R < D (the default case) runs through a hand-written autograd Function
(:mod:`radalign.pretrain.local_loss_kernel`, ``impl="auto"``): only the real words are packed
and scored (padded slots are never read, so garbage there, even NaN or inf, never reaches the
value or the gradient, and no work is spent on them), the softmax backward is closed-form
(Σ_r a·∂a is known from the forward), and only τ1·s, a and a·G are kept per chunk. There,
``checkpoint=True`` with more than one chunk keeps none of them and recomputes each chunk's in
backward (one more score GEMM and a·G product), so forward+backward memory is bounded by one
chunk; ``checkpoint=False`` keeps them (faster). Under ``torch.autocast`` (or for bfloat16/float16
inputs) its GEMMs run in the low precision and everything else (softmax, sums, log-sum-exp,
cross-entropy) in float32; the scores are float32.

The released form and R ≥ D use plain autograd (``impl="autograd"`` forces it everywhere):
padded words are replaced by zeros before anything is computed and excluded with −inf before
the log-sum-exp; with more than one chunk and ``checkpoint=True`` each chunk runs under
activation checkpointing, so the peak memory of forward+backward is bounded by one chunk's
[B_img, C, L, R] intermediates instead of growing with B².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from radalign.pretrain.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_max_int,
    world_info,
)
from radalign.pretrain.local_loss_kernel import compute_dtypes, paper_pair_stats
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = ["WordRegionLoss"]

FORMS = ("paper", "released")
AGGREGATIONS = ("sum", "mean", "max")
IMPLS = ("auto", "autograd")


class WordRegionLoss(nn.Module):
    """GLoRIA local loss over all (image, report) pairs of the batch; see the module docstring.

    Args:
        tau1, tau2, tau3: attention sharpness, word-score sharpness, logit scale (4, 5, 10).
        aggregation: "sum" (log-sum-exp, the paper), "mean" (log-mean-exp) or "max".
        form: "paper" or "released".
        normalize: L2-normalise words and regions before the attention.
        chunk_size: reports scored at once (peak memory ∝ B_img·chunk_size·L·R); None = all.
        checkpoint: recompute each chunk in backward (only when there is more than one chunk).
        gather: score each rank's images against all ranks' reports and vice versa (with
            gradient, labels offset by rank·B); the mean over ranks of the per-rank loss equals
            the single-process loss and DDP-averaged gradients match it. Costs 2·world_size ×
            the local compute.
        eps: ε of the cosine.
        impl: "auto" (the hand-written kernel of :mod:`radalign.pretrain.local_loss_kernel`
            where it applies: ``form="paper"`` with R < D; plain autograd otherwise) or
            "autograd" (always the autograd path; same values and gradients, slower).

    ``forward(v, w, word_mask)``: ``v [B, R, D]`` regions, ``w [B, L, D]`` words,
    ``word_mask [B, L]`` bool (True = real word) → scalar loss. Every report needs ≥ 1 real word.
    """

    #: score only the real words (kernel path); False scores padded slots as zero vectors and
    #: masks them afterwards, same result (kept for the benchmark's packing lever)
    _pack_words: bool = True

    def __init__(
        self,
        tau1: float = 4.0,
        tau2: float = 5.0,
        tau3: float = 10.0,
        aggregation: str = "sum",
        form: str = "paper",
        normalize: bool = False,
        chunk_size: int | None = 16,
        checkpoint: bool = True,
        gather: bool = False,
        eps: float = 1e-8,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
        self.tau1, self.tau2, self.tau3 = float(tau1), float(tau2), float(tau3)
        self.aggregation = aggregation
        self.form = form
        self.normalize = normalize
        self.chunk_size = chunk_size
        self.checkpoint = checkpoint
        self.gather = gather
        self.eps = eps
        self.impl = impl

    def extra_repr(self) -> str:
        return (
            f"tau=({self.tau1}, {self.tau2}, {self.tau3}), aggregation={self.aggregation!r}, "
            f"form={self.form!r}, normalize={self.normalize}, chunk_size={self.chunk_size}"
        )

    # ------------------------------------------------------------------ public API
    def forward(self, v: Tensor, w: Tensor, word_mask: Tensor) -> Tensor:
        _check_inputs(v, w, word_mask)
        if v.shape[0] != w.shape[0]:
            raise ValueError(f"need one report per image, got {v.shape[0]} and {w.shape[0]}")
        rank, world = world_info()
        n = v.shape[0]
        if self.gather and world > 1:
            length = all_reduce_max_int(w.shape[1], device=w.device)
            w, word_mask = _pad_words(w, word_mask, length)
            all_v = all_gather_with_grad(v)
            all_w = all_gather_with_grad(w)
            all_mask = all_gather_no_grad(word_mask)
            labels = torch.arange(n, device=v.device) + rank * n
            rows = self.scores(v, all_w, all_mask)  # own images × all reports
            cols = self.scores(all_v, w, word_mask)  # all images × own reports
            return 0.5 * (F.cross_entropy(rows, labels) + F.cross_entropy(cols.T, labels))
        logits = self.scores(v, w, word_mask)
        labels = torch.arange(n, device=v.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    def scores(self, v: Tensor, w: Tensor, word_mask: Tensor) -> Tensor:
        """τ3·Z(i, k) for every image i of ``v [B_img, R, D]`` and report k: ``[B_img, B_txt]``."""
        _check_inputs(v, w, word_mask)
        word_mask = word_mask.bool()
        if not bool(word_mask.any(dim=1).all()):
            raise ValueError("every report needs at least one real word (word_mask row all False)")
        if self.impl == "auto" and self.form == "paper" and v.shape[1] < v.shape[2]:
            return self._fused_scores(v, w, word_mask)
        v, w = self._prepare(v, w, word_mask)
        gram = v @ v.transpose(1, 2) if v.shape[1] < v.shape[2] else None
        step = self.chunk_size or w.shape[0]
        chunks = range(0, w.shape[0], step)
        use_ckpt = self.checkpoint and torch.is_grad_enabled() and len(chunks) > 1
        out = []
        for start in chunks:
            args = (v, gram, w[start : start + step], word_mask[start : start + step])
            if use_ckpt:
                out.append(_checkpoint(self._chunk_scores, *args, use_reentrant=False))
            else:
                out.append(self._chunk_scores(*args))
        return self.tau3 * torch.cat(out, dim=1)

    def attention(self, v_i: Tensor, w_k: Tensor, mask_k: Tensor) -> Tensor:
        """Attention a_{l,r} of report k's words over image i's regions, ``[L, R]``.

        ``v_i [R, D]``, ``w_k [L, D]``, ``mask_k [L]``; rows of padded words are zero.
        """
        mask_k = mask_k.bool()
        v, w = self._prepare(v_i[None], w_k[None], mask_k[None])
        s = torch.einsum("ld,rd->lr", w[0], v[0])
        attn = self._attend(s[None, None], mask_k[None])[0, 0]
        return attn * mask_k[:, None]

    # ------------------------------------------------------------------ internals
    def _fused_scores(self, v: Tensor, w: Tensor, mask: Tensor) -> Tensor:
        """:meth:`scores` through the hand-written kernel (``form="paper"``, R < D)."""
        mm_dtype, acc = compute_dtypes(v, w)
        n_txt, length, d = w.shape
        flat = mask.reshape(-1)
        lengths = mask.sum(dim=1)
        if self._pack_words:  # only the real words are scored; padded slots are never read
            words, counts = w.reshape(-1, d)[flat], lengths
        else:  # every slot scored, padded ones as zero vectors (the benchmark's "no packing")
            zero = torch.zeros((), dtype=w.dtype, device=w.device)
            words = torch.where(flat[:, None], w.reshape(-1, d), zero)
            counts = torch.full_like(lengths, length)
        words, v = words.to(acc), v.to(acc)
        if self.normalize:
            v = F.normalize(v, dim=-1, eps=self.eps)
            words = F.normalize(words, dim=-1, eps=self.eps)
        step = self.chunk_size or n_txt
        offsets = [0, *torch.cumsum(counts, 0).tolist()]
        bounds = offsets[::step] + ([offsets[-1]] if n_txt % step else [])
        recompute = self.checkpoint and torch.is_grad_enabled() and len(bounds) > 2
        numer, ctx_sq = paper_pair_stats(v, words, bounds, self.tau1, mm_dtype, recompute)
        w_norm = words.norm(dim=-1).clamp_min(self.eps)  # [N]
        x = self.tau2 * numer / (w_norm[:, None] * ctx_sq.clamp_min(self.eps**2).sqrt())
        if self._pack_words:  # back onto the [B_txt, L] grid, −inf at padded slots
            grid = torch.full(
                (n_txt * length, v.shape[0]), float("-inf"), dtype=acc, device=v.device
            )
            x = grid.index_put((flat.nonzero().squeeze(1),), x)
        else:
            x = x.masked_fill(~flat[:, None], float("-inf"))
        x = x.view(n_txt, length, -1)  # [B_txt, L, B_img]
        if self.aggregation == "max":
            z = x.amax(dim=1)
        else:
            z = torch.logsumexp(x, dim=1)
            if self.aggregation == "mean":
                z = z - lengths.to(z.dtype).log()[:, None]
        return self.tau3 * z.T

    def _prepare(self, v: Tensor, w: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        w = torch.where(mask[..., None], w, torch.zeros((), dtype=w.dtype, device=w.device))
        if self.normalize:
            v = F.normalize(v, dim=-1, eps=self.eps)
            w = F.normalize(w, dim=-1, eps=self.eps)
        return v, w

    def _attend(self, s: Tensor, mask: Tensor) -> Tensor:
        """a from dot products ``s [B_img, C, L, R]`` and the word mask ``[C, L]``."""
        if self.form == "released":
            # softmax over the real words of each report; padded words get exactly 0
            s = s.masked_fill(~mask[None, :, :, None], float("-inf")).softmax(dim=2)
        return (self.tau1 * s).softmax(dim=-1)

    def _chunk_scores(self, v: Tensor, gram: Tensor | None, w: Tensor, mask: Tensor) -> Tensor:
        """Z(i, k) for all images and the C reports of ``w [C, L, D]``: ``[B_img, C]``."""
        b, r, d = v.shape
        c, length, _ = w.shape
        # one GEMM for all word–region dot products, laid out [B_img, C, L, R]
        s = (w.reshape(c * length, d) @ v.reshape(b * r, d).T).view(c, length, b, r)
        s = s.permute(2, 0, 1, 3)
        attn = self._attend(s, mask)
        numer = (attn * s).sum(dim=-1)  # w·c_l reusing s: [B_img, C, L]
        flat = attn.reshape(b, c * length, r)
        if gram is not None:
            ctx_sq = (torch.bmm(flat, gram) * flat).sum(dim=-1)  # a_lᵀ G a_l
        else:
            ctx_sq = torch.bmm(flat, v).square().sum(dim=-1)
        ctx_norm = ctx_sq.view(b, c, length).clamp_min(self.eps**2).sqrt()
        w_norm = w.norm(dim=-1).clamp_min(self.eps)  # [C, L]
        cos = numer / (w_norm * ctx_norm)
        x = (self.tau2 * cos).masked_fill(~mask, float("-inf"))
        if self.aggregation == "max":
            return x.amax(dim=-1)
        z = torch.logsumexp(x, dim=-1)
        if self.aggregation == "mean":
            z = z - mask.sum(dim=-1).to(z.dtype).log()
        return z


def _check_inputs(v: Tensor, w: Tensor, mask: Tensor) -> None:
    if v.ndim != 3 or w.ndim != 3 or v.shape[-1] != w.shape[-1]:
        raise ValueError(
            f"expected regions [B, R, D] and words [B, L, D] with equal D, got {tuple(v.shape)} "
            f"and {tuple(w.shape)}"
        )
    if tuple(mask.shape) != tuple(w.shape[:2]):
        raise ValueError(f"word_mask {tuple(mask.shape)} does not match words {tuple(w.shape)}")


def _pad_words(w: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    extra = length - w.shape[1]
    if extra <= 0:
        return w, mask
    return F.pad(w, (0, 0, 0, extra)), F.pad(mask.bool(), (0, extra), value=False)
