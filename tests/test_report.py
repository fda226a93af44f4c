"""``radalign report``: sections, embedded PNGs, attention maps, pointing game, a real browser."""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("config", "losses", "recall", "roc", "evaluation", "retrieval", "flags", "attention")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A tiny ``radalign demo`` folder, built once for this module."""
    from radalign.cli import main

    root = tmp_path_factory.mktemp("report-demo")
    config = root / "tiny.yaml"
    config.write_text(
        "model: tiny\nbatch_size: 4\nmax_steps: 2\nlog_every: 1\neval_every: 2\nsave_every: 2\n"
        "trackers: []\ndata:\n  num_workers: 0\nloss:\n  local_weight: 0.5\n"
    )
    out = root / "d"
    argv = ["demo", "--out", str(out), "--n", "60", "--config", str(config), "--workers", "1"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def report(demo_dir) -> Path:
    from radalign.report import write_report

    return write_report(demo_dir, n_heatmaps=2)


class _Tags(HTMLParser):
    """Collects <img> attributes, <section> ids and per-table body row counts."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.sections: list[str] = []
        self.table_rows: list[int] = []
        self.refs: list[str] = []
        self._tbody = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "table":
            self.table_rows.append(0)
        elif tag == "tbody":
            self._tbody = True
        elif tag == "tr" and self._tbody:
            self.table_rows[-1] += 1
        for key in ("href", "src"):
            if key in a and tag != "img" and not str(a[key]).startswith("#"):
                self.refs.append(a[key])
        if tag in ("link", "script", "iframe"):
            self.refs.append(tag)

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._tbody = False


def _parse(path: Path) -> _Tags:
    tags = _Tags()
    tags.feed(path.read_text(encoding="utf-8"))
    return tags


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_report_has_every_section_with_data(report: Path):
    assert report.name == "index.html" and report.parent.name == "report"
    text = report.read_text(encoding="utf-8")
    tags = _parse(report)
    assert set(SECTIONS) <= set(tags.sections)
    assert "Not available" not in text and "Missing from this run" not in text
    assert "model: tiny" in text  # the resolved config
    assert tags.table_rows and all(n > 0 for n in tags.table_rows)
    assert "macro" in text and "Pointing game" in text
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    for name in ("loss-curves.png", "val-recall.png", "roc.png", "attention-1.png"):
        assert name in pngs
    assert not list(report.parent.parent.glob(".report.*"))  # atomic: no leftovers


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_images_are_embedded_pngs_with_alt_text(report: Path):
    tags = _parse(report)
    assert len(tags.images) >= 5
    for img in tags.images:
        assert img.get("alt"), img.get("alt")
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_MAGIC)
    assert tags.refs == []  # self-contained: no links, scripts or external sources
    assert "http://" not in report.read_text() and "https://" not in report.read_text()


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_plain_pretrain_run_says_what_is_missing(demo_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(demo_dir / "pretrain" / name, run / name)
    from radalign.report import write_report

    page = write_report(run, out=tmp_path / "rep")
    text = page.read_text(encoding="utf-8")
    tags = _parse(page)
    assert {"config", "losses", "recall"} <= set(tags.sections)
    assert "Missing from this run" in text
    for what in ("zeroshot-preds.csv", "zeroshot-eval.csv", "retrieval.json", "flags.csv"):
        assert what in text
    assert "no saved model" in text
    assert (tmp_path / "rep" / "loss-curves.png").is_file()
    # with its model, a plain pretrain run draws heatmaps of its dataset's test scans
    shutil.copytree(demo_dir / "pretrain" / "model", run / "model")
    text = write_report(run, out=tmp_path / "rep", n_heatmaps=1).read_text(encoding="utf-8")
    assert "no saved model" not in text and "test scans of the run&#x27;s dataset" not in text
    assert "test scans of the run's dataset" in text and "attention-1.png" not in text
    assert (tmp_path / "rep" / "attention-1.png").is_file()


def test_report_text_paths_and_config_values_are_escaped(tmp_path):
    """Report texts, file names, paths and config values print as text, never as markup."""
    from radalign.report import write_report

    run = tmp_path / "run <b> & co"
    run.mkdir()
    evil = "<script>alert(1)</script>"
    (run / "config.yaml").write_text(f"model: tiny\nnote: '{evil} & more'\n", encoding="utf-8")
    gallery = [
        {
            "id": "s&1",
            "image_path": str(run / "no<such>&scan.jpg"),
            "true_report": f"{evil} left & right",
            "hits": [{"rank": 1, "score": 0.5, "report": f"{evil} & co", "matches_true_report": 1}],
        }
    ]
    (run / "retrieval.json").write_text(json.dumps(gallery), encoding="utf-8")
    (run / "flags.csv").write_text(
        "id,image_path,report,score,flagged,similarity,neighbour_mean,rank,explanation\n"
        f'f1,/x/a&b.jpg,"{evil} R&L",0.9,True,0.1,0.2,3,"<i>why</i> & how"\n',
        encoding="utf-8",
    )
    (run / "zeroshot-eval.csv").write_text(f"class,auroc,note\nA&B,0.5,{evil}\n", encoding="utf-8")
    page = write_report(run, tmp_path / "rep", n_heatmaps=0)
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<i>" not in text and "<b> &" not in text
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"{esc} &amp; more" in text  # a config value
    assert f"{esc} left &amp; right" in text and f"{esc} &amp; co" in text  # report texts
    assert f"{esc} R&amp;L" in text and "&lt;i&gt;why&lt;/i&gt; &amp; how" in text
    assert "scan not found: no&lt;such&gt;&amp;scan.jpg" in text  # a file name
    assert "run &lt;b&gt; &amp; co" in text  # the run folder, in title, header and paths
    assert "<td>A&amp;B</td>" in text and f"<td>{esc}</td>" in text  # a CSV table
    assert _parse(page).refs == []  # still self-contained: nothing became a script or link


def test_dataset_candidates_are_the_test_split_else_validation(tmp_path):
    """A plain pretrain run's heatmap scans: its dataset's test pairs, validation when none."""
    import pandas as pd
    from PIL import Image
    from radalign.pretrain.config import TrainConfig, save_train_config

    from radalign.report import _dataset_candidates

    splits = {"a": "train", "b": "val", "c": "test"}
    for name in splits:
        Image.new("L", (8, 8)).save(tmp_path / f"{name}.png")
    rows = [{"id": k, "image_path": f"{k}.png", "report": f"Report {k}.", "split": v,
             "patient_id": k} for k, v in splits.items()]  # fmt: skip
    for case, keep, want in (("all", splits, "c"), ("no-test", ("a", "b"), "b")):
        manifest = tmp_path / f"{case}.csv"
        pd.DataFrame([r for r in rows if r["id"] in keep]).to_csv(manifest, index=False)
        config = TrainConfig()
        config.data.source = str(manifest)
        save_train_config(config, tmp_path / f"{case}.yaml")
        found, masks = _dataset_candidates(tmp_path / f"{case}.yaml")
        assert found == [(want, str(tmp_path / f"{want}.png"), f"Report {want}.")] and masks == []


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_scans_are_found_after_the_run_folder_moved(demo_dir):
    from radalign.report import _resolve_image

    scan = next((demo_dir / "phantoms" / "jpg").rglob("*.jpg"))
    old = Path("/no/such/place") / scan.relative_to(demo_dir)
    assert _resolve_image(str(old), demo_dir) == scan
    assert _resolve_image("/no/such/scan.jpg", demo_dir) is None


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_report_command_prints_the_path(demo_dir, tmp_path, capsys):
    from radalign import cmd_report

    parser = argparse.ArgumentParser()
    cmd_report.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["report", str(demo_dir), "--out", str(tmp_path / "r"), "--heatmaps", "0"]
    )
    assert args.run(args) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "r" / "index.html") and Path(printed).is_file()
    assert "heatmaps turned off" in Path(printed).read_text(encoding="utf-8")


