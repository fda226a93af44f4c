"""``radalign demo``: the whole product on synthetic phantoms, offline, on CPU, one command.

Stages (each prints one line; a stage whose output is already in ``--out`` is reused):
phantoms -> pretrain -> report index -> zero-shot on the test scans -> retrieval for the test
scans -> mismatch flags with planted swaps and laterality flips -> run report. ``demo.json`` in
``--out`` keeps every number and each stage's time.

Training uses ``phantoms/`` (seed 0: train and validation splits); every test number comes from
``phantoms-test/``, a fresh set drawn with another seed (:data:`TEST_SEED`), so no test scan,
report or patient was seen in training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from radalign.cli_options import add_command
from radalign.run_folder import RunFolder

TRAIN_SEED, TEST_SEED = 0, 1
EXAMPLES = """examples:
  radalign demo                          # into runs/demo-all
  radalign demo --out runs/d --steps 300 # longer pretraining
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "demo",
        help="phantoms -> pretrain -> index -> zero-shot -> retrieve -> flags, in one go",
        description=__doc__,
        examples=EXAMPLES,
    )
    p.add_argument("--out", default="runs/demo-all", help="folder for everything (reused)")
    p.add_argument(
        "--n", type=int, default=None, help="phantom studies to train on (default: the config's)"
    )
    p.add_argument("--n-test", type=int, default=300, help="fresh phantom studies to test on")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="pretraining steps (default: the config's max_steps)",
    )
    p.add_argument(
        "--config", default="demo", help="pretraining config (shipped: demo, demo-20min)"
    )
    p.add_argument("--workers", type=int, default=2, help="data loader workers")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run = RunFolder.demo(args.out)
    run.root.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    stages = [
        ("phantoms", _phantoms),
        ("pretrain", _pretrain),
        ("index", _index),
        ("zeroshot", _zeroshot),
        ("retrieve", _retrieve),
        ("flags", _flags),
        ("report", _report),
    ]
    total = time.perf_counter()
    state: dict = {}
    for name, stage in stages:
        start = time.perf_counter()
        line, numbers = stage(args, run, state)
        seconds = time.perf_counter() - start
        summary[name] = {**numbers, "seconds": round(seconds, 1)}
        print(f"[{name:>8}] {line} ({seconds:.0f} s)", flush=True)
    summary["total_seconds"] = round(time.perf_counter() - total, 1)
    from radalign.encoders.atomic import atomic_write

    with atomic_write(run.summary_path, mode="w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print(f"done in {summary['total_seconds']:.0f} s; everything is in {run.root} (demo.json)")
    return 0


def _phantoms(args, run: RunFolder, state: dict):
    from radalign.data.synth import synthesize
    from radalign.pretrain.config import load_train_config

    n = args.n if args.n is not None else load_train_config(args.config).data.phantoms_n
    sets = {
        "train": (run.phantoms_dir, n, TRAIN_SEED, (0.9, 0.1, 0.0)),
        "test": (run.phantoms_test_dir, args.n_test, TEST_SEED, (0.0, 0.0, 1.0)),
    }
    made = {}
    for name, (root, n, seed, fractions) in sets.items():
        if not (root / "jpg").is_dir():
            made[name] = synthesize(root, n=n, seed=seed, layouts=("jpg",),
                                    split_fractions=fractions, workers=max(args.workers, 1))  # fmt: skip
    if not made:
        return f"reusing {run.phantoms_dir} and {run.phantoms_test_dir}", {"reused": True}
    numbers = {f"{k}_studies": v.n_studies for k, v in made.items()}
    numbers.update({f"{k}_images": v.n_images for k, v in made.items()})
    line = "; ".join(
        f"{v.n_studies} {k} studies ({v.n_images} images, seed {sets[k][2]}) in {sets[k][0]}"
        for k, v in made.items()
    )
    return line, numbers


def _pretrain(args, run: RunFolder, state: dict):
    import radalign
    from radalign.pretrain.config import load_train_config
    from radalign.pretrain.trainer import frozen_text_cache, pretrain

    model_dir = run.model_dir
    overrides = [
        f"output_dir={run.train_dir}",
        f"data.phantoms_dir={run.phantoms_dir}",
        "data.phantoms_layout=jpg",
        f"data.num_workers={args.workers}",
    ] + ([f"max_steps={args.steps}"] if args.steps else [])
    config = load_train_config(args.config, overrides)
    cached_rows = None  # the frozen report tower's features from this process's training
    if (model_dir / "config.json").is_file():
        line, numbers = f"reusing {model_dir}", {"reused": True}
    else:
        result = pretrain(config, resume=run.checkpoints_dir.is_dir())
        cached_rows = result.text_cache.rows if result.text_cache else None
        losses = [r["train/loss"] for r in result.history if "train/loss" in r]
        val = [r for r in result.history if "val/i2t_R@10" in r]
        numbers = {"steps": result.steps}
        line = f"{result.steps} steps (random initialisation)"
        if losses:
            numbers.update(first_loss=losses[0], last_loss=losses[-1])
            line = f"{result.steps} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f}"
        if val:
            numbers["val_i2t_R@10"] = val[-1]["val/i2t_R@10"]
            line += f", val image->report R@10 {val[-1]['val/i2t_R@10']:.2f}"
    info = run.info()  # run.json: the precision training used, and why
    if info is not None:
        numbers["precision"] = info.precision_used
    state["model"] = radalign.load(model_dir).eval()
    # what training computed of the frozen report tower (or its frozen bottom) is still valid
    state["text_cache"] = frozen_text_cache(state["model"], config, rows=cached_rows)
    state["data"] = config.data
    state["loss"] = config.loss
    return line, numbers


def _index(args, run: RunFolder, state: dict):
    import dataclasses

    from radalign.pretrain.data import load_pairs
    from radalign.retrieval.build import build_index
    from radalign.retrieval.search import open_index

    data = state["data"]
    test_data = dataclasses.replace(data, phantoms_dir=str(run.phantoms_test_dir))
    state["test"] = load_pairs(test_data, split="test").records
    index_dir = run.index_dir
    if (index_dir / "index.json").is_file():
        state["index"] = open_index(state["model"], index_dir)
        return f"reusing {index_dir}", {"reused": True}
    index = build_index(
        state["model"],
        load_pairs(data, split=data.train_split).records,
        kind="reports",
        out=index_dir,
        text_cache=state["text_cache"],
    )
    state["index"] = index
    return f"{len(index)} training reports indexed in {index_dir}", {"reports": len(index)}


def _zeroshot(args, run: RunFolder, state: dict):
    from radalign.encoders.atomic import atomic_write
    from radalign.encoders.embed import embed_pairs
    from radalign.zeroshot.classifier import PromptClassifier
    from radalign.zeroshot.metrics import evaluate

    model, test = state["model"], state["test"]
    pairs = embed_pairs(model, test, text_cache=state["text_cache"])
    images = pairs.images
    state["image_emb"] = images
    # the test pairs whose scan and report both embedded, aligned row by row
    state["pair_ids"], state["pair_u"], state["pair_t"] = pairs.ids, pairs.image, pairs.text
    clf = PromptClassifier(model, "chexpert")
    state["classifier"] = clf
    probs = clf.predict(images.vectors, images.metadata["id"].tolist())
    truth = _phantom_truth(run.phantoms_test_dir, clf.classes)
    table = evaluate(probs, truth.reindex(probs.index), n_boot=200)
    with atomic_write(run.zeroshot_eval, mode="w", encoding="utf-8", newline="") as fh:
        table.to_csv(fh, index=False)
    preds = probs.copy()
    preds.insert(0, "image_path", images.metadata["path"].to_numpy())
    for c in truth.columns:
        preds[f"true:{c}"] = truth[c].reindex(probs.index).to_numpy()
    with atomic_write(run.zeroshot_preds, mode="w", encoding="utf-8", newline="") as fh:
        preds.to_csv(fh, index_label="id")
    macro = float(table.loc[table["class"] == "macro", "auroc"].iloc[0])
    per = table[table["class"] != "macro"].set_index("class")["auroc"]
    best = ", ".join(f"{c} {v:.2f}" for c, v in per.sort_values(ascending=False).head(3).items())
    no_finding = per.get("No Finding", float("nan"))
    return (
        f"zero-shot macro AUROC {macro:.3f} on {len(probs)} test scans (best: {best}; "
        f"No Finding {no_finding:.2f}); table in zeroshot-eval.csv",
        {"macro_auroc": macro, "auroc": {k: float(v) for k, v in per.items()}},
    )


def _phantom_truth(root: Path, classes: list[str], key: str = "dicom_id"):
    """The planted (true) labels of the phantoms, one row per image id (or per ``key``)."""
    import pandas as pd

    truth = pd.read_csv(root / "phantom-truth.csv.gz", dtype={"dicom_id": str, "study_id": str})
    return truth.set_index(key)[[c for c in classes if c in truth.columns]]


def _retrieve(args, run: RunFolder, state: dict):
    from radalign.encoders.atomic import atomic_write
    from radalign.retrieval.evaluate import recall_at_k

    index, images = state["index"], state["image_emb"]
    by_id = {r.id: r for r in state["test"]}
    res = index.search(images.vectors, min(5, len(index)))
    meta = index.metadata
    gallery, lines = [], []
    for i in range(min(6, len(images))):
        rec = by_id[images.metadata["id"].iloc[i]]
        hits = []
        for rank, (row, score) in enumerate(zip(res.indices[i], res.scores[i], strict=True), 1):
            hit = meta.iloc[int(row)]
            same = str(hit["report"]) == rec.report
            hits.append({"rank": rank, "score": float(score), "report": str(hit["report"]),
                         "study_id": str(hit["study_id"]), "matches_true_report": same})  # fmt: skip
        gallery.append({"id": rec.id, "image_path": str(rec.image_path), "true_report": rec.report,
                        "hits": hits})  # fmt: skip
        if i < 3:
            lines.append(f'{rec.id[:8]} -> "{hits[0]["report"][:60]}..."')
    with atomic_write(run.retrieval_json, mode="w", encoding="utf-8") as fh:
        json.dump(gallery, fh, indent=2)
    precision, chance = _label_match_precision(
        run, images.metadata["id"].tolist(), meta, res.indices
    )
    u = state["pair_u"]
    recall = recall_at_k(u, state["pair_t"])["query_to_gallery"]
    return (
        f"test image->report R@1 {recall['R@1']:.2f}, R@10 {recall['R@10']:.2f} "
        f"({len(u)} pairs); label-match P@5 {precision:.2f} (chance {chance:.2f}) over "
        f"{len(index)} indexed reports; "
        f"e.g. " + "; ".join(lines),
        {"i2t_recall": recall, "label_match_P@5": precision, "label_match_chance": chance},
    )


def _label_match_precision(
    run: RunFolder, query_ids: list[str], meta, hits: np.ndarray
) -> tuple[float, float]:
    """``(precision, chance)``: the share of each test scan's top retrieved training reports
    whose study has exactly the scan's planted findings (the same set of positive labels),
    averaged over scans; chance is the same share over all indexed reports."""
    from collections import Counter

    from radalign.encoders.labels import CHEXPERT_LABELS
    from radalign.retrieval.evaluate import label_match_precision_at_k

    def label_sets(root: Path, key: str) -> dict[str, frozenset]:
        truth = _phantom_truth(root, list(CHEXPERT_LABELS), key=key)
        truth = truth[~truth.index.duplicated()]
        return {i: frozenset(truth.columns[row == 1]) for i, row in zip(truth.index, truth.values)}

    query = label_sets(run.phantoms_test_dir, "dicom_id")
    studies = label_sets(run.phantoms_dir, "study_id")
    found = [studies.get(str(s)) for s in meta["study_id"]]
    retrieved = [[found[int(j)] for j in row] for row in hits]
    precision = label_match_precision_at_k([query[q] for q in query_ids], retrieved, hits.shape[1])
    counts = Counter(found)
    chance = np.mean([counts[query[q]] / len(found) for q in query_ids])
    return precision, float(chance)


def _flags(args, run: RunFolder, state: dict):
    from radalign.encoders.atomic import atomic_write
    from radalign.zeroshot.mismatch import MismatchScorer, evaluate_planted, flag_pairs

    model, test = state["model"], state["test"]
    by_id = {r.id: r for r in test}
    ids, u, t = state["pair_ids"], state["pair_u"], state["pair_t"]
    studies = [by_id[i].study_id for i in ids]
    scorer = MismatchScorer(state["index"])
    table, threshold = flag_pairs(scorer, state["classifier"], u, t, study_ids=studies)
    table.insert(0, "id", ids)
    table.insert(1, "image_path", [str(by_id[i].image_path) for i in ids])
    table.insert(2, "report", [by_id[i].report for i in ids])
    with atomic_write(run.flags_csv, mode="w", encoding="utf-8", newline="") as fh:
        table.sort_values("score", ascending=False).to_csv(fh, index=False)
    aurocs = evaluate_planted(
        model,
        scorer,
        u,
        [by_id[i].report for i in ids],
        [by_id[i].patient_id for i in ids],
        studies,
        text_cache=state["text_cache"],
    )
    return (
        f"{int(table['flagged'].sum())} of {len(table)} test pairs flagged at fpr 0.05; planted "
        f"swaps AUROC {aurocs['swap']:.3f}, laterality flips AUROC {aurocs.get('flip', float('nan')):.3f}",
        {"flagged": int(table["flagged"].sum()), "threshold": threshold, **aurocs},
    )


def _report(args, run: RunFolder, state: dict):
    from radalign.attention_maps import pointing_game_over
    from radalign.report import write_report

    loss = state["loss"]
    scans = [(r.id, str(r.image_path), r.report) for r in state["test"]]
    hits, total = pointing_game_over(
        state["model"], scans, run.phantoms_test_dir / "masks", tau1=loss.local_tau1,
        normalize=loss.local_normalize, limit=60,
    )  # fmt: skip
    game = hits / total if total else float("nan")
    page = write_report(RunFolder.open(run.root), model=state["model"])
    return (
        f"pointing game {game:.2f} ({hits}/{total} finding words); report {page}",
        {"pointing_game": game, "pointing_hits": hits, "pointing_words": total},
    )
