from types import SimpleNamespace

import numpy as np
import pandas as pd
from radalign.audit.drift import check_drift, classifier_test, holm, stat_features, windows


def _table(n_windows=4, per=150, dim=8, shift=0.0, seed=0, label_shift=0.0):
    rng = np.random.default_rng(seed)
    n = n_windows * per
    dates = pd.date_range("2020-01-01", periods=n, freq="D")
    emb = rng.normal(size=(n, dim))
    lab = rng.random(n) < 0.2
    last = np.arange(n) >= (n_windows - 1) * per
    emb[last, :2] += shift  # realistic: a shift of `shift` sd in 2 of `dim` directions
    lab[last] = rng.random(last.sum()) < 0.2 + label_shift
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "study_date": dates,
            "site": "one",
            "labels": [{"Effusion": float(v)} for v in lab],
            "sex": rng.choice(["F", "M"], n),
            "age": rng.normal(60, 15, n),
        }
    )
    return SimpleNamespace(frame=frame), emb


def test_holm():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_classifier_detects_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 8)), rng.normal(size=(300, 8))
    x[:, :2] += 0.5
    auc, p = classifier_test(x, y, seed=0)
    assert auc > 0.6 and p < 0.01
    assert classifier_test(rng.normal(size=(150, 8)), y, seed=0)[1] > 0.01


def test_windows_by_date_and_site():
    t, _ = _table()
    how, w = windows(t.frame)
    assert how == "date" and w.nunique() == 5  # date quintiles by default
    assert windows(t.frame, max_windows=8)[1].nunique() == 8
    t.frame["site"] = np.repeat(["a", "b", "c"], 200)
    how, w = windows(t.frame)
    assert how == "site" and set(w) == {"a", "b", "c"}


def test_planted_shift_named():
    t, emb = _table(shift=0.5, seed=1)
    found = check_drift(t, emb, None, window="date", min_size=150, max_windows=4)
    assert found, "planted shift not detected"
    names = {f.explanation.split(" (")[0] for f in found}
    last = set(t.frame["id"].iloc[450:])
    assert all(set(f.ids) <= last for f in found), names
    assert any("image embedding" in f.explanation for f in found)


def test_label_prevalence_shift():
    t, emb = _table(seed=2, label_shift=0.25, per=200)
    found = check_drift(t, None, None, window="date", min_size=200, max_windows=4)
    assert any(f.subtype == "label_Effusion_shift" for f in found)


def test_no_false_alarms_on_unshifted_windows():
    alarms = 0
    for seed in range(20):
        t, emb = _table(seed=100 + seed, per=100)
        alarms += bool(
            check_drift(t, emb, emb[:, ::-1].copy(), window="date", min_size=100, seed=seed)
        )
    assert alarms <= 1


def _stats(t, shift=0.0):
    """An image-statistics frame for ``t``: one file per row, intensities shifted in the last
    quarter by ``shift``."""
    rng = np.random.default_rng(3)
    n = len(t.frame)
    t.frame["image_path"] = [f"/x/{i}.png" for i in range(n)]
    mean = rng.normal(0.45, 0.07, n)
    mean[int(0.75 * n) :] -= shift
    cols = {c: rng.normal(0.3, 0.05, n) for c in ("std", "border_mean", "center_mean")}
    hist = {f"h{i}": rng.random(n) for i in range(16)}
    return pd.DataFrame(
        {
            "image_path": t.frame["image_path"],
            "ok": True,
            "mean": mean,
            "frac_black": 0.0,
            "frac_saturated": 0.0,
        }
        | cols
        | hist
    )


def test_image_statistics_shift_found_and_steps_down():
    t, _ = _table(seed=4)
    stats = _stats(t, shift=0.1)
    x = stat_features(t.frame, stats)
    assert x.shape[0] == len(t.frame) and np.abs(x).max() <= 5
    found = check_drift(t, None, None, stats=stats, window="date", max_windows=4)
    assert {f.subtype for f in found} == {"image_statistics_classifier_shift"}
    # only the shifted window: with it set aside, the others are not shifted against the rest
    assert all(set(f.ids) == set(t.frame["id"].iloc[450:]) for f in found)
    assert not check_drift(t, None, None, stats=_stats(t), window="date", max_windows=4)


def test_two_sites_are_one_comparison_naming_the_smaller():
    """With two sites 'A vs the rest' and 'B vs the rest' are one test: the smaller site is
    tested against the larger (and named), and the family is not doubled."""
    t, emb = _table(shift=0.8, seed=3)
    n = len(t.frame)
    t.frame["site"] = np.where(np.arange(n) >= 450, "B", "A")  # B is the shifted quarter
    found = check_drift(t, emb, None, window="site")
    assert found and all(f.explanation.startswith("site window B") for f in found)
    assert all(set(f.ids) == set(t.frame["id"].iloc[450:]) for f in found)
    assert all("over 4 tests" in f.explanation for f in found)  # one window's tests
    t.frame["site"] = np.where(np.arange(n) < 150, "B", "A")  # a small unshifted site
    assert not check_drift(t, emb, None, window="site")
