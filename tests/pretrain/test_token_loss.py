"""MGCA-style in-pair token alignment against a plain-Python reference (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from radalign.pretrain.token_loss import TokenAlignmentLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def _dot(x, y):
    return sum(a * b for a, b in zip(x, y, strict=True))


def _unit(x):
    n = max(math.sqrt(_dot(x, x)), 1e-8)
    return [a / n for a in x]


def _softmax(xs):
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [a / sum(e) for a in e]


def _nll(xs, j):
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs)) - xs[j]


def _side(queries, keys, weights, tau, tau_a):
    """Σ_q ω_q · ½[row + column InfoNCE] of queries vs their attended contexts over keys."""
    ctx = []
    for q in queries:
        a = _softmax([_dot(q, k) / tau_a for k in keys])
        ctx.append(_unit([sum(a[j] * keys[j][d] for j in range(len(keys))) for d in range(len(q))]))
    n = len(queries)
    m = [[_dot(queries[x], ctx[y]) / tau for y in range(n)] for x in range(n)]
    total = sum(weights)
    loss = 0.0
    for x in range(n):
        row = _nll(m[x], x)
        col = _nll([m[y][x] for y in range(n)], x)
        loss += weights[x] / total * 0.5 * (row + col)
    return loss


def ref_token_loss(v, w, mask, tau=0.1, tau_a=0.1, bidirectional=True, ww=None, rw=None):
    out = 0.0
    for b in range(v.shape[0]):
        idx = [j for j in range(w.shape[1]) if bool(mask[b, j])]
        words = [_unit(w[b, j].tolist()) for j in idx]
        regions = [_unit(x) for x in v[b].tolist()]
        wweights = [1.0] * len(idx) if ww is None else [float(ww[b, j]) for j in idx]
        rweights = [1.0] * len(regions) if rw is None else rw[b].tolist()
        word_side = _side(words, regions, wweights, tau, tau_a)
        if bidirectional:
            out += 0.5 * (word_side + _side(regions, words, rweights, tau, tau_a))
        else:
            out += word_side
    return out / v.shape[0]


def make_batch(b=3, r=5, length=6, d=4, garbage=1e6, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, r, d, generator=g, dtype=torch.float64)
    w = torch.randn(b, length, d, generator=g, dtype=torch.float64)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for k, n in enumerate([length, 1, 3, 4, 2][:b]):
        mask[k, :n] = True
    w = torch.where(mask[..., None], w, torch.full_like(w, garbage))
    return v, w, mask


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("taus", [(0.1, 0.1), (0.5, 0.25)])
def test_matches_reference(bidirectional, taus):
    v, w, mask = make_batch(b=4, seed=1)
    fn = TokenAlignmentLoss(*taus, bidirectional=bidirectional)
    want = ref_token_loss(v, w, mask, *taus, bidirectional=bidirectional)
    assert fn(v, w, mask).item() == pytest.approx(want, abs=1e-9)


def test_weights_match_reference():
    v, w, mask = make_batch(b=3, seed=2)
    g = torch.Generator().manual_seed(3)
    ww = torch.rand(w.shape[:2], generator=g, dtype=torch.float64)
    rw = torch.rand(v.shape[:2], generator=g, dtype=torch.float64)
    got = TokenAlignmentLoss()(v, w, mask, word_weights=ww, region_weights=rw)
    assert got.item() == pytest.approx(ref_token_loss(v, w, mask, ww=ww, rw=rw), abs=1e-9)


@pytest.mark.parametrize("garbage", [1e6, float("nan")])
def test_padding_is_exact(garbage):
    v, w, mask = make_batch(seed=4, garbage=garbage)
    _, clean, _ = make_batch(seed=4, garbage=0.0)
    grads = []
    for words in (w, clean):
        vv, ww = v.clone().requires_grad_(), words.clone().requires_grad_()
        loss = TokenAlignmentLoss()(vv, ww, mask)
        loss.backward()
        grads.append((loss.detach(), vv.grad, ww.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)
    assert torch.all(grads[0][2][~mask] == 0)


def test_gradcheck():
    v, w, mask = make_batch(b=2, r=3, length=3, d=3, garbage=0.0, seed=5)
    v.requires_grad_()
    w.requires_grad_()
    fn = TokenAlignmentLoss(0.5, 0.5)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask), (v, w))


def test_empty_report_rejected():
    v, w, mask = make_batch()
    mask[0] = False
    with pytest.raises(ValueError, match="at least one real word"):
        TokenAlignmentLoss()(v, w, mask)
