"""benchmarks/real_data.py: MeSH parsing and exact chance precision (unit), one small real run."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("real_data_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rd = _load_script()


# ---------------------------------------------------------------- unit tests
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("normal", {"normal"}),
        ("Normal", {"normal"}),
        ("Opacity/lung/base/left|Cardiomegaly", {"opacity", "cardiomegaly"}),
        ("Opacity/lung/base/left;Cardiomegaly", {"opacity", "cardiomegaly"}),
        ("Opacity/lung/apex|Opacity/pulmonary alveoli", {"opacity"}),
        (
            "Pulmonary Disease, Chronic Obstructive|Cicatrix/lung",
            {"pulmonary disease, chronic obstructive", "cicatrix"},
        ),
        ("", set()),
        (float("nan"), set()),
        (None, set()),
    ],
)
def test_mesh_headings(cell, expected):
    assert rd.mesh_headings(cell) == frozenset(expected)


TOY = [frozenset(s) for s in ({"normal"}, {"normal"}, {"normal"}, {"a"}, {"a", "b"}, {"b"})]


def test_chance_precision_hand_count():
    """6 items: 3 {normal}, {a}, {a, b}, {b}. Equal sets: each normal has 2 of 5 others."""
    np.testing.assert_allclose(rd.chance_precision(TOY, "equal"), [0.4, 0.4, 0.4, 0, 0, 0])
    np.testing.assert_allclose(rd.chance_precision(TOY, "overlap"), [0.4, 0.4, 0.4, 0.2, 0.4, 0.2])


@pytest.mark.parametrize("match", ["equal", "overlap"])
def test_chance_precision_matches_enumeration(match):
    """Average precision@k over every k-subset of the other items equals the formula."""
    k = 3
    expected = []
    for i, q in enumerate(TOY):
        others = [s for j, s in enumerate(TOY) if j != i]
        hit = [(s == q) if match == "equal" else bool(s & q) for s in others]
        subsets = list(itertools.combinations(range(len(others)), k))
        expected.append(np.mean([sum(hit[j] for j in c) / k for c in subsets]))
    np.testing.assert_allclose(rd.chance_precision(TOY, match), expected)


def test_chance_precision_errors():
    with pytest.raises(ValueError, match="two"):
        rd.chance_precision(TOY[:1])
    with pytest.raises(ValueError, match="match"):
        rd.chance_precision(TOY, "subset")


def test_top_k_others_excludes_self_and_precision():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    top = rd.top_k_others(v, 1)
    np.testing.assert_array_equal(top[:, 0], [1, 0, 3, 2])
    sets = [frozenset({"x"}), frozenset({"x"}), frozenset({"y"}), frozenset({"z"})]
    np.testing.assert_allclose(rd.precision_at_k(sets, top, "equal"), [1, 1, 0, 0])


def test_make_row_null_needs_reason():
    row = rd.make_row("d", "model", "m", float("nan"))
    assert row["value"] is None and row["note"]


# ---------------------------------------------------------------- one small real run
@pytest.fixture(scope="module")
def small_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-data")
    argv = [
        "--model",
        "tiny",
        "--limit",
        "40",
        "--n-boot",
        "50",
        "--shared",
        str(shared_data),
        "--out",
        str(out / "out"),
        "--results",
        str(out / "results"),
        "--baseline-random",
        "--random-model",
        "tiny",
    ]
    assert rd.main(argv) == 0
    return out


@pytest.mark.slow
@pytest.mark.shared
def test_real_data_outputs(small_run, capsys):
    result = json.loads((small_run / "out" / "real_data.json").read_text())
    md = (small_run / "out" / "real_data.md").read_text()
    assert result["model"] == "tiny" and result["machine"] and result["date"]
    assert md.startswith("Real-data benchmark: model `tiny`")
    assert "| dataset | model | metric |" in md
    lines = (small_run / "results" / "real_data.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["rows"] == result["rows"]
    rows = result["rows"]
    assert {r["dataset"] for r in rows} == {rd.NIH, rd.COVID, rd.IU}
    assert {r["model"] for r in rows} == {"model", "random tiny"}
    for r in rows:
        assert isinstance(r["n"], int) and r["n"] > 0, r
        for key in ("value", "ci_low", "ci_high", "chance", "baseline"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0, (key, r)
        assert r["value"] is not None or r["note"], r
        if r["ci_low"] is not None:
            assert r["ci_low"] <= r["ci_high"]
    recall = [r for r in rows if r["dataset"] == rd.COVID and r["metric"] == "image->note R@10"]
    assert recall and recall[0]["chance"] == pytest.approx(min(1.0, 10 / recall[0]["n"]), abs=1e-4)
    iu = [r for r in rows if r["dataset"] == rd.IU]
    assert all(r["chance"] is not None and r["baseline"] is not None for r in iu)
    assert len(result["notes"]) == 3


def test_missing_datasets_are_skipped(tmp_path):
    """An empty shared folder: every dataset is skipped with a reason and a null value."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [
        "--model",
        "tiny",
        "--shared",
        str(empty),
        "--out",
        str(tmp_path / "o"),
        "--results",
        str(tmp_path / "r"),
    ]
    assert rd.main(argv) == 0
    result = json.loads((tmp_path / "o" / "real_data.json").read_text())
    assert len(result["rows"]) == 3
    for r in result["rows"]:
        assert r["value"] is None and r["note"].startswith("skipped:")
    assert all(v.startswith("skipped:") for v in result["datasets"].values())
