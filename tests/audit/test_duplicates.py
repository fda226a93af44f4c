import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image
from radalign.audit.duplicates import (
    check_duplicates,
    hash_pairs,
    minhash_pairs,
    normalise_text,
    union_sets,
)
from radalign.audit.image_stats import image_stats


def test_hash_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, (200, 64), dtype=np.uint8)
    x = base.copy()
    x[100:150] = base[:50]
    flips = rng.integers(0, 64, (50, 5))
    for r, f in zip(range(100, 150), flips):
        x[r, f[: r % 6]] ^= 1
    hexes = [np.packbits(r).tobytes().hex() for r in x]
    got = {(i, j) for i, j, _ in hash_pairs(hexes, 5)}
    d = (x[:, None] != x[None]).sum(-1)
    want = {(i, j) for i in range(200) for j in range(i + 1, 200) if d[i, j] <= 5}
    assert got == want and len(want) >= 50


def test_union_sets_and_text():
    assert union_sets(5, [(0, 1), (1, 2), (3, 4)]) == [[0, 1, 2], [3, 4]]
    assert normalise_text("  No  acute, process!") == "no acute process"
    a = "the lungs are clear with no effusion and the heart size is normal today"
    pairs = minhash_pairs(
        [
            a,
            a.replace("today", "now"),
            "completely different text about bones and joints of the left hand",
        ],
        threshold=0.8,
    )
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]


def _img(rng):
    yy, xx = np.mgrid[:64, :64] / 64
    return (
        255 * np.clip(rng.random((8, 8)).repeat(8, 0).repeat(8, 1) * 0.6 + 0.3 * xx, 0, 1)
    ).astype(np.uint8)


def test_image_and_report_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    paths, patients, reports, studies = [], [], [], []
    for i in range(40):
        p = tmp_path / f"i{i}.png"
        Image.fromarray(_img(rng)).save(p)
        paths.append(str(p))
        patients.append(f"p{i}")
        studies.append(f"s{i}")
        reports.append(
            " ".join(
                rng.choice(
                    [
                        "lung",
                        "heart",
                        "clear",
                        "no",
                        "effusion",
                        "mild",
                        "edema",
                        "left",
                        "right",
                        "base",
                        "opacity",
                    ],
                    12,
                )
            )
        )
    # exact copy for another patient, near copy within the same patient
    (tmp_path / "copy.png").write_bytes((tmp_path / "i0.png").read_bytes())
    near = np.asarray(Image.open(paths[1])).astype(int) + rng.integers(-3, 4, (64, 64))
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(tmp_path / "near.png")
    paths += [str(tmp_path / "copy.png"), str(tmp_path / "near.png")]
    patients += ["p99", "p1"]
    studies += ["s40", "s41"]
    reports += [reports[5], reports[6] + " unchanged"]
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(42)],
            "image_path": paths,
            "patient_id": patients,
            "study_id": studies,
            "report": reports,
        }
    )
    table = SimpleNamespace(frame=frame)
    found = check_duplicates(table, image_stats(table))
    by = {f.subtype: f for f in found}
    assert set(by["exact_image"].ids) == {"r0", "r40"} and by["exact_image"].severity == "high"
    assert set(by["near_duplicate_image"].ids) == {"r1", "r41"}
    assert by["near_duplicate_image"].severity == "medium"  # same patient
    assert set(by["duplicate_report"].ids) == {"r5", "r40"}
    assert set(by["templated_report"].ids) == {"r6", "r41"}
    assert len(found) == 4


def _near_copy(seed: int):
    """100 random embeddings, r50 a near copy of r3, each row its own patient and study."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(100, 16))
    emb[50] = emb[3] + 1e-3 * rng.normal(size=16)
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(100)],
            "image_path": [f"/x/{i}.png" for i in range(100)],
            "patient_id": [f"p{i}" for i in range(100)],
            "study_id": [f"s{i}" for i in range(100)],
            "report": "",
        }
    )
    return emb, frame


def test_embedding_near_duplicates():
    emb, frame = _near_copy(1)
    found = check_duplicates(SimpleNamespace(frame=frame), None, emb)
    assert [set(f.ids) for f in found] == [{"r3", "r50"}]
    # images already flagged as outliers (e.g. two blank files) are not paired as duplicates
    assert not check_duplicates(SimpleNamespace(frame=frame), None, emb, exclude={"r50"})


def test_recall_of_known_real_near_duplicates(shared_data):
    """The 12 listed cross-/within-source pairs, found from perceptual hashes over three
    manifests pooled into one table."""
    from radalign.audit.table import load_table

    names = ("covid_chestxray", "figure1_covid", "nih_cxr14_subset")
    frames = [
        load_table(shared_data / n).frame.assign(id=lambda f, n=n: n + ":" + f["id"]) for n in names
    ]
    table = SimpleNamespace(frame=pd.concat(frames, ignore_index=True))
    found = check_duplicates(table, image_stats(table))
    groups = [{os.path.realpath(p) for p in f.paths} for f in found if "image" in f.subtype]
    truth = pd.read_csv(shared_data / "near_duplicates.csv")
    hit = 0
    for r in truth.itertuples():
        a = os.path.realpath(shared_data / r.dataset_a / r.image_path_a)
        b = os.path.realpath(shared_data / r.dataset_b / r.image_path_b)
        hit += any(a in g and b in g for g in groups)
    recall = hit / len(truth)
    print(
        f"near-duplicate recall on shared data: {hit}/{len(truth)} = {recall:.2f}; "
        f"{len(groups)} image groups found"
    )
    assert recall >= 0.8


def test_repeat_exposures_of_one_study_are_not_near_duplicates():
    emb, frame = _near_copy(2)
    frame.loc[50, ["patient_id", "study_id"]] = ["p3", "s3"]  # a second image of study s3
    assert not check_duplicates(SimpleNamespace(frame=frame), None, emb)
    frame.loc[50, "study_id"] = "s99"  # the same patient's later study: a copied image
    found = check_duplicates(SimpleNamespace(frame=frame), None, emb)
    assert [set(f.ids) for f in found] == [{"r3", "r50"}]
    frame["study_id"] = None  # study unknown: paired as before
    assert [set(f.ids) for f in check_duplicates(SimpleNamespace(frame=frame), None, emb)] == [
        {"r3", "r50"}
    ]
