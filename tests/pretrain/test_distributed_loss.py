"""A real 2-process gloo run: gathered losses give the single-process loss and gradients.

The test launches this file under ``torch.distributed.run`` (2 CPU processes, gloo). Each rank
builds the same global batch from a fixed seed, keeps its own half, runs each loss inside a
small DDP-wrapped model (linear projections + logit scale [+ SigLIP bias]) and saves its loss,
the DDP-averaged parameter gradients and the gradient of its own input slice. The parent
computes the same model on the whole batch in one process and compares:

* parameter gradients after DDP averaging == single-process gradients (every mode);
* the mean over ranks of the per-rank loss == single-process loss (and each rank's loss equals
  it in full-loss mode);
* each rank's input-feature gradient == world_size × the single-process gradient of its slice
  (the gather sums over ranks, DDP averages parameters; see radalign.pretrain.distributed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from radalign.pretrain.global_loss import GlobalContrastiveLoss, SigLIPLoss, init_logit_scale
from radalign.pretrain.local_loss import WordRegionLoss
from torch import nn

WORLD = 2
B = 3  # rows per rank
DIN, E, R, L, D = 6, 5, 4, 5, 7
MODES = ["clip_full", "clip_local", "siglip", "local_gather", "clip_hard", "clip_local_hard"]


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # one 2-rank run: ~11 s


def make_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    n = WORLD * B
    mask = torch.zeros(n, L, dtype=torch.bool)
    for k, m in enumerate([5, 2, 4, 1, 3, 2]):
        mask[k, :m] = True
    return {
        "x_img": torch.randn(n, DIN, generator=g, dtype=torch.float64),
        "x_txt": torch.randn(n, DIN, generator=g, dtype=torch.float64),
        "x_reg": torch.randn(n, R, DIN, generator=g, dtype=torch.float64),
        "x_word": torch.randn(n, L, DIN, generator=g, dtype=torch.float64),
        "mask": mask,
        "x_neg": torch.randn(n, DIN, generator=g, dtype=torch.float64),
        "valid": torch.tensor([True, False, True, True, True, False]),
    }


class Toy(nn.Module):
    """Projections + the loss under test; holds only the parameters that mode uses."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        if mode == "local_gather":
            self.proj_reg = nn.Linear(DIN, D)
            self.proj_word = nn.Linear(DIN, D)
            self.loss = WordRegionLoss(gather=True, chunk_size=2)
        else:
            self.proj_img = nn.Linear(DIN, E)
            self.proj_txt = nn.Linear(DIN, E)
            siglip = mode == "siglip"
            self.logit_scale = init_logit_scale(10.0 if siglip else 1 / 0.07)
            self.loss = (
                SigLIPLoss(gather=True)  # owns logit_bias, averaged by DDP as a submodule
                if siglip
                else GlobalContrastiveLoss(gather=True, local_loss="local" in mode)
            )
        self.double()

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, neg=None):
        if self.mode == "local_gather":
            return self.loss(self.proj_reg(a), self.proj_word(b), mask)
        u = F.normalize(self.proj_img(a), dim=-1)
        t = F.normalize(self.proj_txt(b), dim=-1)
        if neg is not None:  # laterality-style hard negatives: one extra report per image
            h = F.normalize(self.proj_txt(neg[0]), dim=-1)
            return self.loss(u, t, self.logit_scale, hard_negatives=(h, neg[1]))
        return self.loss(u, t, self.logit_scale)


def run_mode(mode: str, data: dict[str, torch.Tensor], rows: slice, ddp: bool) -> dict:
    """Loss, parameter grads and input grads for ``rows`` of the batch."""
    model = Toy(mode)
    wrapped = nn.parallel.DistributedDataParallel(model) if ddp else model
    if mode == "local_gather":
        a, b = data["x_reg"][rows].clone(), data["x_word"][rows].clone()
        mask = data["mask"][rows]
        if ddp:  # ragged padding across ranks: trim to this rank's longest report
            longest = int(mask.sum(1).max())
            b, mask = b[:, :longest].clone(), mask[:, :longest]
    else:
        a, b, mask = data["x_img"][rows].clone(), data["x_txt"][rows].clone(), None
    a.requires_grad_()
    b.requires_grad_()
    neg = (data["x_neg"][rows], data["valid"][rows]) if mode.endswith("_hard") else None
    loss = wrapped(a, b, mask, neg)
    loss.backward()
    out = {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}
    out.update({f"param.{n}": p.grad for n, p in model.named_parameters()})
    return out


