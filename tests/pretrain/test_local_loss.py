"""GLoRIA word–region loss against a plain-Python reference of the published math (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from radalign.pretrain.local_loss import WordRegionLoss
from radalign.pretrain.local_loss_kernel import compute_dtypes, paper_pair_stats

EPS = 1e-8


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- plain-Python reference
def _dot(x: list[float], y: list[float]) -> float:
    return sum(a * b for a, b in zip(x, y, strict=True))


def _norm(x: list[float]) -> float:
    return math.sqrt(_dot(x, x))


def _unit(x: list[float]) -> list[float]:
    n = max(_norm(x), EPS)
    return [a / n for a in x]


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    total = sum(e)
    return [x / total for x in e]


def _log_softmax_at(xs: list[float], j: int) -> float:
    top = max(xs)
    return xs[j] - top - math.log(sum(math.exp(x - top) for x in xs))


def ref_attention(
    regions: list[list[float]], words: list[list[float]], tau1: float, form: str
) -> list[list[float]]:
    """a[l][r] for the real words of one report and the regions of one image."""
    s = [[_dot(wl, vr) for vr in regions] for wl in words]
    if form == "released":  # softmax over words, per region, then the τ1-softmax over regions
        cols = [_softmax([s[j][r] for j in range(len(words))]) for r in range(len(regions))]
        s = [[cols[r][j] for r in range(len(regions))] for j in range(len(words))]
    return [_softmax([tau1 * x for x in row]) for row in s]


def ref_pair_score(regions, words, tau1, tau2, tau3, agg, form, normalize) -> float:
    if normalize:
        regions = [_unit(x) for x in regions]
        words = [_unit(x) for x in words]
    attn = ref_attention(regions, words, tau1, form)
    terms = []
    for wl, al in zip(words, attn, strict=True):
        ctx = [sum(al[r] * regions[r][d] for r in range(len(regions))) for d in range(len(wl))]
        cos = _dot(wl, ctx) / (max(_norm(wl), EPS) * max(_norm(ctx), EPS))
        terms.append(tau2 * cos)
    if agg == "max":
        z = max(terms)
    else:
        total = sum(math.exp(x) for x in terms)
        z = math.log(total / len(terms) if agg == "mean" else total)
    return tau3 * z


def ref_scores(v, w, mask, tau1=4.0, tau2=5.0, tau3=10.0, agg="sum", form="paper", normalize=False):
    out = []
    for i in range(v.shape[0]):
        regions = v[i].tolist()
        row = []
        for k in range(w.shape[0]):
            words = [w[k, j].tolist() for j in range(w.shape[1]) if bool(mask[k, j])]
            row.append(ref_pair_score(regions, words, tau1, tau2, tau3, agg, form, normalize))
        out.append(row)
    return out


def ref_loss(scores: list[list[float]]) -> float:
    n = len(scores)
    img = sum(-_log_softmax_at(scores[i], i) for i in range(n)) / n
    txt = sum(-_log_softmax_at([scores[i][k] for i in range(n)], k) for k in range(n)) / n
    return 0.5 * (img + txt)


# ---------------------------------------------------------------- fixtures
def make_batch(b=4, r=6, length=7, d=8, garbage=1e6, seed=0, n_img=None):
    """Ragged reports (1..length words), padded positions filled with ``garbage``."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_img or b, r, d, generator=g, dtype=torch.float64)
    w = torch.randn(b, length, d, generator=g, dtype=torch.float64)
    lengths = [length, 1, max(1, length - 3), max(1, length // 2)] * b
    mask = torch.zeros(b, length, dtype=torch.bool)
    for k in range(b):
        mask[k, : lengths[k]] = True
    w = torch.where(mask[..., None], w, torch.full_like(w, garbage))
    return v, w, mask


FORMS = ["paper", "released"]
AGGS = ["sum", "mean", "max"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("shape", [(6, 8), (10, 4)], ids=["gram-R<D", "explicit-R>=D"])
def test_matches_reference(form, agg, shape):
    r, d = shape
    v, w, mask = make_batch(r=r, d=d, seed=hash((form, agg, r)) % 1000)
    loss_fn = WordRegionLoss(form=form, aggregation=agg, chunk_size=None)
    want = ref_scores(v, w, mask, agg=agg, form=form)
    got = loss_fn.scores(v, w, mask)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)
    assert loss_fn(v, w, mask).item() == pytest.approx(ref_loss(want), abs=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_normalize_and_temperatures_match_reference(form):
    v, w, mask = make_batch(seed=3)
    v = v * 3.0  # unnormalised scale matters only without normalize
    taus = (2.0, 3.0, 7.0)
    loss_fn = WordRegionLoss(*taus, aggregation="sum", form=form, normalize=True, chunk_size=3)
    want = ref_scores(v, w, mask, *taus, agg="sum", form=form, normalize=True)
    torch.testing.assert_close(
        loss_fn.scores(v, w, mask), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6
    )
    assert loss_fn(v, w, mask).item() == pytest.approx(ref_loss(want), abs=1e-6)


def test_rectangular_scores():
    v, w, mask = make_batch(b=3, n_img=5, seed=4)
    want = ref_scores(v, w, mask)
    got = WordRegionLoss(chunk_size=2).scores(v, w, mask)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_chunked_equals_unchunked_values_and_grads(form):
    v, w, mask = make_batch(b=7, seed=5)
    results = []
    for chunk, ckpt in [(None, False), (1, True), (2, True), (3, False), (5, True), (7, True)]:
        vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
        loss = WordRegionLoss(form=form, chunk_size=chunk, checkpoint=ckpt)(vv, ww, mask)
        loss.backward()
        results.append((loss.detach(), vv.grad, ww.grad))
    for loss, gv, gw in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(gv, results[0][1], rtol=0, atol=1e-10)
        torch.testing.assert_close(gw, results[0][2], rtol=0, atol=1e-10)


@pytest.mark.parametrize("garbage", [1e6, float("nan"), float("inf")])
@pytest.mark.parametrize(
    "form, normalize, impl",
    [("paper", False, "auto"), ("paper", True, "auto"), ("paper", False, "autograd")]
    + [("released", False, "auto")],
)
def test_padding_is_exact(form, normalize, impl, garbage):
    """Garbage in padded word slots changes nothing and receives exactly zero gradient."""
    v, w, mask = make_batch(seed=6, garbage=garbage)
    _, w_clean, _ = make_batch(seed=6, garbage=0.0)
    out = []
    for words in (w, w_clean):
        vv, ww = v.clone().requires_grad_(), words.clone().requires_grad_()
        loss_fn = WordRegionLoss(form=form, normalize=normalize, chunk_size=2, impl=impl)
        loss = loss_fn(vv, ww, mask)
        loss.backward()
        out.append((loss.detach(), vv.grad, ww.grad))
    assert torch.isfinite(out[0][0])
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)
    assert torch.all(out[0][2][~mask] == 0)
    torch.testing.assert_close(out[0][2][mask], out[1][2][mask], rtol=0, atol=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("agg", AGGS)
def test_gradcheck(form, agg):
    v, w, mask = make_batch(b=3, r=3, length=3, d=4, garbage=0.0, seed=7)
    v.requires_grad_()
    w.requires_grad_()
    loss_fn = WordRegionLoss(form=form, aggregation=agg, chunk_size=2)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, mask), (v, w))


def test_gradcheck_normalize_explicit_context():
    v, w, mask = make_batch(b=3, r=5, length=3, d=3, garbage=0.0, seed=8)
    v.requires_grad_()
    w.requires_grad_()
    loss_fn = WordRegionLoss(normalize=True, chunk_size=1)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, mask), (v, w))


