"""Planted-anomaly benchmark of ``radalign audit`` (issue 12, "Measured").

Phantoms (``radalign.data.synth.synthesize``) -> anomalies planted at known rates in the
dicom, jpg and manifest layouts (``radalign.data.synth_anomalies.plant_anomalies``) ->
``radalign.audit.run.run_audit`` per layout -> precision and recall per type against each
layout's ``truth.csv`` (``score_findings``: a planted anomaly is recalled when a finding of its
type names one of its ids; a finding of type T is correct when it names an id planted as T),
recall per subtype (what the detectors miss), and drift: the p-value reported for the planted
window, plus the false-alarm rate of drift findings over ``--repeats`` unshifted archives
(fresh phantoms, nothing planted; with ``--drift-mode site`` a random ``--drift`` share of their
patients moved to a second site, unshifted).

    python benchmarks/audit_planted.py --model /tmp/demo400/pretrain/model --repeats 20
    python benchmarks/audit_planted.py --n 120 --repeats 0     # quick, tiny random model
    python benchmarks/audit_planted.py --model DIR --repeats 0 --layouts jpg --seeds 0 1 2 3

Targets (issue 12): recall >= 0.9 at precision >= 0.9 for every type but drift; drift p < 0.01
for the planted shift; no drift finding on >= 95 % of unshifted repeats. Writes
``OUT/audit_planted.md`` and appends a JSON line to ``benchmarks/results/audit_planted.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import pandas as pd

_P = re.compile(r"(?:\bp(?:-value)?\s*[=<≈]|Holm-adjusted)\s*([0-9.]+(?:e-?\d+)?)", re.I)


def drift_p_value(findings: pd.DataFrame) -> float | None:
    """The smallest p-value the drift findings state (``p=...`` / ``p < ...`` in the
    explanation, or a ``p_value`` column), or None when there is no drift finding."""
    d = findings[findings["type"] == "drift"]
    if not len(d):
        return None
    if "p_value" in d.columns:
        return float(pd.to_numeric(d["p_value"], errors="coerce").min())
    ps = [float(m.group(1)) for e in d["explanation"].astype(str) for m in _P.finditer(e)]
    return min(ps) if ps else float("nan")


def _markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [
            f"{v:.2f}"
            if isinstance(v, float) and not math.isnan(v)
            else ("–" if isinstance(v, float) else str(v))
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _audit(source: Path, out: Path, args) -> pd.DataFrame:
    from radalign.audit.run import run_audit

    res = run_audit(
        source,
        model=args.model,
        out=out,
        device=args.device,
        progress=False,
        batch_size=args.batch_size,
    )
    return res.findings


def _seed_run(seed: int, out: Path, args) -> dict:
    """Phantoms and planted anomalies for ``seed`` under ``out``, audited per layout: per
    layout the scores, the subtype recall, the drift p-value, the findings and the seconds."""
    from radalign.data.synth import synthesize
    from radalign.data.synth_anomalies import (
        plant_anomalies,
        read_truth,
        recall_by_subtype,
        score_findings,
        uniform_rates,
    )

    synthesize(out / "src", n=args.n, seed=seed, size=args.size)
    planted = plant_anomalies(
        out / "src",
        out / "planted",
        seed=seed,
        rates=uniform_rates(args.rate, drift=args.drift),
        layouts=args.layouts,
        drift_mode=args.drift_mode,
    )
    print(f"seed {seed}: {planted.summary()}")
    runs = {}
    for lay in args.layouts:
        t1 = time.perf_counter()
        findings = _audit(out / "planted" / lay, out / "audit" / lay, args)
        secs = time.perf_counter() - t1
        truth = read_truth(out / "planted" / lay / "truth.csv")
        runs[lay] = {
            "scores": score_findings(findings, truth),
            "subtypes": recall_by_subtype(findings, truth),
            "drift_p": drift_p_value(findings),
            "findings": len(findings),
            "seconds": secs,
        }
    return runs


def split_sites(layout_dir: Path, frac: float, seed: int) -> int:
    """Move a random ``frac`` of the patients of an unshifted archive to site B (nothing else
    changes): the null for ``--drift-mode site``. Rewrites the layout's ``site`` column
    (``manifest.csv``, or the MIMIC metadata csv.gz); returns the patients moved."""
    import numpy as np

    layouts = (("manifest.csv", "patient_id"), ("mimic-cxr-2.0.0-metadata.csv.gz", "subject_id"))
    found = [(layout_dir / name, col) for name, col in layouts if (layout_dir / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{layout_dir}: no manifest.csv or metadata csv.gz to split")
    path, patient = found[0]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "site" not in df:
        raise ValueError(f"{path}: no site column to split")
    pats = df[patient].drop_duplicates().to_numpy()
    rng = np.random.default_rng(seed)
    moved = set(rng.choice(pats, size=max(1, round(frac * len(pats))), replace=False))
    df["site"] = np.where(df[patient].isin(moved), "B", "A")
    df.to_csv(path, index=False)
    return len(moved)


def seed_table(scores: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per type over seeds (``{seed: score_findings frame}``): precision and recall of each
    seed, their mean and minimum, and the pooled precision and recall (all seeds' planted
    anomalies and findings counted together)."""
    rows = []
    allf = pd.concat([f.assign(seed=s) for s, f in scores.items()], ignore_index=True)
    for typ, g in allf.groupby("type", sort=False):
        row: dict = {"type": typ}
        by = g.set_index("seed")
        for s in scores:
            r = by.loc[s] if s in by.index else None
            row[f"P s{s}"] = float(r["precision"]) if r is not None else float("nan")
            row[f"R s{s}"] = float(r["recall"]) if r is not None else float("nan")
        for m in ("precision", "recall"):
            v = pd.to_numeric(g[m], errors="coerce")
            row[f"mean {m[0].upper()}"] = float(v.mean())
            row[f"min {m[0].upper()}"] = float(v.min())
        planted, found = int(g["planted"].sum()), int(g["findings"].sum())
        row["planted"] = planted
        row["findings"] = found
        row["pooled P"] = g["correct"].sum() / found if found else float("nan")
        row["pooled R"] = g["recalled"].sum() / planted if planted else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="phantom studies")
    ap.add_argument("--size", type=int, default=128, help="image size (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds", type=int, nargs="+", help="several seeds: per-seed, mean, min and pooled P/R"
    )
    ap.add_argument("--rate", type=float, default=0.025, help="fraction of studies per type")
    ap.add_argument("--drift", type=float, default=0.2, help="fraction of studies drifted")
    ap.add_argument("--drift-mode", choices=("time", "site"), default="time")
    ap.add_argument("--layouts", nargs="+", default=["dicom", "jpg", "manifest"])
    ap.add_argument("--model", default="tiny", help="registry name or model directory")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="unshifted archives for false alarms")
    ap.add_argument("--repeat-layout", default="manifest")
    ap.add_argument("--out", type=Path, default=Path("runs/audit_planted"))
    args = ap.parse_args()

    from radalign.data.synth import synthesize
    from radalign.data.synth_anomalies import plant_anomalies, uniform_rates

    t0 = time.perf_counter()
    out = args.out
    seeds = args.seeds or [args.seed]
    report: list[str] = [
        f"# Planted-anomaly audit benchmark (n={args.n}, rate={args.rate}, "
        f"drift={args.drift} {args.drift_mode}, model={args.model}, seeds {seeds})",
        "",
    ]
    record: dict = {
        "n": args.n,
        "rate": args.rate,
        "drift": args.drift,
        "model": args.model,
        "drift_mode": args.drift_mode,
        "seeds": seeds,
        "layouts": {},
    }
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        root = out if len(seeds) == 1 else out / f"seed{seed}"
        per_seed[seed] = runs = _seed_run(seed, root, args)
        for lay, r in runs.items():
            report += [
                f"## seed {seed}, {lay} ({r['findings']} findings, audit {r['seconds']:.0f} s)",
                "",
                _markdown(r["scores"]),
                "",
                "Recall per planted subtype:",
                "",
                _markdown(r["subtypes"]),
                "",
                f"drift p-value of the planted window: {r['drift_p']}",
                "",
            ]
            print("\n".join(report[-10:]))
            entry = {
                "scores": r["scores"].to_dict(orient="records"),
                "subtypes": r["subtypes"].to_dict(orient="records"),
                "drift_p": r["drift_p"],
                "findings": r["findings"],
                "seconds": r["seconds"],
            }
            if len(seeds) == 1:
                record["layouts"][lay] = entry
            else:
                record["layouts"].setdefault(lay, {})[str(seed)] = entry
    if len(seeds) > 1:
        record["over_seeds"] = {}
        for lay in args.layouts:
            table = seed_table({s: per_seed[s][lay]["scores"] for s in seeds})
            ps = [per_seed[s][lay]["drift_p"] for s in seeds]
            report += [
                f"## {lay} over seeds {seeds}",
                "",
                _markdown(table),
                "",
                f"drift p-values of the planted windows: {ps}",
                "",
            ]
            print("\n".join(report[-6:]))
            record["over_seeds"][lay] = {
                "table": table.to_dict(orient="records"),
                "drift_p": ps,
            }

    alarms = 0
    t_null = time.perf_counter()
    for k in range(args.repeats):
        root = out / f"null{k}"
        synthesize(root / "src", n=args.n, seed=1000 + k, size=args.size)
        plant_anomalies(
            root / "src",
            root / "planted",
            seed=1000 + k,
            rates=uniform_rates(0.0, drift=0.0),
            layouts=(args.repeat_layout,),
        )
        if args.drift_mode == "site":  # two sites, neither shifted
            split_sites(root / "planted" / args.repeat_layout, args.drift, seed=1000 + k)
        findings = _audit(root / "planted" / args.repeat_layout, root / "audit", args)
        alarms += int((findings["type"] == "drift").any())
    null_secs = time.perf_counter() - t_null
    if args.repeats:
        line = (
            f"drift false alarms on unshifted archives: {alarms}/{args.repeats} "
            f"({alarms / args.repeats:.0%}; target <= 5 %; {null_secs:.0f} s, "
            f"{null_secs / args.repeats:.0f} s per repeat incl. synthesis)"
        )
        report += [line, ""]
        print(line)
    record |= {
        "false_alarms": alarms,
        "repeats": args.repeats,
        "repeat_seconds": null_secs,
        "seconds": time.perf_counter() - t0,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit_planted.md").write_text("\n".join(report) + "\n")
    results = Path(__file__).parent / "results" / "audit_planted.jsonl"
    with open(results, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    print(f"wrote {out / 'audit_planted.md'} and {results}")


if __name__ == "__main__":
    main()
