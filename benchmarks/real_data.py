"""Real-data rows of the quality benchmark (the small public sets in ``../shared/data``).

1. ``nih_cxr14_subset``: Pneumonia vs No Finding on the test split: zero-shot AUROC of
   P(Pneumonia) - P(No Finding) (and of P(Pneumonia) alone) with the ``chexpert`` prompts, and
   a linear probe on the image embeddings (C chosen on val, refitted on train+val).
2. ``covid_chestxray``: image <-> clinical-note Recall@1/5/10 on the frontal test pairs with a
   note; chance = K/N.
3. ``iu_xray_reports``: report -> report retrieval on the test split (one report per study):
   precision@5 of MeSH main-heading sets (equal set, or at least one shared heading) against the
   exact chance level and a TF-IDF baseline, for normal and abnormal queries separately.

    python benchmarks/real_data.py --model runs/demo/pretrain/model --baseline-random
    python benchmarks/real_data.py --model tiny --limit 40 --n-boot 50     # quick smoke run

Writes ``OUT/real_data.json`` and ``OUT/real_data.md`` and appends the JSON as one line to
``RESULTS/real_data.jsonl``. A dataset whose folder is absent is skipped (its row has value
null and says why). 95% intervals: bootstrap over cases for AUROC and precision, Wilson for
Recall@K.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

REPO = Path(__file__).resolve().parents[1]
NIH, COVID, IU = "nih_cxr14_subset", "covid_chestxray", "iu_xray_reports"
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
RECALL_KS = (1, 5, 10)
TOP_K = 5
SEED = 0


# ---------------------------------------------------------------- small pure helpers
def mesh_headings(value) -> frozenset[str]:
    """Lower-cased MeSH main headings (text before the first ``/``) of a ``mesh_major`` cell.

    Terms are separated by ``|`` in the manifest (``;`` is accepted too):
    ``"Opacity/lung/base/left|Cardiomegaly"`` -> ``{"opacity", "cardiomegaly"}``; blank -> ``{}``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return frozenset()
    terms = str(value).replace(";", "|").split("|")
    return frozenset(h for t in terms if (h := t.split("/", 1)[0].strip().lower()))


def chance_precision(label_sets: Sequence[frozenset], match: str = "equal") -> np.ndarray:
    """Expected precision@k of random other items, per query: the share of the ``N - 1`` others
    that match (``equal`` sets, or ``overlap`` in at least one heading); independent of k."""
    n = len(label_sets)
    if n < 2:
        raise ValueError("chance precision needs at least two items")
    if match == "equal":
        counts = Counter(label_sets)
        same = np.array([counts[s] - 1 for s in label_sets], dtype=np.float64)
    elif match == "overlap":
        same = _match_matrix(label_sets, "overlap").sum(axis=1) - 1.0
    else:
        raise ValueError(f"match must be 'equal' or 'overlap', got {match!r}")
    return same / (n - 1)


def _match_matrix(label_sets: Sequence[frozenset], match: str) -> np.ndarray:
    """``[N, N]`` 0/1 matrix: item ``j`` counts as a hit for query ``i``."""
    if match == "equal":
        return np.array([[a == b for b in label_sets] for a in label_sets], dtype=np.float64)
    return np.array([[bool(a & b) for b in label_sets] for a in label_sets], dtype=np.float64)


