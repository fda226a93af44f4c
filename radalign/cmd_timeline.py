"""``radalign timeline``: longitudinal phantoms, and a temporal head over each patient's studies
(train it with its no-history baseline; predict per-study labels and change)."""

from __future__ import annotations

import argparse

from radalign import cli_options
from radalign.cmd_probe import add_inputs_option

EXAMPLES = """examples:
  radalign timeline synth --out runs/longitudinal --patients 150
  radalign timeline train --model runs/demo-all/pretrain/model --source runs/longitudinal \\
      --out runs/timeline
  radalign timeline predict --head runs/timeline --model runs/demo-all/pretrain/model \\
      --source runs/longitudinal --out runs/timeline/preds.csv
"""


ACTIONS = {
    "synth": (
        "write longitudinal phantom patients (manifest.csv + PNG scans)",
        "Longitudinal phantom patients (radalign.data.synth_longitudinal): 3-6 dated studies "
        "each; effusion, pneumothorax and edema appear, grow, resolve or stay, and the reports "
        "compare with the prior study. Patients are split 70/15/15.",
    ),
    "train": (
        "train the temporal head and score it against a no-history baseline",
        "Train on the source's train patients (early stopping on val), score on test: "
        "per-study label AUROC and change-detection AUROC (changed vs unchanged, by "
        "1 - p(unchanged)) with bootstrap 95% CIs, for the head and for the same head without "
        "history. Writes OUT/head.safetensors + OUT/config.json (with the model fingerprint), "
        "OUT/metrics.json and OUT/skipped.csv, atomically.",
    ),
    "predict": (
        "per-study labels and change with a trained timeline head",
        "Embed the source with the head's model (refused if the head was trained on another "
        "model's embeddings) and write one CSV row per study: id, patient_id, position, "
        "p:<Finding>, change:<Finding> and p_changed:<Finding>.",
    ),
}


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "timeline",
        help="temporal head over each patient's ordered studies: labels and change",
        description="Each study's scan and report are embedded with the model and fused; a "
        "patient's studies, ordered by date, feed a causal GRU that predicts each study's "
        "findings and, from the second study on, their change since the previous study (new, "
        "worsened, resolved, unchanged). Unreadable scans and reports without words are "
        "skipped and listed in skipped.csv.",
        examples=EXAMPLES,
    )
    tsub = p.add_subparsers(dest="timeline_command", metavar="ACTION", required=True)
    act = {}
    for name, (short, description) in ACTIONS.items():
        act[name] = cli_options.add_command(
            tsub, name, help=short, description=description, examples=EXAMPLES
        )
        if name != "synth":
            cli_options.add_model_options(act[name])
            act[name].add_argument(
                "--source", required=True, help="a source with patient ids and study dates"
            )
    s, t, r = act["synth"], act["train"], act["predict"]
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--patients", type=int, default=150)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="image side in pixels")
    s.set_defaults(run=_synth)
    add_inputs_option(t)
    t.add_argument("--classes", default=None, help="comma-separated findings (default: graded)")
    t.add_argument("--max-epochs", type=int, default=300)
    t.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output directory")
    t.set_defaults(run=_train)
    r.add_argument("--head", required=True, help="directory written by radalign timeline train")
    r.add_argument("--out", required=True, help="predictions CSV")
    r.set_defaults(run=_predict)


def _synth(args: argparse.Namespace) -> int:
    from radalign.data.synth_longitudinal import synthesize_longitudinal

    out = synthesize_longitudinal(args.out, args.patients, seed=args.seed, size=args.size)
    print(f"timeline synth: {args.patients} patients -> {out / 'manifest.csv'}")
    return 0


def _timelines(args: argparse.Namespace, model, device, inputs: str, tracked=None):
    from radalign.heads.timeline_run import source_timelines

    precision = cli_options.resolve_precision_option(args, device)
    kw = cli_options.encoder_kwargs(args, device, precision)
    return source_timelines(model, args.source, inputs=inputs, tracked=tracked, **kw)


def _train(args: argparse.Namespace) -> int:
    from radalign.heads.timeline_run import metrics_summary, train_timelines

    classes = args.classes.split(",") if args.classes else None
    model, device = cli_options.load_model_option(args)
    st = _timelines(args, model, device, args.inputs, classes)
    metrics = train_timelines(
        st, args.out, inputs=args.inputs, seed=args.seed, n_boot=args.n_boot,
        max_epochs=args.max_epochs,
    )  # fmt: skip
    print(f"timeline train: {metrics_summary(metrics)}; {st.skipped.summary()} -> {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from radalign.heads.timeline_run import load_timeline, predict_timelines

    model, device = cli_options.load_model_option(args)
    head = load_timeline(args.head, model.fingerprint())  # refuses another model's head first
    st = _timelines(args, model, device, head.config.get("inputs", "both"), head.config["columns"])
    out = predict_timelines(head, st, args.out)
    n = int(st.timelines.mask.sum())
    print(
        f"timeline predict: {n} studies of {len(st.timelines.patients)} patients; "
        f"{st.skipped.summary()} -> {out}"
    )
    return 0
