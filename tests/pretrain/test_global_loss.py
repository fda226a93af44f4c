"""Global InfoNCE and SigLIP losses against plain-Python references and open_clip's ClipLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from radalign.pretrain.global_loss import (
    LOGIT_SCALE_MAX,
    GlobalContrastiveLoss,
    SigLIPLoss,
    clamp_logit_scale_,
    init_logit_scale,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def embeddings(b=6, e=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(b, e, generator=g, dtype=dtype), dim=-1)
    t = F.normalize(torch.randn(b, e, generator=g, dtype=dtype), dim=-1)
    return u, t


def _dot(x, y):
    return sum(a * b for a, b in zip(x, y, strict=True))


def _ce(row: list[float], target: int, smoothing: float = 0.0) -> float:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    nll = lse - row[target]
    uniform = sum(lse - x for x in row) / len(row)
    return (1 - smoothing) * nll + smoothing * uniform


def ref_infonce(u, t, scale, smoothing=0.0):
    us, ts, n = u.tolist(), t.tolist(), len(u)
    logits = [[scale * _dot(us[i], ts[j]) for j in range(n)] for i in range(n)]
    img = sum(_ce(logits[i], i, smoothing) for i in range(n)) / n
    txt = sum(_ce([logits[i][j] for i in range(n)], j, smoothing) for j in range(n)) / n
    return 0.5 * (img + txt)


def ref_siglip(u, t, scale, bias):
    us, ts, n = u.tolist(), t.tolist(), len(u)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            x = z * (scale * _dot(us[i], ts[j]) + bias)
            total += math.log1p(math.exp(-x))  # −log σ(x)
    return total / n


def ref_infonce_hard(u, t, h, valid, scale):
    """InfoNCE with one extra image->report column per row: s·u_i·h_i where valid."""
    us, ts, hs, n = u.tolist(), t.tolist(), h.tolist(), len(u)
    logits = [[scale * _dot(us[i], ts[j]) for j in range(n)] for i in range(n)]
    rows = [logits[i] + ([scale * _dot(us[i], hs[i])] if valid[i] else []) for i in range(n)]
    img = sum(_ce(rows[i], i) for i in range(n)) / n
    txt = sum(_ce([logits[i][j] for i in range(n)], j) for j in range(n)) / n
    return 0.5 * (img + txt)


def test_infonce_hard_negatives_match_reference():
    u, t = embeddings(seed=3)
    h, _ = embeddings(seed=4)
    valid = torch.tensor([True, False, True, True, False, True])
    theta = torch.tensor(math.log(7.0), dtype=torch.float64)
    loss = GlobalContrastiveLoss(gather=False)(u, t, theta, hard_negatives=(h, valid))
    assert loss.item() == pytest.approx(ref_infonce_hard(u, t, h, valid.tolist(), 7.0), rel=1e-12)
    plain = GlobalContrastiveLoss(gather=False)(u, t, theta)
    none = GlobalContrastiveLoss(gather=False)(u, t, theta, hard_negatives=(h, valid & False))
    torch.testing.assert_close(none, plain)  # no valid negative: the plain loss
    assert loss > plain  # a negative only adds to the image->report denominators
    hh = h.clone().requires_grad_()
    GlobalContrastiveLoss(gather=False)(u, t, theta, hard_negatives=(hh, valid)).backward()
    assert torch.all(hh.grad[~valid] == 0) and torch.all(hh.grad[valid].abs().sum(1) > 0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_infonce_matches_reference(smoothing):
    u, t = embeddings()
    theta = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    loss = GlobalContrastiveLoss(label_smoothing=smoothing)(u, t, theta)
    assert loss.item() == pytest.approx(ref_infonce(u, t, 1 / 0.07, smoothing), abs=1e-10)


def test_infonce_matches_open_clip_value_and_grads():
    u0, t0 = embeddings(b=8, e=16, seed=1)
    ours, theirs = [], []
    for fn, out in [("ours", ours), ("open_clip", theirs)]:
        u, t = u0.clone().requires_grad_(), t0.clone().requires_grad_()
        theta = init_logit_scale()
        if fn == "ours":
            loss = GlobalContrastiveLoss()(u, t, theta.double())
        else:
            loss = ClipLoss()(u, t, theta.double().exp())
        loss.backward()
        out += [loss.detach(), u.grad, t.grad, theta.grad]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-6, atol=1e-12)


def test_return_logits_and_single_process_flags():
    u, t = embeddings()
    theta = torch.tensor(2.0, dtype=torch.float64)
    base = GlobalContrastiveLoss(gather=False)(u, t, theta)
    loss, logits = GlobalContrastiveLoss(local_loss=True)(u, t, theta, return_logits=True)
    assert loss.item() == base.item()  # gather/local_loss are no-ops in one process
    torch.testing.assert_close(logits, math.exp(2.0) * u @ t.T)


def test_logit_scale_init_and_clamps():
    theta = init_logit_scale()
    assert theta.requires_grad and math.exp(theta.item()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert math.exp(init_logit_scale(10.0).item()) == pytest.approx(10.0, rel=1e-6)
    with pytest.raises(ValueError):
        init_logit_scale(0.0)
    # forward guard: s is capped at 100 and θ above the cap gets no gradient
    u, t = embeddings()
    big = torch.tensor(math.log(500.0), dtype=torch.float64, requires_grad=True)
    loss = GlobalContrastiveLoss()(u, t, big)
    assert loss.item() == pytest.approx(ref_infonce(u, t, LOGIT_SCALE_MAX), abs=1e-10)
    loss.backward()
    assert big.grad.item() == 0.0
    # post-step clamp keeps θ in range, in place
    with torch.no_grad():
        theta.fill_(10.0)
    clamp_logit_scale_(theta)
    assert theta.item() == pytest.approx(math.log(LOGIT_SCALE_MAX))


def test_siglip_matches_reference_and_owns_bias():
    u, t = embeddings(b=5, seed=2)
    loss_fn = SigLIPLoss()
    theta = init_logit_scale(10.0)
    assert loss_fn.logit_bias.item() == -10.0
    assert [n for n, _ in loss_fn.named_parameters()] == ["logit_bias"]
    loss = loss_fn(u, t, theta)
    assert loss.item() == pytest.approx(ref_siglip(u, t, 10.0, -10.0), abs=1e-9)
    loss.backward()
    assert loss_fn.logit_bias.grad is not None and theta.grad is not None
    # an explicit bias overrides the owned one
    other = loss_fn(u, t, theta, logit_bias=torch.tensor(1.5, dtype=torch.float64))
    assert other.item() == pytest.approx(ref_siglip(u, t, 10.0, 1.5), abs=1e-9)


def test_siglip_gradcheck():
    u, t = embeddings(b=4, e=3, seed=3)
    u.requires_grad_()
    t.requires_grad_()
    theta = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    fn = SigLIPLoss()
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: fn(a, b, c, logit_bias=d), (u, t, theta, bias)
    )


def test_shape_errors():
    u, t = embeddings()
    with pytest.raises(ValueError):
        GlobalContrastiveLoss()(u, t[:3], torch.tensor(1.0))
    with pytest.raises(ValueError):
        SigLIPLoss()(u[None], t[None], torch.tensor(1.0))
