from types import SimpleNamespace

import numpy as np
import pandas as pd
from radalign.audit.knn import knn_graph
from radalign.audit.outliers import check_outliers, english_ratio, fence, knn_outlier_scores


def _brute(x, k):
    v = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - v @ v.T
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k], np.argsort(d, axis=1)[:, :k]


def test_exact_matches_brute_force():
    x = np.random.default_rng(0).normal(size=(300, 16))
    g = knn_graph(x, k=5, chunk=64)
    d, i = _brute(x, 5)
    assert g.method == "exact"
    np.testing.assert_allclose(g.distances, d, atol=1e-5)
    assert (g.indices == i).mean() > 0.99


def test_ivf_recall_and_missing_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 16))
    x[5] = np.nan
    g = knn_graph(x, k=10, exact_max=100, nprobe=32)
    assert g.method == "ivf"
    assert (g.indices[5] == -1).all() and np.isinf(g.distances[5]).all()
    ok = np.r_[0:5, 6:3000]
    _, i = _brute(x[ok], 10)
    truth = ok[i]
    rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(g.indices[ok], truth)])
    assert rec > 0.9
    assert not (g.indices[ok] == ok[:, None]).any()  # never itself


def test_exact_duplicate_has_zero_distance():
    x = np.random.default_rng(2).normal(size=(50, 8))
    x[7] = x[3]
    g = knn_graph(x, k=3)
    assert g.indices[3, 0] == 7 and g.indices[7, 0] == 3
    assert g.distances[3, 0] < 1e-5


def test_embedding_outliers_flag_planted_points():
    rng = np.random.default_rng(3)
    centre = rng.normal(size=32)
    x = centre + 0.3 * rng.normal(size=(400, 32))
    x[:4] = rng.normal(size=(4, 32)) * 3  # far from the cluster
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(400)], "image_path": None, "report": ""})
    found = check_outliers(SimpleNamespace(frame=frame), x, None, k=10)
    flagged = {f.ids[0] for f in found if f.subtype == "image_embedding"}
    assert {"r0", "r1", "r2", "r3"} <= flagged
    assert len(flagged) <= 8
    s = knn_outlier_scores(knn_graph(x, k=10))
    assert (s[:4] > fence(s)).all()


def test_report_language_and_length():
    texts = ["The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."] * 60
    texts[0] = "Les poumons sont dégagés, pas d'épanchement pleural ni de pneumothorax visible ici."
    texts[1] = " ".join(["There is a small effusion on the left with no change."] * 40)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "image_path": None, "report": texts})
    found = check_outliers(SimpleNamespace(frame=frame), None, None)
    subs = {(f.subtype, f.ids[0]) for f in found}
    assert ("report_language", "r0") in subs
    assert ("report_too_long", "r1") in subs
    assert len(found) == 2
    assert english_ratio(texts[2])[0] > 0.3


def test_mismatch_flags_swapped_reports():
    from radalign.audit.outliers import check_mismatch

    rng = np.random.default_rng(4)
    rep = rng.normal(size=(200, 16))
    img = rep + 0.3 * rng.normal(size=(200, 16))
    rep[[0, 1]] = rep[[1, 0]]  # two swapped pairs
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(200)],
            "image_path": None,
            "study_id": [f"s{i}" for i in range(200)],
            "report": "",
        }
    )
    found = check_mismatch(SimpleNamespace(frame=frame), img, rep, k=10)
    flagged = {i for f in found for i in f.ids}
    assert {"r0", "r1"} <= flagged and len(flagged) <= 6


def test_mismatch_leaves_out_excluded_rows():
    from radalign.audit.outliers import check_mismatch

    rng = np.random.default_rng(5)
    rep = rng.normal(size=(200, 16))
    img = rep + 0.3 * rng.normal(size=(200, 16))
    rep[[0, 1]] = rep[[1, 0]]
    img[2] = rng.normal(size=16)  # an odd image, already an outlier: fits no report
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(200)],
            "image_path": None,
            "study_id": [f"s{i}" for i in range(200)],
            "report": "",
        }
    )
    table = SimpleNamespace(frame=frame)
    assert "r2" in {i for f in check_mismatch(table, img, rep, k=10) for i in f.ids}
    flagged = {i for f in check_mismatch(table, img, rep, k=10, exclude={"r2"}) for i in f.ids}
    assert {"r0", "r1"} <= flagged and "r2" not in flagged


