"""`radalign embed` across 2 real CPU processes (gloo): under torchrun the merged output equals
the one-process output (same ids in the same order, same vectors, same skipped.csv); under
accelerate launch a killed run resumes, re-embedding only the chunks it had not finished."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from radalign.data.sources import open_source
from radalign.data.synth import synthesize
from radalign.encoders import embed_chunks
from radalign.encoders.embed import read_embeddings
from radalign.encoders.sharded_work import partial_dir

from radalign import cli

CHUNK = 6  # ~40 inputs -> 7+ chunks, so both ranks embed several


def _args(inputs: list[str], out) -> list[str]:
    """CLI arguments; fp32 pinned because ``auto`` is measured per run and could pick bf16."""
    return [
        "embed", "--model", "tiny", "--random-init", "--device", "cpu", *inputs,
        "--chunk-rows", str(CHUNK), "--batch-size", "4", "--workers", "0",
        "--precision", "fp32", "--out", str(out),
    ]  # fmt: skip


def _launch(launcher: list[str], args: list[str]) -> str:
    """Run ``radalign ARGS`` under a 2-process launcher; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", *launcher, "-m", "radalign", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _torchrun() -> list[str]:
    return ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _accelerate() -> list[str]:
    with socket.socket() as s:  # a free port: other test runs may hold accelerate's default
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port),
    ]  # fmt: skip


def _chunk_lines(stdout: str) -> dict[tuple[int, int], str]:
    """``{(chunk, rank): "done" | "reused"}`` from the per-chunk progress lines."""
    found = re.findall(r"chunk (\d+)/\d+ (done|reused) \(rank (\d)/2\)", stdout)
    return {(int(c) - 1, int(r)): what for c, what, r in found}


def _same_output(a, b) -> None:
    ea, eb = read_embeddings(a), read_embeddings(b)
    assert ea.metadata["id"].tolist() == eb.metadata["id"].tolist()
    pd.testing.assert_frame_equal(ea.metadata, eb.metadata)
    np.testing.assert_allclose(ea.vectors, eb.vectors, rtol=0, atol=1e-6)
    assert (ea.fingerprint, ea.kind, ea.precision) == (eb.fingerprint, eb.kind, eb.precision)
    assert (a.parent / "skipped.csv").read_bytes() == (b.parent / "skipped.csv").read_bytes()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=36, seed=0, size=64, layouts=("jpg",))
    return root / "jpg"


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(phantoms, tmp_path):
    scans = sorted(phantoms.rglob("*.jpg"))
    broken = tmp_path / "broken.jpg"  # one skip, listed by both runs
    broken.write_bytes(b"")
    listing = tmp_path / "scans.txt"
    listing.write_text("\n".join(map(str, [*scans[:10], broken, *scans[10:]])) + "\n")
    inputs = ["--images", str(listing)]
    ref = tmp_path / "one" / "emb.parquet"
    assert cli.main(_args(inputs, ref)) == 0
    n = len(read_embeddings(ref))
    assert n >= 30 and not partial_dir(ref).exists()

    two = tmp_path / "two" / "emb.parquet"
    stdout = _launch(_torchrun(), _args(inputs, two))
    chunks = _chunk_lines(stdout)
    n_chunks = -(-(n + 1) // CHUNK)
    assert sorted(chunks) == [(c, c % 2) for c in range(n_chunks)]  # each rank its own share
    assert set(chunks.values()) == {"done"}
    assert f"embedded {n} of {n + 1} images" in stdout and "by 2 processes" in stdout
    assert not partial_dir(two).exists()
    _same_output(ref, two)
    skipped = pd.read_csv(two.parent / "skipped.csv")
    assert list(skipped["reason"]) == ["zero-byte file"]


@pytest.mark.slow
def test_accelerate_launch_resumes_only_the_missing_chunks(phantoms, tmp_path, monkeypatch):
    records = list(open_source(phantoms))
    table = pd.DataFrame({"id": [r.id for r in records], "report": [r.report for r in records]})
    table.loc[len(table)] = ["blank", "   "]  # skipped as an empty report
    csv = tmp_path / "reports.csv"
    table.to_csv(csv, index=False)
    inputs = ["--reports", str(csv)]
    ref = tmp_path / "one" / "rep.parquet"
    assert cli.main(_args(inputs, ref)) == 0
    reference = read_embeddings(ref)

    # a killed run: chunks 0 and 1 finished, then the job stopped
    out = tmp_path / "two" / "rep.parquet"
    real, calls = embed_chunks.embed_texts, []

    def killed_after_two_chunks(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_chunks, "embed_texts", killed_after_two_chunks)
    assert cli.main(_args(inputs, out)) == 130
    monkeypatch.setattr(embed_chunks, "embed_texts", real)
    work = partial_dir(out)
    assert sorted(p.name for p in work.glob("chunk-*.parquet")) == [
        "chunk-00000.parquet",
        "chunk-00001.parquet",
    ]
    assert not out.exists()
    # chunk 0 as if killed while writing it (no end marker); chunk 1 marked so that a reuse
    # (rather than a re-embedding) shows in the output
    (work / "chunk-00000.parquet").unlink()
    marked = -np.load(work / "chunk-00001.npy")
    np.save(work / "chunk-00001.npy", marked)

    stdout = _launch(_accelerate(), _args(inputs, out))
    chunks = _chunk_lines(stdout)
    assert chunks.pop((1, 1)) == "reused" and set(chunks.values()) == {"done"}
    assert {r for _, r in chunks} == {0, 1} and "1 chunk(s) resumed" in stdout
    assert not work.exists()
    merged = read_embeddings(out)
    assert merged.metadata["id"].tolist() == reference.metadata["id"].tolist()
    assert merged.metadata["id"].tolist() == table["id"].tolist()[:-1]
    rows = slice(CHUNK, 2 * CHUNK)
    np.testing.assert_allclose(merged.vectors[rows], marked, rtol=0, atol=0)
    expect = reference.vectors.copy()
    expect[rows] = marked
    np.testing.assert_allclose(merged.vectors, expect, rtol=0, atol=1e-6)
    assert pd.read_csv(out.parent / "skipped.csv")["reason"].tolist() == ["empty report"]