@pytest.mark.parametrize("form", FORMS)
def test_attention_map_matches_reference(form):
    v, w, mask = make_batch(seed=9)
    k, i = 2, 1
    words = [w[k, j].tolist() for j in range(w.shape[1]) if bool(mask[k, j])]
    want = ref_attention(v[i].tolist(), words, 4.0, form)
    got = WordRegionLoss(form=form).attention(v[i], w[k], mask[k])
    assert got.shape == (w.shape[1], v.shape[1])
    n = len(words)
    torch.testing.assert_close(got[:n], torch.tensor(want, dtype=torch.float64), atol=1e-10, rtol=0)
    assert torch.all(got[n:] == 0)


def test_float32_matches_float64():
    v, w, mask = make_batch(b=6, r=49, length=10, d=32, seed=10)
    loss_fn = WordRegionLoss(chunk_size=4)
    want = loss_fn(v, w, mask)
    got = loss_fn(v.float(), w.float(), mask)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_bad_inputs():
    v, w, mask = make_batch()
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one real word"):
        WordRegionLoss()(v, w, empty)
    with pytest.raises(ValueError, match="form"):
        WordRegionLoss(form="other")
    with pytest.raises(ValueError, match="aggregation"):
        WordRegionLoss(aggregation="median")
    with pytest.raises(ValueError, match="impl"):
        WordRegionLoss(impl="triton")
    with pytest.raises(ValueError, match="word_mask"):
        WordRegionLoss()(v, w, mask[:, :3])
    with pytest.raises(ValueError, match="one report per image"):
        WordRegionLoss()(v[:3], w, mask)


def test_single_process_gather_is_plain_loss():
    v, w, mask = make_batch(seed=11)
    a = WordRegionLoss(gather=True)(v, w, mask)
    b = WordRegionLoss(gather=False)(v, w, mask)
    assert a.item() == b.item()


