"""Retrieval for scans and for text: output shape and order, fingerprint refusal, formats, CLI."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pandas as pd
import pytest
from radalign.data.sources import open_source
from radalign.data.synth import synthesize
from radalign.retrieval.build import build_index
from radalign.retrieval.index import FingerprintMismatch
from radalign.retrieval.search import (
    expand_scans,
    format_results,
    retrieve_for_scans,
    retrieve_for_text,
)

from radalign import cmd_retrieve


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=16, seed=1, size=64, layouts=("jpg",))
    pairs = open_source(root / "jpg")
    reports = root / "idx-reports"
    images = root / "idx-images"
    build_index(tiny_model, pairs, kind="reports", out=reports)
    build_index(tiny_model, pairs, kind="images", out=images)
    return pairs, reports, images


def _check_order(frame: pd.DataFrame, k: int) -> None:
    for _, group in frame.groupby("query_id", sort=False):
        assert list(group["rank"]) == list(range(1, k + 1))
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)


def test_retrieve_for_scans_shape_and_order(setup, tiny_model, tmp_path):
    pairs, reports, images = setup
    scans = [r.image_path for r in pairs[:3]]
    missing = tmp_path / "nope.dcm"
    frame = retrieve_for_scans(tiny_model, reports, [*scans, missing], k=4)
    assert list(frame.columns) == ["query_id", "query", "rank", "score", "id", "study_id", "report"]
    assert len(frame) == 3 * 4 and frame["query_id"].nunique() == 3
    _check_order(frame, 4)
    assert set(frame["id"]) <= {r.id for r in pairs}
    assert len(frame.attrs["skipped"]) == 1
    # image -> image: each scan finds itself first
    same = retrieve_for_scans(tiny_model, images, scans, k=2)
    top = same[same["rank"] == 1]
    assert list(top["id"]) == [r.id for r in pairs[:3]]
    assert np.allclose(top["score"], 1.0, atol=1e-4)
    assert "image_path" in same.columns


def test_retrieve_folder_and_k_clamped(setup, tiny_model):
    pairs, reports, _ = setup
    folder = pairs[0].image_path.parent
    frame = retrieve_for_scans(tiny_model, reports, folder, k=1000)
    n = len(expand_scans(folder))
    assert frame["query_id"].nunique() == n
    assert len(frame) == n * len(pairs)  # k clamped to the index size


def test_retrieve_for_text(setup, tiny_model):
    _, _, images = setup
    frame = retrieve_for_text(tiny_model, images, ["left pleural effusion", "normal chest"], k=3)
    assert len(frame) == 6 and list(frame["query"].unique()) == [
        "left pleural effusion",
        "normal chest",
    ]
    _check_order(frame, 3)


def test_refuses_index_of_another_model(setup, tiny_model, other_model):
    _, reports, _ = setup
    with pytest.raises(FingerprintMismatch, match="another model"):
        retrieve_for_text(other_model, reports, "effusion")
    from radalign.retrieval.index import Index

    loaded = Index.load(reports)
    with pytest.raises(FingerprintMismatch, match="rebuild"):
        retrieve_for_text(other_model, loaded, "effusion")


def test_formats(setup, tiny_model):
    _, reports, _ = setup
    frame = retrieve_for_text(tiny_model, reports, ["effusion", "edema"], k=2)
    table = format_results(frame, "table")
    assert table.count("query:") == 2
    data = json.loads(format_results(frame, "json"))
    assert [q["query"] for q in data] == ["effusion", "edema"]
    assert [h["rank"] for h in data[0]["hits"]] == [1, 2]
    back = pd.read_csv(io.StringIO(format_results(frame, "csv")))
    assert len(back) == 4 and list(back.columns) == list(frame.columns)
    with pytest.raises(ValueError):
        format_results(frame, "xml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radalign")
    cmd_retrieve.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_retrieve(setup, tmp_path, capsys):
    pairs, reports, images = setup
    parser = _parser()
    scans = [str(r.image_path) for r in pairs[:2]]
    out = tmp_path / "hits.json"
    base = ["retrieve", "--model", "tiny", "--workers", "0"]
    args = parser.parse_args([*base, "--index", str(reports), *scans, "-k", "3", "--out", str(out)])
    assert args.run(args) == 0
    data = json.loads(out.read_text())
    assert len(data) == 2 and all(len(q["hits"]) == 3 for q in data)
    args = parser.parse_args(
        [*base, "--index", str(images), "--text", "left pleural effusion", "--format", "csv"]
    )
    capsys.readouterr()
    assert args.run(args) == 0
    back = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(back) == 5 and "image_path" in back.columns
    args = parser.parse_args([*base, "--index", str(reports)])
    with pytest.raises(ValueError, match="exactly one"):
        args.run(args)
