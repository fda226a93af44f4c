"""`radalign index build` under torchrun with 2 real CPU processes (gloo): the merged index
equals the one-process index, and a chunk finished by an earlier run is reused."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from radalign.data.synth import synthesize
from radalign.encoders.loading import load
from radalign.retrieval import build as build_mod
from radalign.retrieval.build import partial_dir, read_build_info
from radalign.retrieval.index import Index

from radalign import cli, cmd_index

CHUNK = 7  # 60 phantom reports -> 9 chunks, so both ranks embed several


def _args(source, out) -> list[str]:
    """CLI arguments; fp32 pinned because ``auto`` is measured per run and could pick bf16."""
    return [
        "index", "build", "--model", "tiny", "--random-init", "--device", "cpu",
        "--source", str(source), "--kind", "reports", "--chunk-rows", str(CHUNK),
        "--batch-size", "8", "--precision", "fp32", "--out", str(out),
    ]  # fmt: skip


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "radalign", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _same_index(a_dir, b_dir) -> None:
    a, b = Index.load(a_dir), Index.load(b_dir)
    assert a.fingerprint == b.fingerprint
    assert a.metadata["id"].tolist() == b.metadata["id"].tolist()
    pd.testing.assert_frame_equal(a.metadata, b.metadata)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)
    assert a.factory == b.factory


@pytest.mark.slow
def test_two_process_build_equals_one_process_and_resumes(tmp_path):
    synthesize(tmp_path / "ph", n=60, seed=0, size=64, layouts=("jpg",))
    source = tmp_path / "ph" / "jpg"
    ref = tmp_path / "ref"
    assert cli.main(_args(source, ref)) == 0
    info_ref = read_build_info(ref)
    assert info_ref["num_processes"] == 1 and info_ref["chunks"] >= 4

    # fresh 2-process build: both ranks embed, rank 0 merges
    two = tmp_path / "two"
    proc = _torchrun(_args(source, two))
    assert "(rank 0/2)" in proc.stdout and "(rank 1/2)" in proc.stdout
    info = read_build_info(two)
    assert info["num_processes"] == 2 and info["resumed_chunks"] == 0
    assert info["chunks"] == info_ref["chunks"] and info["embedded"] == info_ref["embedded"]
    assert info["fingerprint"] == info_ref["fingerprint"]
    assert not partial_dir(two).exists()
    _same_index(ref, two)

    # resume: an earlier run left only chunk 1 (rank 1's share) finished
    again = tmp_path / "again"
    pairs = cmd_index._open(
        argparse.Namespace(source=str(source), layout="auto", split=None, views="PA,AP"),
        "reports",
    )
    frame, _ = build_mod._dedupe_reports(build_mod.records_frame(pairs))
    work = partial_dir(again)
    build_mod._embed_frame(
        load("tiny", pretrained=False), "reports", frame, work, chunk_rows=CHUNK,
        batch_size=8, num_workers=0, device="cpu", progress=False, precision="fp32",
    )  # fmt: skip
    for f in work.glob("chunk-*"):
        if not f.name.startswith("chunk-00001."):
            f.unlink()
    assert (work / "chunk-00001.parquet").is_file()
    _torchrun(_args(source, again))
    info = read_build_info(again)
    assert info["num_processes"] == 2 and info["resumed_chunks"] == 1
    _same_index(ref, again)
