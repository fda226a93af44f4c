"""Heads on frozen embeddings (issue 13, "Measured"): image-only vs report-only vs early vs late
fusion vs a random-tower baseline, the linear probe as reference; modality-gap alignment; the
temporal head's change detection against its no-history twin.

Datasets: phantoms (``radalign.data.synth.synthesize``, jpg layout), the NIH CXR14 subset
(image-only: no reports) and covid_chestxray (reports; COVID-19 vs other, re-split 60/20/20
by patient as its official test split holds 3 negatives) from ../shared/data when present,
and longitudinal phantoms (``radalign.data.synth_longitudinal``) for the timeline.

    python benchmarks/heads_quality.py                          # tiny random model
    python benchmarks/heads_quality.py --model runs/demo-all/pretrain/model

The random-tower baseline is the same architecture with random weights in both towers
(``radalign.load(<the model's config name>, pretrained=False)``), seed 0. Test AUROC is the
macro mean over classes; "CI" is the mean of the per-class bootstrap 95 % intervals (1000
resamples). Prints markdown and appends a JSON line to ``benchmarks/results/heads_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "heads_quality.jsonl"
NIH_CLASSES = ["Pneumonia", "Infiltration", "Atelectasis", "Effusion", "Edema"]


def embed_records(model, records, resplit: bool = False):
    from radalign.heads.source_embed import embed_records as embed

    records = list(records)
    has_text = any((r.report or "").strip() for r in records)
    ids, vecs, _ = embed(model, records, "both" if has_text else "image", batch_size=64,
                         precision="fp32")  # fmt: skip
    image, text = vecs[0], (vecs[1] if has_text else None)
    by_id = {str(r.id): r for r in records}
    split = np.array([by_id[i].split or "train" for i in ids])
    if resplit:  # patient-level 60/20/20 (the official test split is too small)
        from radalign.data.splits import assign_splits

        pids = [str(by_id[i].patient_id or i) for i in ids]
        by_pid = assign_splits(pids, (0.6, 0.2, 0.2))
        split = np.array([by_pid[p] for p in pids])
    labels = pd.DataFrame([{k: float(v) for k, v in by_id[i].labels.items()} for i in ids])
    return ids, image, text, labels.fillna(0.0).replace(-1.0, 0.0), split


def pick_classes(labels: pd.DataFrame, split: np.ndarray, wanted=None, min_pos: int = 5):
    cols = wanted or list(labels.columns)
    ok = []
    for c in cols:
        if c not in labels.columns:
            continue
        if all(min_pos <= labels[c][split == s].sum() <= (split == s).sum() - min_pos
               for s in ("train", "test")) and labels[c][split == "val"].nunique() == 2:  # fmt: skip
            ok.append(c)
    return ok


def run_heads(image, text, labels, split, classes, tag, rows):
    from radalign.heads.alignment import fit_aligner
    from radalign.heads.probe import train_and_score

    y = labels[classes].to_numpy(np.float32)
    configs = [("linear probe (image)", "linear", [image])]
    configs.append(("image-only (early)", "early", [image]))
    if text is not None:
        tr = split == "train"
        al = fit_aligner(image[tr], text[tr], "procrustes")
        aligned = [al.image(image).astype(np.float32), al.text(text).astype(np.float32)]
        configs += [
            ("report-only (early)", "early", [text]),
            ("early fusion", "early", [image, text]),
            ("late fusion", "late", [image, text]),
            ("early fusion + procrustes", "early", aligned),
            ("linear probe (image+report)", "linear", [image, text]),
        ]
    for name, head, xs in configs:
        _, m = train_and_score(head, xs, y, split, task="multilabel", columns=classes)
        ci = np.nanmean([[v["ci_low"], v["ci_high"]] for v in m["per_class"].values()], 0)
        rows.append({"data": tag, "head": name, "auroc": m["auroc_macro"], "ci": ci.tolist(),
                     "f1": m["f1_macro"], "train_s": m["train_seconds"], "n_test": m["n_test"]})  # fmt: skip
        print(f"  {tag:28s} {name:30s} AUROC {m['auroc_macro']:.3f}", flush=True)


def alignment_rows(image, text, split, tag):
    from radalign.heads.alignment import fit_aligner, modality_gap, recall_at_k

    tr, te = split == "train", split == "test"
    out = []
    for method in ("none", "centre", "procrustes"):
        al = fit_aligner(image[tr], text[tr], method)
        a, b = al.image(image[te]), al.text(text[te])
        out.append({"data": tag, "method": method, "gap": modality_gap(a, b), **recall_at_k(a, b),
                    "n": int(te.sum())})  # fmt: skip
    return out


def timeline_rows(model, tmp: Path, n_patients: int, tag: str):
    from radalign.data.synth_longitudinal import synthesize_longitudinal
    from radalign.heads.timeline import evaluate_timeline, train_timeline
    from radalign.heads.timeline_run import source_timelines

    root = tmp / "longitudinal"
    if not (root / "manifest.csv").is_file():
        synthesize_longitudinal(root, n_patients, seed=11, size=64)
    out = []
    for inputs, name in (("both", "image+report"), ("image", "image")):
        tl = source_timelines(model, root, inputs=inputs, batch_size=64, precision="fp32").timelines
        for history in (True, False):
            fit = train_timeline(tl.data("train"), tl.data("val"), history=history)
            m = evaluate_timeline(fit, tl.data("test"), n_boot=1000)
            out.append({"data": f"{tag} ({name})", "history": history, **m})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, default=400, help="phantom studies")
    ap.add_argument("--patients", type=int, default=150, help="longitudinal phantom patients")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--no-shared", action="store_true", help="skip the ../shared/data sets")
    args = ap.parse_args()
    from radalign.data.sources import open_source
    from radalign.data.synth import synthesize

    import radalign

    torch.manual_seed(0)
    t0 = time.perf_counter()
    tmp = Path(args.work or tempfile.mkdtemp(prefix="heads-quality-"))
    if not (tmp / "ph" / "jpg").is_dir():
        synthesize(
            tmp / "ph", n=args.n, seed=21, size=96, layouts=["jpg"], split_fractions=(0.6, 0.2, 0.2)
        )
    sources = [("phantoms", tmp / "ph" / "jpg", None, {"one_image_per_study": True})]
    if not args.no_shared and SHARED.is_dir():
        sources += [
            (
                "nih_cxr14_subset",
                SHARED / "nih_cxr14_subset",
                NIH_CLASSES,
                {"require_report": False},
            ),
            (
                "covid_chestxray",
                SHARED / "covid_chestxray",
                ["COVID-19"],
                {"require_report": False},
            ),
        ]
    trained = radalign.load(args.model).eval()
    # a saved directory loads its trained weights whatever `pretrained` says: build its
    # registered architecture (config name) with random weights instead
    random_tower = radalign.load(trained.config.name, pretrained=False).eval()
    towers = [("", trained), (" [random tower]", random_tower)]
    if random_tower.fingerprint() == trained.fingerprint():
        print(f"{args.model} has random weights already: it is its own random-tower baseline")
        towers = towers[:1]
    rows, align, timeline = [], [], []
    for name, root, wanted, kw in sources:
        records = list(open_source(root, **kw))
        for which, model in towers:
            ids, image, text, labels, split = embed_records(
                model, records, name.startswith("covid")
            )
            classes = pick_classes(labels, split, wanted)
            if not classes:
                print(f"  {name}: no class with enough positives per split; skipped")
                continue
            run_heads(image, text, labels, split, classes, name + which, rows)
            if text is not None:
                align += alignment_rows(image, text, split, name + which)
    for which, model in towers:
        timeline += timeline_rows(model, tmp, args.patients, "longitudinal phantoms" + which)
    print(f"\nmodel: {args.model}; {time.perf_counter() - t0:.0f} s\n")
    print("| data | head | test AUROC (macro) | mean per-class 95% CI | F1 | n test |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['data']} | {r['head']} | {r['auroc']:.3f} | {r['ci'][0]:.3f}–{r['ci'][1]:.3f} "
              f"| {r['f1']:.3f} | {r['n_test']} |")  # fmt: skip
    print(
        "\n| data | alignment | modality gap | R@1 | R@10 | n |\n| --- | --- | --- | --- | --- | --- |"
    )
    for r in align:
        print(
            f"| {r['data']} | {r['method']} | {r['gap']:.3f} | {r['R@1']:.3f} | {r['R@10']:.3f} | {r['n']} |"
        )
    print("\n| data | head | change AUROC | 95% CI | per-study label AUROC | transitions |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in timeline:
        head = "GRU over history" if r["history"] else "no history"
        print(f"| {r['data']} | {head} | {r['change_auroc']:.3f} | {r['change_ci'][0]:.3f}–"
              f"{r['change_ci'][1]:.3f} | {r['label_auroc_macro']:.3f} | {r['n_transitions']} |")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps({"model": args.model, "n": args.n, "patients": args.patients,
                             "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "heads": rows, "alignment": align, "timeline": timeline},
                            default=float) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
