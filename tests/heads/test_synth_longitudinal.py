"""Longitudinal phantoms: ordered studies, consistent change labels, comparison language."""

from __future__ import annotations

import numpy as np
import pandas as pd
from radalign.data.synth_longitudinal import TRACKED, synthesize_longitudinal
from radalign.heads.timeline import sequences_from_manifest

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

    assert len(list(open_source(root))) == len(df)
    vec = np.random.default_rng(0).normal(size=(len(df), 5))
    (x, mask, labels, changes), pids, splits = sequences_from_manifest(
        df, df["id"], [vec], list(TRACKED)
    )
    assert x.shape[:2] == mask.shape == (12, sizes.max()) and mask.sum() == len(df)
    assert labels.shape[2] == len(TRACKED) and set(splits) <= {"train", "val", "test"}
