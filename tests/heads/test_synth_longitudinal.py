"""Longitudinal phantoms: ordered studies, consistent change labels, comparison language."""

from __future__ import annotations

import numpy as np
import pandas as pd
from radalign.data.synth_longitudinal import TRACKED, synthesize_longitudinal
from radalign.heads.timeline import CHANGE_CLASSES
from radalign.heads.timeline_data import build_timelines

WORDS = {"new": "new", "worsened": ("increased", "worsened"), "resolved": "resolved"}


def test_longitudinal_manifest(tmp_path):
    root = synthesize_longitudinal(tmp_path / "lp", n_patients=12, seed=3, size=64)
    df = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    sizes = df.groupby("patient_id").size()
    assert sizes.between(3, 6).all() and len(sizes) == 12
    for _, g in df.groupby("patient_id"):
        assert list(g["study_date"]) == sorted(g["study_date"])
        assert (g[[f"change:{k}" for k in TRACKED]].iloc[0] == "").all()
        for k in TRACKED:
            sev = g[f"severity:{k}"].to_numpy()
            for t in range(1, len(g)):
                ch, text = g[f"change:{k}"].iloc[t], g["report"].iloc[t]
                expect = ("new" if sev[t - 1] == 0 < sev[t] else "resolved" if sev[t - 1] > 0 == sev[t]
                          else "worsened" if sev[t] > sev[t - 1] else "unchanged")  # fmt: skip
                assert ch == expect
                if ch in WORDS:
                    words = WORDS[ch] if isinstance(WORDS[ch], tuple) else (WORDS[ch],)
                    assert any(w in text for w in words), (ch, text)
            assert ((sev > 0) == g["labels"].str.contains(k).to_numpy()).all()
    assert (root / df["image_path"].iloc[0]).is_file()
    assert {"new", "resolved", "worsened", "unchanged"} <= set(
        df.filter(like="change:").values.ravel()
    )
    from radalign.data.sources import open_source

    records = list(open_source(root))
    assert len(records) == len(df)
    vec = np.random.default_rng(0).normal(size=(len(df), 5))
    tl = build_timelines(records, [r.id for r in records], [vec], list(TRACKED))
    assert tl.x.shape[:2] == tl.mask.shape == (12, sizes.max()) and tl.mask.sum() == len(df)
    assert tl.labels.shape[2] == len(TRACKED) and set(tl.splits) <= {"train", "val", "test"}
    # the derived change classes are the manifest's change columns, study by study
    row = df.set_index("id")
    for p, ids in enumerate(tl.ids):
        for t, sid in enumerate(ids[1:], start=1):
            for j, k in enumerate(TRACKED):
                assert CHANGE_CLASSES[tl.changes[p, t, j]] == row.loc[sid, f"change:{k}"]
            assert list(tl.labels[p, t]) == [row.loc[sid, f"severity:{k}"] > 0 for k in TRACKED]


def test_check_longitudinal_skips_and_counts():
    from radalign.data.records import PairRecord
    from radalign.encoders.errors import SkipLog
    from radalign.heads.timeline_data import check_longitudinal, tracked_findings

    recs = [
        PairRecord("a", None, "x", patient_id="p1", study_date="21800506", labels={"Edema": 1}),
        PairRecord("b", None, "x", patient_id="p1", study_date="2180-06-01", labels={"Edema": 0}),
        PairRecord("c", None, "x", patient_id=None, study_date="2180-06-01"),
        PairRecord("d", None, "x", patient_id="p2", study_date="not a date"),
    ]
    log = SkipLog()
    kept = check_longitudinal(recs, "src", log)
    assert [r.id for r in kept] == ["a", "b"]
    assert log.counts() == {"no patient id": 1, "no study date": 1}
    assert tracked_findings(kept) == ["Edema"]
    vec = np.eye(2, dtype=np.float32)
    tl = build_timelines(kept[::-1], ["b", "a"], [vec[::-1]], ["Edema"])
    assert tl.ids == [["a", "b"]] and CHANGE_CLASSES[tl.changes[0, 1, 0]] == "resolved"
    np.testing.assert_array_equal(tl.x[0], vec)