# ---------------------------------------------------------------- the hand-written kernel
def _loss_and_grads(loss_fn, v, w, mask):
    vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
    loss = loss_fn(vv, ww, mask)
    loss.backward()
    return loss.detach(), vv.grad, ww.grad


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("chunk, ckpt", [(None, False), (2, True), (3, False)])
def test_kernel_equals_autograd_path(agg, normalize, chunk, ckpt):
    """The custom Function (impl="auto") reproduces the autograd path's value and gradients."""
    v, w, mask = make_batch(b=5, r=7, length=6, d=9, seed=12)
    kw = dict(aggregation=agg, normalize=normalize, chunk_size=chunk, checkpoint=ckpt)
    got = _loss_and_grads(WordRegionLoss(**kw), v, w, mask)
    want = _loss_and_grads(WordRegionLoss(impl="autograd", **kw), v, w, mask)
    for g, x in zip(got, want, strict=True):
        torch.testing.assert_close(g, x, rtol=0, atol=1e-12)


def test_kernel_unpacked_words_equal_packed():
    """Scoring padded slots as zero vectors (the benchmark's no-packing lever) changes nothing."""
    v, w, mask = make_batch(b=5, seed=13, garbage=float("nan"))
    packed = _loss_and_grads(WordRegionLoss(chunk_size=2), v, w, mask)
    loss_fn = WordRegionLoss(chunk_size=2)
    loss_fn._pack_words = False
    unpacked = _loss_and_grads(loss_fn, v, w, mask)
    for g, x in zip(unpacked, packed, strict=True):
        torch.testing.assert_close(g, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("recompute", [False, True])
def test_kernel_gradcheck(recompute):
    """gradcheck of the Function itself: ragged packed words (3 reports: 3, 1, 2 words), 2 chunks."""
    g = torch.Generator().manual_seed(14)
    v = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(v, w):
        return paper_pair_stats(v, w, [0, 4, 6], 4.0, torch.float64, recompute)

    assert torch.autograd.gradcheck(fn, (v, w))


def test_kernel_stats_match_definition():
    """numer = Σ a s and ctx_sq = ‖Σ a v‖², computed naively."""
    g = torch.Generator().manual_seed(15)
    v = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    w = torch.randn(7, 8, generator=g, dtype=torch.float64)
    numer, ctx_sq = paper_pair_stats(v, w, [0, 2, 7], 2.5, torch.float64)
    s = torch.einsum("nd,brd->nbr", w, v)
    a = (2.5 * s).softmax(dim=-1)
    ctx = torch.einsum("nbr,brd->nbd", a, v)
    torch.testing.assert_close(numer, (a * s).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(ctx_sq, ctx.square().sum(-1), rtol=0, atol=1e-12)


def test_kernel_retain_graph_backward_twice():
    v, w, mask = make_batch(seed=16)
    vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
    loss = WordRegionLoss(chunk_size=None)(vv, ww, mask)
    loss.backward(retain_graph=True)
    first = vv.grad.clone()
    loss.backward()
    torch.testing.assert_close(vv.grad, 2 * first, rtol=0, atol=1e-12)


def test_kernel_no_grad_scores():
    v, w, mask = make_batch(seed=17)
    loss_fn = WordRegionLoss(chunk_size=2)
    with torch.no_grad():
        a = loss_fn.scores(v, w, mask)
    torch.testing.assert_close(a, loss_fn.scores(v, w, mask).detach(), rtol=0, atol=0)


def test_compute_dtypes():
    x64, x32, x16 = torch.zeros(1, dtype=torch.float64), torch.zeros(1), torch.zeros(1).bfloat16()
    assert compute_dtypes(x64) == (torch.float64, torch.float64)
    assert compute_dtypes(x32) == (torch.float32, torch.float32)
    assert compute_dtypes(x16) == (torch.bfloat16, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtypes(x32) == (torch.bfloat16, torch.float32)
        assert compute_dtypes(x64) == (torch.float64, torch.float64)


@pytest.mark.parametrize("how", ["autocast", "bf16-inputs"])
def test_bfloat16_close_to_float64(how):
    """bf16 GEMMs, float32 softmax/log-sum-exp/CE: loss within 1e-3 relative of float64.

    Small sizes: bf16 GEMMs are slow on CPUs without native bf16.
    """
    v, w, mask = make_batch(b=6, r=16, length=8, d=32, seed=18, garbage=float("nan"))
    v, w = v / 32**0.25, w / 32**0.25  # dot products of order one
    loss_fn = WordRegionLoss(chunk_size=4)
    want, gv64, gw64 = _loss_and_grads(loss_fn, v, w, mask)
    vv, ww = v.float().requires_grad_(), w.float().requires_grad_()
    if how == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(vv, ww, mask)
    else:
        loss = loss_fn(vv.bfloat16(), ww.bfloat16(), mask)
    assert loss.dtype == torch.float32
    loss.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-3)
    assert vv.grad.dtype == torch.float32 and torch.all(ww.grad[~mask] == 0)
    for got, ref in ((vv.grad, gv64), (ww.grad[mask], gw64[mask])):
        assert (got.double() - ref).norm() <= 0.05 * ref.norm()