def check_gather_matches_torch(rank: int) -> dict:
    """Our all_gather_with_grad against torch.distributed.nn.functional.all_gather."""
    import warnings

    import torch.distributed.nn.functional as dist_fn
    from radalign.pretrain.distributed import all_gather_with_grad

    out = {}
    for name in ("ours", "torch"):
        x = (torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * rank).requires_grad_()
        if name == "ours":
            y = all_gather_with_grad(x)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                y = torch.cat(dist_fn.all_gather(x), dim=0)
        weights = torch.arange(y.numel(), dtype=torch.float64).view_as(y) * (rank + 1)
        (y * weights).sum().backward()
        out[name] = (y.detach(), x.grad)
    return out


def worker(out_dir: str) -> None:
    import torch.distributed as dist
    from radalign.pretrain.distributed import world_info

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = world_info()
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "world_size": world, "pid": os.getpid()})
    )
    data = make_data()
    rows = slice(rank * B, (rank + 1) * B)
    results = {mode: run_mode(mode, data, rows, ddp=True) for mode in MODES}
    results["gather"] = check_gather_matches_torch(rank)
    torch.save(results, Path(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        __file__,
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return out, results


def test_two_processes_really_ran(two_ranks):
    out, _ = two_ranks
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [i["rank"] for i in infos] == list(range(WORLD))
    assert all(i["world_size"] == WORLD for i in infos)
    assert len({i["pid"] for i in infos}) == WORLD


def test_gather_matches_torch_all_gather(two_ranks):
    _, results = two_ranks
    for res in results:
        ours, theirs = res["gather"]["ours"], res["gather"]["torch"]
        torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
        torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_matches_single_process(two_ranks, mode):
    _, results = two_ranks
    ref = run_mode(mode, make_data(), slice(None), ddp=False)
    losses = torch.stack([res[mode]["loss"] for res in results])
    torch.testing.assert_close(losses.mean(), ref["loss"], rtol=1e-10, atol=1e-12)
    if mode in ("clip_full", "clip_hard"):
        for loss in losses:
            torch.testing.assert_close(loss, ref["loss"], rtol=1e-10, atol=1e-12)
    params = [k for k in ref if k.startswith("param.")]
    assert params, "no parameters compared"
    for res in results:
        for key in params:
            torch.testing.assert_close(res[mode][key], ref[key], rtol=1e-9, atol=1e-12)
    for rank, res in enumerate(results):
        rows = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(res[mode]["grad_a"], WORLD * ref["grad_a"][rows])
        grad_b, want_b = res[mode]["grad_b"], WORLD * ref["grad_b"][rows]
        if grad_b.ndim == 3:  # words: this rank padded to its own longest report only
            assert torch.all(want_b[:, grad_b.shape[1] :] == 0)
            want_b = want_b[:, : grad_b.shape[1]]
        torch.testing.assert_close(grad_b, want_b)


def test_local_loss_mode_equals_full_mode(two_ranks):
    _, results = two_ranks
    for res in results:
        for key, value in res["clip_full"].items():
            if key.startswith("param.") or key.startswith("grad_"):
                torch.testing.assert_close(res["clip_local"][key], value, rtol=1e-9, atol=1e-12)
    full = results[0]["clip_full"]["loss"]
    local_mean = sum(res["clip_local"]["loss"] for res in results) / WORLD
    torch.testing.assert_close(local_mean, full)


if __name__ == "__main__":
    worker(sys.argv[1])
