"""``radalign.explain.explain`` on a phantom with the tiny model: shapes, thresholds, circles,
outputs on disk, bad inputs; and the denoising / circling helpers on hand-made maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from radalign.data.synth import generate_case
from radalign.explain import Explainer, explain
from radalign.explain.render import circled_regions, denoise


@pytest.fixture(scope="module")
def case():
    return generate_case(np.random.default_rng([4, 0]), 96, findings=["Pleural Effusion"])


@pytest.fixture(scope="module")
def report_explanation(tiny_model, case):
    return explain(tiny_model, case.image, report="Moderate left pleural effusion.", steps=8)


def test_maps_have_the_scans_shape_and_are_finite(report_explanation, case):
    e = report_explanation
    assert e.mode == "report" and np.isfinite(e.similarity)
    kinds = [(m.kind, m.name) for m in e.maps]
    assert kinds == [("attention", "effusion"), ("gradients", "report")]
    assert e.map("attention").label == "Pleural Effusion"
    for m in e.maps:
        assert m.raw.shape == case.image.shape == m.heat.shape
        assert np.isfinite(m.raw).all() and m.heat.min() >= 0.0 and m.heat.max() <= 1.0
    (t,) = e.texts
    assert t.words == ["Moderate", "left", "pleural", "effusion"]
    assert t.ig.shape == (4,) and np.isfinite(t.ig).all()
    assert abs(t.ig.sum() - t.ig_total) == pytest.approx(t.ig_gap, abs=1e-9)


def test_finding_mode_uses_the_prompts(tiny_model, case):
    ex = Explainer(tiny_model, steps=4, text_ig=False)
    e = ex.explain(case.image, finding="effusion")
    assert e.query == "Pleural Effusion" and e.mode == "finding"
    assert [m.kind for m in e.maps] == ["attention", "gradients"]
    assert len(e.texts) == len(ex.finding_prompts("Pleural Effusion")) > 1
    assert all(np.isnan(t.ig).all() for t in e.texts)  # text IG off


def test_threshold_keeps_less_as_it_rises(tiny_model, case):
    kept = []
    for threshold in (0.0, 0.3, 0.8):
        e = explain(tiny_model, case.image, finding="Pleural Effusion", steps=4,
                    threshold=threshold, text_ig=False)  # fmt: skip
        kept.append(int((e.map("gradients").heat > 0).sum()))
    assert kept[0] >= kept[1] >= kept[2] >= 1


def test_denoise_and_circles_on_a_hand_made_map():
    raw = np.zeros((50, 50))
    raw[10:15, 10:15] = 1.0  # a strong blob
    raw[35:38, 30:35] = 0.6  # a weaker, smaller one
    raw[45, 5] = -5.0  # negative evidence never shows
    heat = denoise(raw, threshold=0.5, smooth=0.0)
    assert heat.max() == 1.0 and heat[45, 5] == 0.0
    regions = circled_regions(heat)
    assert len(regions) == 2
    big = regions[0]
    assert (big.row, big.col) == pytest.approx((12.0, 12.0))
    assert big.area == 25 and big.radius == pytest.approx(np.sqrt(8) + 0.5)
    assert len(circled_regions(denoise(raw, threshold=0.7, smooth=0.0))) == 1
    assert circled_regions(np.zeros((5, 5))) == []
    smooth = denoise(raw, threshold=0.0, smooth=0.05)
    assert smooth[9, 12] > 0 and smooth.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="threshold"):
        denoise(raw, threshold=1.5)


def test_save_writes_the_folder(report_explanation, tmp_path):
    page = report_explanation.save(tmp_path / "out")
    out = page.parent
    html = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "effusion" in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["00-attention-effusion.png", "01-gradients-report.png", "text-00.png"]
    doc = json.loads((out / "explain.json").read_text())
    assert doc["mode"] == "report" and len(doc["maps"]) == 2 and doc["settings"]["steps"] == 8
    with np.load(out / "maps.npz") as z:
        assert z["00-attention-effusion.heat"].shape == report_explanation.image.shape
        assert "01-gradients-report.raw" in z.files and "text-00.ig" in z.files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_html_escapes_the_report(tiny_model, case, tmp_path):
    e = explain(tiny_model, case.image, report="<script>alert(1)</script> effusion", steps=2,
                text_ig=False)  # fmt: skip
    html = e.save(tmp_path / "x").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_bad_inputs(tiny_model, case, tmp_path):
    with pytest.raises(ValueError, match="no words"):
        explain(tiny_model, case.image, report=" ... ; ")
    with pytest.raises(ValueError, match="unknown finding 'spleen'.*Pleural Effusion"):
        explain(tiny_model, case.image, finding="spleen")
    with pytest.raises(ValueError, match="exactly one"):
        explain(tiny_model, case.image)
    with pytest.raises(ValueError, match="exactly one"):
        explain(tiny_model, case.image, report="effusion", finding="Edema")
    with pytest.raises(FileNotFoundError, match="no such scan"):
        explain(tiny_model, tmp_path / "missing.png", finding="Edema")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png"):
        explain(tiny_model, broken, finding="Edema")
    with pytest.raises(ValueError, match="2-D"):
        explain(tiny_model, np.zeros((3, 8, 8)), finding="Edema")
    with pytest.raises(ValueError, match="steps"):
        Explainer(tiny_model, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        Explainer(tiny_model, baseline="white")


def test_blur_baseline(tiny_model, case):
    e = explain(tiny_model, case.image, finding="Edema", steps=4, baseline="blur", text_ig=False)
    assert e.settings["baseline"] == "blur scan"
    m = e.map("gradients")
    assert m.raw.shape == case.image.shape and np.isfinite(m.raw).all()


def test_run_local_params_reads_the_runs_config(tmp_path):
    from radalign.explain.api import run_local_params

    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    assert run_local_params(model_dir) is None
    (tmp_path / "run" / "config.yaml").write_text(
        "loss:\n  local_tau1: 2.5\n  local_normalize: true\n"
    )
    assert run_local_params(model_dir) == (2.5, True)
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    assert run_local_params(model_dir) == (4.0, False)
    assert run_local_params("tiny") is None