@pytest.mark.slow  # shares the module's demo folder (one tiny pretraining run)
def test_word_attention_shapes_and_normalisation(demo_dir):
    import radalign
    from radalign.attention_maps import word_attention

    model = radalign.load(demo_dir / "pretrain" / "model").eval()
    report = "Small right pleural effusion. Moderate cardiomegaly, no pneumothorax."
    image_path = next((demo_dir / "phantoms" / "jpg").rglob("*.jpg"))
    image, words, maps = word_attention(model, image_path, report)
    assert image.ndim == 2 and image.min() >= 0 and image.max() <= 1
    assert words == re.findall(r"[A-Za-z]+", report)
    h, w = model.image_features(model.transform()(image)[None]).grid
    assert maps.shape == (len(words), h, w)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert (maps >= 0).all()


def test_pointing_game_hand_made():
    from radalign.attention_maps import pointing_game, to_image

    maps = np.full((3, 4, 4), 1 / 16, dtype=np.float32)
    maps[0] = 0.0
    maps[0, 0, 0] = 1.0  # "effusion": peak top-left
    maps[2] = 0.0
    maps[2, 3, 3] = 1.0  # "heart": peak bottom-right
    words = ["Effusion", "left", "heart"]
    top_left = np.zeros((64, 64), bool)
    top_left[:16, :16] = True
    masks = {"Pleural Effusion": top_left, "Cardiomegaly": top_left.copy()}
    assert pointing_game(maps, words, masks) == (1, 2)  # effusion inside, heart outside
    masks["Cardiomegaly"] = top_left[::-1, ::-1].copy()
    assert pointing_game(maps, words, masks) == (2, 2)
    assert pointing_game(maps, words, {}) == (0, 0)  # nothing planted: nothing counted
    assert pointing_game(maps[:1], ["mass"], {"Lung Lesion": top_left}) == (1, 1)
    up = to_image(maps, (48, 64))  # letterboxed, non-square scan
    assert up.shape == (3, 48, 64)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<script>window.addEventListener('load', function () {
  var imgs = Array.from(document.images), d = document.body.dataset;
  d.images = imgs.length;
  d.imagesOk = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  d.tableRows = Array.from(document.querySelectorAll('table')).map(function (t) {
    return t.tBodies.length ? t.tBodies[0].rows.length : 0; }).join(',');
  d.checked = 'yes';
});</script>"""


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)"
)
def test_page_renders_in_headless_chromium(report: Path, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    base = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(0)))
    assert attrs.get("checked") == "yes"
    assert int(attrs["images"]) >= 5
    assert attrs["images-ok"] == attrs["images"]  # every image decoded (naturalWidth > 0)
    rows = [int(n) for n in attrs["table-rows"].split(",")]
    assert rows and min(rows) > 0
    shot = tmp_path / "page.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()],
        capture_output=True,
        timeout=60,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes().startswith(PNG_MAGIC)
