from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from radalign.audit import image_stats as ims
from radalign.audit.image_stats import check_image_stats, image_stats


def _body(rng, size=64):
    yy, xx = np.mgrid[:size, :size] / size
    img = 40 + 150 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def archive(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        p = tmp_path / f"ok{i}.png"
        Image.fromarray(_body(rng)).save(p)
        paths.append(str(p))
    special = {
        "blank": np.full((64, 64), 120, np.uint8),
        "saturated": np.full((64, 64), 255, np.uint8),
        "inverted": 255 - _body(rng),
        "wide": np.tile(_body(rng), (1, 3)),
    }
    for name, arr in special.items():
        arr = arr.copy()
        if name == "saturated":
            arr[:8] = 0  # not blank: some structure
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "empty.png").write_bytes(b"")
    paths += [str(tmp_path / "corrupt.png"), str(tmp_path / "empty.png")]
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(paths))], "image_path": paths})
    return SimpleNamespace(frame=frame)


def test_findings_on_planted_images(archive, tmp_path):
    stats = image_stats(archive, cache=tmp_path / "cache")
    assert len(stats) == len(archive.frame)
    assert stats["sha256"].str.len().max() == 64
    found = check_image_stats(archive, stats)
    by: dict = {}
    for f in found:
        by.setdefault((f.type, f.subtype), set()).update(f.ids)
    n = len(archive.frame)
    assert by[("entry_error", "unreadable_image")] == {f"r{n - 2}", f"r{n - 1}"}
    assert by[("outlier", "blank_image")] == {"r30"}
    assert by[("outlier", "saturated_image")] == {"r31"}
    assert by[("outlier", "inverted_image")] == {"r32"}
    assert by[("outlier", "aspect_outlier")] == {"r33"}
    zero = [f for f in found if f"r{n - 1}" in f.ids][0]
    assert "zero-byte" in zero.explanation
    assert len(found) == 6  # nothing on the 30 ordinary images


def test_cache_resumes_without_decoding(archive, tmp_path, monkeypatch):
    first = image_stats(archive, cache=tmp_path / "c", flush=5)
    calls = []
    real = ims.file_stats
    monkeypatch.setattr(ims, "file_stats", lambda p: calls.append(p) or real(p))
    again = image_stats(archive, cache=tmp_path / "c")
    assert calls == []
    pd.testing.assert_frame_equal(first, again)
    # a changed file is decoded again
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(archive.frame["image_path"][0])
    image_stats(archive, cache=tmp_path / "c")
    assert calls == [archive.frame["image_path"][0]]


def test_clean_phantoms_give_few_findings(tmp_path):
    from radalign.audit.table import load_table
    from radalign.data.synth import synthesize

    synthesize(tmp_path / "ph", n=200, seed=0, size=64, layouts=("jpg",))
    table = load_table(tmp_path / "ph" / "jpg")
    found = check_image_stats(table, image_stats(table))
    assert len(found) <= 2, [f.explanation for f in found]


def test_layout_outlier_is_model_free(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(30):
        Image.fromarray(_body(rng)).save(tmp_path / f"ok{i}.png")
        paths.append(str(tmp_path / f"ok{i}.png"))
    yy, xx = np.mgrid[:64, :64] / 64
    stripes = 128 + 90 * np.sin(2 * np.pi * (3 * xx + 2 * yy)) + rng.normal(0, 8, (64, 64))
    Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8)).save(tmp_path / "stripes.png")
    paths.append(str(tmp_path / "stripes.png"))
    table = SimpleNamespace(
        frame=pd.DataFrame({"id": [f"r{i}" for i in range(len(paths))], "image_path": paths})
    )
    found = check_image_stats(table, image_stats(table))
    assert [(f.subtype, f.ids) for f in found] == [("image_layout_outlier", ("r30",))]
