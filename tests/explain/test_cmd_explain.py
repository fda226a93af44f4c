"""``radalign explain`` end to end on a phantom scan with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from radalign.data.synth import generate_case

from radalign.cli import main


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    case = generate_case(np.random.default_rng([9, 0]), 96, findings=["Pneumothorax"])
    path = tmp_path_factory.mktemp("scan") / "scan.png"
    Image.fromarray((case.image * 255).round().astype(np.uint8)).save(path)
    return path


def test_cli_report_writes_pngs_and_html(scan, tmp_path, capsys):
    out = tmp_path / "expl"
    rc = main(["explain", str(scan), "--report", "Small right apical pneumothorax.",
               "--model", "tiny", "--out", str(out), "--steps", "4", "--threshold", "0.3"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert str(out / "index.html") in captured.out and "cosine" in captured.err
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "maps.npz", "explain.json", "text-00.png"} <= names
    assert "00-attention-pneumothorax.png" in names and "01-gradients-report.png" in names
    doc = json.loads((out / "explain.json").read_text())
    assert doc["settings"]["threshold"] == 0.3 and doc["image_shape"] == [96, 96]


def test_cli_finding_and_errors(scan, tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["explain", str(scan), "--finding", "Pneumothorax", "--model", "tiny",
                 "--out", str(out), "--steps", "2"]) == 0  # fmt: skip
    assert (out / "01-gradients-Pneumothorax.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(scan), "--finding", "spleen", "--model", "tiny",
                 "--out", str(tmp_path / "g")]) == 2  # fmt: skip
    assert "unknown finding" in capsys.readouterr().err
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["explain", str(empty), "--report", "effusion", "--model", "tiny",
                 "--out", str(tmp_path / "h")]) == 2  # fmt: skip
    assert "zero-byte" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "h").exists()
    with pytest.raises(SystemExit):
        main(["explain", str(scan), "--model", "tiny", "--out", str(tmp_path / "i")])