def _labelled_archive(seed: int, n: int = 300):
    """Reports clustered by their 3 binary labels, images near their reports."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 3)) < 0.3
    centres = rng.normal(size=(8, 16)) * 2
    key = y @ np.array([1, 2, 4])
    rep = centres[key] + 0.5 * rng.normal(size=(n, 16))
    img = rep + 0.5 * rng.normal(size=(n, 16))
    frame = pd.DataFrame(
        {
            "id": [f"r{r}" for r in range(n)],
            "image_path": None,
            "study_id": [f"s{r}" for r in range(n)],
            "report": "",
            "labels": [{c: float(v) for c, v in zip("abc", row, strict=True)} for row in y],
        }
    )
    return rng, key, rep, img, frame


def test_labels_gate_the_mismatch():
    from radalign.audit.outliers import check_mismatch, label_disagreement

    _, key, rep, img, frame = _labelled_archive(6)
    i, j = np.flatnonzero(key == 0)[0], np.flatnonzero(key == 7)[0]
    rep[[i, j]] = rep[[j, i]]  # reports swapped between studies with other labels
    loss = label_disagreement(frame, rep)
    assert set(np.argsort(-loss)[:2]) == {i, j}
    flagged = {x for f in check_mismatch(SimpleNamespace(frame=frame), img, rep) for x in f.ids}
    assert {f"r{i}", f"r{j}"} <= flagged and len(flagged) <= 4
    assert np.isnan(label_disagreement(frame.drop(columns="labels"), rep)).all()


def test_exchanged_reports_are_one_finding_naming_both():
    from radalign.audit.outliers import check_mismatch

    rng, key, rep, img, frame = _labelled_archive(7)
    i, j = np.flatnonzero(key == 1)[0], np.flatnonzero(key == 6)[0]
    rep[[i, j]] = rep[[j, i]]
    found = check_mismatch(SimpleNamespace(frame=frame), img, rep)
    pairs = [f for f in found if f.subtype == "reports_exchanged"]
    assert [set(f.ids) for f in pairs] == [{f"r{i}", f"r{j}"}]
    assert pairs[0].severity == "high" and "look exchanged" in pairs[0].explanation
    # the rows of the pair are not flagged again one by one
    assert not any(f"r{i}" in f.ids for f in found if f.subtype == "image_report_mismatch")
    # without labels the image side alone still pairs them
    found = check_mismatch(SimpleNamespace(frame=frame.drop(columns="labels")), img, rep)
    assert {f"r{i}", f"r{j}"} <= {x for f in found for x in f.ids}


def test_no_exchange_or_mismatch_found_in_a_clean_archive():
    from radalign.audit.outliers import check_mismatch, exchanged_pairs

    for seed in range(3):
        _, _, rep, img, frame = _labelled_archive(10 + seed)
        assert check_mismatch(SimpleNamespace(frame=frame), img, rep) == []
    u = img / np.linalg.norm(img, axis=1, keepdims=True)
    t = rep / np.linalg.norm(rep, axis=1, keepdims=True)
    assert exchanged_pairs(u, t, frame["study_id"].to_numpy()) == []


def test_an_odd_image_whose_report_fits_its_labels_is_not_a_mismatch():
    """The labels side with the report: the image embedding is the odd one, not the report."""
    from radalign.audit.outliers import check_mismatch

    rng, key, rep, img, frame = _labelled_archive(8)
    i = np.flatnonzero(key == 3)[0]
    img[i] = rep[np.flatnonzero(key == 4)[0]] + 0.5 * rng.normal(size=16)
    table = SimpleNamespace(frame=frame)
    assert f"r{i}" not in {x for f in check_mismatch(table, img, rep) for x in f.ids}
    # without labels there is no third witness and the pair is flagged
    table = SimpleNamespace(frame=frame.drop(columns="labels"))
    assert f"r{i}" in {x for f in check_mismatch(table, img, rep) for x in f.ids}