def top_k_others(vectors: np.ndarray, k: int) -> np.ndarray:
    """Indices ``[N, k]`` of each row's ``k`` most cosine-similar other rows, best first."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def mean_ci(values: np.ndarray, n_boot: int, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of a mean (degenerate samples give a point)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or n_boot < 1:
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    res = bootstrap((v,), np.mean, n_resamples=n_boot, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson_ci(hits: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion ``hits / n``."""
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _num(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def make_row(
    dataset: str,
    model: str,
    metric: str,
    value=None,
    ci=(None, None),
    n=None,
    chance=None,
    baseline=None,
    note: str = "",
) -> dict:
    """One result row; NaN becomes null and a null value must come with a reason."""
    row = {
        "dataset": dataset,
        "model": model,
        "metric": metric,
        "value": _num(value),
        "ci_low": _num(ci[0]),
        "ci_high": _num(ci[1]),
        "n": n,
        "chance": _num(chance),
        "baseline": _num(baseline),
        "note": note,
    }
    if row["value"] is None and not note:
        row["note"] = "no value"
    return row


def _limited(df: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows per split, a fixed random sample (all rows without a limit)."""
    if limit is None:
        return df
    parts = [g.sample(min(len(g), limit), random_state=SEED) for _, g in df.groupby("split")]
    return pd.concat(parts).sort_index()


# ---------------------------------------------------------------- 1. NIH Pneumonia
def nih_rows(model, tag: str, folder: Path, args) -> list[dict]:
    """Zero-shot and linear-probe AUROC, Pneumonia vs No Finding, test split."""
    from radalign.encoders.embed import embed_images

    df = pd.read_csv(folder / "manifest.csv")
    df = _limited(df[df["subset_class"].isin(["Pneumonia", "No Finding"])], args.limit)
    df = df.assign(y=(df["subset_class"] == "Pneumonia").astype(int), id=df["image_path"])
    emb = embed_images(
        model, [folder / p for p in df["image_path"]], list(df["id"]), progress=False
    )
    vec = pd.DataFrame(emb.vectors, index=emb.metadata["id"])
    df = df[df["id"].isin(vec.index)]
    skipped = f"; {len(emb.skipped)} unreadable images left out" if len(emb.skipped) else ""
    parts = {s: (vec.loc[g["id"]].to_numpy(), g["y"].to_numpy()) for s, g in df.groupby("split")}
    tx, ty = parts.get("test", (np.zeros((0, vec.shape[1])), np.zeros(0, int)))
    counts = f"{int(ty.sum())} Pneumonia / {int((ty == 0).sum())} No Finding"
    rows = _zero_shot_rows(model, tag, tx, ty, args.n_boot, counts + skipped)
    rows.append(_probe_row(tag, parts, tx, ty, args.n_boot, counts + skipped))
    base = intensity_auroc(folder, df)
    for r in rows:
        r["baseline"] = _num(base)
        r["note"] += "; baseline = mean pixel intensity (sign from train)"
    return rows


def intensity_auroc(folder: Path, df: pd.DataFrame) -> float:
    """Test AUROC of the mean pixel intensity, its sign chosen on train: a no-model floor that
    shows how much the two classes differ in plain image statistics."""
    from PIL import Image
    from radalign.zeroshot.metrics import auroc, auroc_reason

    parts = {s: df[df["split"] == s] for s in ("train", "test")}
    if any(auroc_reason(p["y"].to_numpy()) for p in parts.values()):
        return float("nan")
    means = {
        s: np.array(
            [
                np.asarray(Image.open(folder / f).convert("L"), dtype=np.float32).mean()
                for f in p["image_path"]
            ]
        )
        for s, p in parts.items()
    }
    sign = 1.0 if auroc(parts["train"]["y"], means["train"]) >= 0.5 else -1.0
    return auroc(parts["test"]["y"], sign * means["test"])


def _auroc_row(tag: str, metric: str, y, score, n_boot: int, note: str) -> dict:
    from radalign.zeroshot.metrics import auroc, auroc_reason, bootstrap_ci

    reason = auroc_reason(y)
    if reason:
        return make_row(NIH, tag, metric, n=len(y), chance=0.5, note=f"undefined: {reason}")
    return make_row(
        NIH,
        tag,
        metric,
        auroc(y, score),
        bootstrap_ci(y, score, n=n_boot, seed=SEED),
        len(y),
        chance=0.5,
        note=note,
    )


def _zero_shot_rows(model, tag: str, x, y, n_boot: int, note: str) -> list[dict]:
    from radalign.zeroshot.classifier import PromptClassifier

    probs = PromptClassifier(model, "chexpert").predict(x)
    diff = (probs["Pneumonia"] - probs["No Finding"]).to_numpy()
    return [
        _auroc_row(tag, "zero-shot AUROC, P(Pneumonia)-P(No Finding)", y, diff, n_boot, note),
        _auroc_row(
            tag, "zero-shot AUROC, P(Pneumonia)", y, probs["Pneumonia"].to_numpy(), n_boot, note
        ),
    ]


def _probe_row(tag: str, parts: dict, tx, ty, n_boot: int, note: str) -> dict:
    from radalign.zeroshot.linear_probe import fit_linear_probe

    metric = "linear-probe AUROC (train, C by val, refit train+val)"
    try:
        probe = fit_linear_probe(*parts["train"], *parts["val"], Cs=PROBE_CS)
    except (KeyError, ValueError) as err:
        return make_row(NIH, tag, metric, n=len(ty), chance=0.5, note=f"no probe: {err}")
    sel = f"C={probe.chosen_C[0]:g} (val AUROC {probe.selection_auroc[0]:.3f})"
    return _auroc_row(tag, metric, ty, probe.predict_proba(tx), n_boot, f"{note}; {sel}")


# ---------------------------------------------------------------- 2. covid notes
def covid_rows(model, tag: str, folder: Path, args) -> list[dict]:
    """Image <-> note Recall@K over the frontal test pairs with a note."""
    from radalign.data.sources import open_source
    from radalign.encoders.embed import embed_images, embed_texts

    records = open_source(folder / "manifest.csv", split="test").records
    records = records[: args.limit] if args.limit else records
    img = embed_images(
        model, [r.image_path for r in records], [r.id for r in records], progress=False
    )
    keep = set(img.metadata["id"])
    records = [r for r in records if r.id in keep]
    txt = embed_texts(model, [r.report for r in records], [r.id for r in records], progress=False)
    n = len(records)
    facts = (
        f"{n} pairs, {len({r.report for r in records})} distinct notes, "
        f"{len({r.patient_id for r in records})} patients; identical notes tie and count "
        "against image->note"
    )
    if n < 2 or len(txt) != n:
        reason = "fewer than 2 pairs" if n < 2 else "some notes could not be embedded"
        return [make_row(COVID, tag, "Recall@K", n=n, note=f"{reason}; {facts}")]
    from radalign.retrieval.evaluate import recall_at_k

    rec = recall_at_k(img.vectors, txt.vectors, ks=RECALL_KS)
    rows = []
    for direction, label in (
        ("query_to_gallery", "image->note"),
        ("gallery_to_query", "note->image"),
    ):
        for k in RECALL_KS:
            r = rec[direction][f"R@{k}"]
            rows.append(
                make_row(
                    COVID,
                    tag,
                    f"{label} R@{k}",
                    r,
                    wilson_ci(round(r * n), n),
                    n,
                    chance=min(1.0, k / n),
                    note=facts,
                )
            )
    return rows


# ---------------------------------------------------------------- 3. IU report retrieval
def iu_reports(folder: Path, limit: int | None) -> pd.DataFrame:
    """Test-split reports, one per study, with non-empty text and their heading sets."""
    df = pd.read_csv(folder / "manifest.csv", usecols=["study_id", "report", "mesh_major", "split"])
    df = df[df["split"] == "test"].drop_duplicates("study_id")
    df = df[df["report"].fillna("").str.strip() != ""]
    df = _limited(df, limit).reset_index(drop=True)
    return df.assign(headings=df["mesh_major"].map(mesh_headings))


def precision_at_k(label_sets: Sequence[frozenset], top: np.ndarray, match: str) -> np.ndarray:
    """Per-query share of the retrieved items whose headings match the query's."""
    m = _match_matrix(label_sets, match)
    return m[np.arange(len(top))[:, None], top].mean(axis=1)


def iu_baselines(reports: pd.DataFrame) -> dict:
    """TF-IDF per-query precision and exact chance, for both match rules."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    sets = list(reports["headings"])
    tfidf = TfidfVectorizer().fit_transform(reports["report"]).toarray()
    top = top_k_others(tfidf, TOP_K)
    return {
        m: {"tfidf": precision_at_k(sets, top, m), "chance": chance_precision(sets, m)}
        for m in ("equal", "overlap")
    }


def iu_rows(model, tag: str, reports: pd.DataFrame, base: dict, args) -> list[dict]:
    """Precision@5 of heading-set matches for all, normal and abnormal queries."""
    from radalign.encoders.embed import embed_texts

    n = len(reports)
    if n <= TOP_K:
        return [make_row(IU, tag, f"P@{TOP_K}", n=n, note=f"only {n} reports, need > {TOP_K}")]
    emb = embed_texts(model, list(reports["report"]), progress=False)
    sets = list(reports["headings"])
    top = top_k_others(emb.vectors, TOP_K)
    normal = np.array([s == frozenset({"normal"}) for s in sets])
    texts = reports["report"].str.strip().nunique()
    rows = []
    for match, mname in (("equal", "same heading set"), ("overlap", "shares a heading")):
        prec = precision_at_k(sets, top, match)
        for subset, mask in (("all", np.ones(n, bool)), ("normal", normal), ("abnormal", ~normal)):
            metric = f"P@{TOP_K} {mname}, {subset} queries"
            if not mask.any():
                rows.append(make_row(IU, tag, metric, n=0, note=f"no {subset} queries"))
                continue
            rows.append(
                make_row(
                    IU,
                    tag,
                    metric,
                    prec[mask].mean(),
                    mean_ci(prec[mask], args.n_boot),
                    int(mask.sum()),
                    chance=base[match]["chance"][mask].mean(),
                    baseline=base[match]["tfidf"][mask].mean(),
                    note=f"baseline = TF-IDF; {n} reports ({texts} distinct texts), "
                    f"{len(set(sets))} distinct heading sets",
                )
            )
    return rows


# ---------------------------------------------------------------- driver
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="registered name or saved model directory")
    default_shared = os.environ.get("RADALIGN_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    ap.add_argument("--shared", default=default_shared, help="folder holding the data sets")
    ap.add_argument("--out", default="runs/real-data")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument(
        "--baseline-random", action="store_true", help="also evaluate a randomly initialised model"
    )
    ap.add_argument(
        "--random-model",
        default=None,
        help="name built with random weights for --baseline-random (default: --model "
        "when it is a name, else demo-resnet18-minilm)",
    )
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="at most this many rows per split")
    return ap.parse_args(argv)


def _models(args) -> list[tuple[str, object]]:
    """``[(tag, model)]``: the model, then the random baseline when asked."""
    import radalign

    models = [("model", radalign.load(args.model))]
    if args.baseline_random:
        name = args.random_model or (
            "demo-resnet18-minilm" if Path(args.model).exists() else args.model
        )
        models.append((f"random {name}", radalign.load(name, pretrained=False)))
    for _, m in models:
        m.eval()
    return models


def run_all(args, models: list[tuple[str, object]]) -> tuple[list[dict], dict]:
    """All rows, and per-dataset status (``ok`` or why it was skipped)."""
    shared = Path(args.shared)
    rows, status = [], {}
    for name in (NIH, COVID, IU):
        folder = shared / name
        if not (folder / "manifest.csv").is_file():
            reason = f"skipped: {folder / 'manifest.csv'} not found"
            print(f"{name}: {reason}", flush=True)
            status[name] = reason
            rows.append(make_row(name, "-", "-", note=reason))
            continue
        status[name] = "ok"
        base = iu_reports(folder, args.limit) if name == IU else None
        extra = iu_baselines(base) if name == IU and len(base) > TOP_K else None
        for tag, model in models:
            start = time.perf_counter()
            if name == NIH:
                rows += nih_rows(model, tag, folder, args)
            elif name == COVID:
                rows += covid_rows(model, tag, folder, args)
            else:
                rows += iu_rows(model, tag, base, extra, args)
            print(f"{name} [{tag}]: {time.perf_counter() - start:.1f} s", flush=True)
    return rows, status


def small_data_notes(rows: list[dict]) -> list[str]:
    """One plain sentence per dataset whose sample is too small for a strong result."""
    notes = []
    nih = [r for r in rows if r["dataset"] == NIH and r["ci_low"] is not None]
    if nih:
        width = max(r["ci_high"] - r["ci_low"] for r in nih)
        notes.append(
            f"NIH: the test split has only {nih[0]['n']} images, so an AUROC's 95% "
            f"interval is up to {width:.2f} wide; differences below that are noise."
        )
    cov = [r for r in rows if r["dataset"] == COVID and r["metric"].endswith("R@10") and r["n"]]
    if cov:
        r = cov[0]
        notes.append(
            f"covid_chestxray: only {r['n']} test image-note pairs ({r['note'].split(';')[0]}),"
            f" so Recall@10 has a wide spread (95% CI {r['ci_low']:.2f}-{r['ci_high']:.2f})"
            f" and chance alone gives {r['chance']:.2f}."
        )
    iu = [r for r in rows if r["dataset"] == IU and "abnormal" in r["metric"] and r["n"]]
    if iu:
        r = iu[0]
        notes.append(
            f"IU X-ray: 'normal' dominates; the {r['n']} abnormal queries rarely share "
            f"their exact heading set with anyone (chance {r['chance']:.3f}), so exact-set "
            "precision for them rests on very few possible hits."
        )
    return notes


def markdown(result: dict) -> str:
    """The table, headed by model, machine and date, then the small-data sentences."""

    def fmt(v) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        f"Real-data benchmark: model `{result['model']}`, {result['machine']}, {result['date']}.",
        "",
        "| dataset | model | metric | value | 95% CI | n | chance | baseline | note |",
        "|" + " --- |" * 9,
    ]
    for r in result["rows"]:
        ci = "–" if r["ci_low"] is None else f"{r['ci_low']:.3f}–{r['ci_high']:.3f}"
        cells = [
            r["dataset"],
            r["model"],
            r["metric"],
            fmt(r["value"]),
            ci,
            fmt(r["n"]),
            fmt(r["chance"]),
            fmt(r["baseline"]),
            r["note"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + result["notes"]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    models = _models(args)
    rows, status = run_all(args, models)
    result = {
        "benchmark": "real_data",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
        "model": args.model,
        "random_model": models[1][0] if len(models) > 1 else None,
        "limit": args.limit,
        "n_boot": args.n_boot,
        "datasets": status,
        "rows": rows,
        "notes": small_data_notes(rows),
    }
    save_result("real_data", result, markdown(result), Path(args.out), Path(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
