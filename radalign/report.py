"""``write_report``: one self-contained HTML page (and the same figures as PNG) for a run folder.

The run folder is the output of ``radalign demo`` (or a plain ``radalign pretrain`` run: only
``config.yaml``, ``metrics.jsonl`` and ``model/``). Each section is drawn from its own file; a
section whose file is missing says so instead. Images are embedded as base64 data URIs, CSS is
inline and nothing external is referenced, so the page can be mailed or archived as one file.
The page is rendered from ``report.html.j2`` by jinja2 with autoescape on: section functions
collect plain data (text, numbers, images) and the template escapes every value it prints.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from radalign import figures
from radalign.encoders.errors import InputError
from radalign.run_folder import PHANTOMS, PHANTOMS_TEST, RunFolder
from radalign.zeroshot import metrics

__all__ = ["write_report"]

log = logging.getLogger(__name__)

MAX_FLAGS = 20
MAX_WORDS_PER_SCAN = 6
PHANTOM_FOLDERS = (PHANTOMS_TEST, PHANTOMS)  # the demo's fresh test phantoms, its training ones

#: The figures drawn from ``metrics.jsonl``: anchor, title, drawing function, what it needs,
#: PNG name, alt text.
CURVES = (
    ("losses", "Loss curves", figures.loss_curves, "train/ losses", "loss-curves",
     "training (solid) and validation (dashed) loss per component over steps"),
    ("recall", "Validation recall", figures.recall_curves, "val/ recall rows", "val-recall",
     "validation image-to-report and report-to-image recall at k over steps"),
)  # fmt: skip

TEMPLATE = "report.html.j2"  # beside this module; the page and its inline CSS


@dataclass
class _Page:
    """The sections and images of the page being built.

    Each section is ``{"anchor", "title", "kind", "data"}``: ``kind`` names the template macro
    that draws ``data``.
    """

    run: RunFolder
    sections: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    thumbs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.run.root

    def img(self, name: str, png: bytes, alt: str, css: str = "") -> dict[str, str]:
        """Store ``png`` as ``name`` and return the template's image (a data URI, alt text)."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        base, n = stem, 1
        while f"{stem}.png" in self.images:
            n += 1
            stem = f"{base}-{n}"
        self.images[f"{stem}.png"] = png
        data = base64.b64encode(png).decode("ascii")
        return {"src": f"data:image/png;base64,{data}", "alt": alt, "css": css}

    def add(self, anchor: str, title: str, kind: str, data: dict[str, Any]) -> None:
        self.sections.append({"anchor": anchor, "title": title, "kind": kind, "data": data})

    def absent(self, anchor: str, title: str, what: str) -> None:
        self.missing.append(f"{title}: {what}")
        self.add(anchor, title, "absent", {"what": what})


def write_report(
    run_dir: str | os.PathLike | RunFolder,
    out: str | os.PathLike | None = None,
    model=None,
    n_heatmaps: int = 4,
) -> Path:
    """Write ``index.html`` and its PNG figures to ``out`` (default ``RUN_DIR/report``).

    ``run_dir`` is a run folder's path (checked by :meth:`RunFolder.open`) or an opened
    :class:`RunFolder`. ``model`` (a loaded :class:`RadAlignModel`) draws the attention
    heatmaps; by default it is loaded from the run's ``model/`` folder. The folder is written
    atomically; returns the path of ``index.html``.
    """
    from radalign.encoders.atomic import atomic_dir

    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder.open(run_dir)
    out = Path(out) if out is not None else run.report_dir
    page = _Page(run)
    rows = run.metrics()
    config_text = run.config_text()

    _summary_section(page)
    _config_section(page, config_text)
    for curve in CURVES:
        _curve_section(page, rows, *curve)
    _roc_section(page)
    _eval_section(page)
    _retrieval_section(page)
    _flags_section(page)
    _attention_section(page, config_text, model, n_heatmaps)

    document = _render(page)
    with atomic_dir(out) as tmp:
        for name, png in page.images.items():
            (tmp / name).write_bytes(png)
        (tmp / "index.html").write_text(document, encoding="utf-8")
    return out / "index.html"


# ---------------------------------------------------------------------------------- reading
def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _resolve_image(path: str, run_dir: Path) -> Path | None:
    """The scan at ``path``, or the same file under ``RUN_DIR/phantoms`` (or ``phantoms-test``)
    if the run moved."""
    p = Path(path)
    if p.is_file():
        return p
    parts = p.parts
    for folder in PHANTOM_FOLDERS:
        if folder in parts:
            at = len(parts) - 1 - parts[::-1].index(folder)
            moved = run_dir.joinpath(folder, *parts[at + 1 :])
            if moved.is_file():
                return moved
    if not p.is_absolute() and (run_dir / p).is_file():
        return run_dir / p
    return None


def _load_scan(path: str, run_dir: Path) -> np.ndarray | None:
    from radalign.encoders.errors import InputError
    from radalign.encoders.imageio import load_image

    found = _resolve_image(path, run_dir)
    if found is None:
        return None
    try:
        return load_image(found)
    except InputError as exc:
        log.warning("report: cannot read %s: %s", found, exc)
        return None


def _thumb(page: _Page, scan_id: str, path: str) -> dict[str, str]:
    cache = page.thumbs
    if scan_id in cache:
        return cache[scan_id]
    image = _load_scan(path, page.run_dir)
    if image is None:
        tag = {"missing": Path(path).name}
    else:
        tag = page.img(
            f"thumb-{scan_id[:17]}", figures.thumbnail(image), f"scan {scan_id}", "thumb"
        )
    cache[scan_id] = tag
    return tag


# ---------------------------------------------------------------------------------- sections
def _summary_section(page: _Page) -> None:
    try:
        summary = page.run.summary()
    except InputError:
        page.absent("summary", "Demo summary", f"{page.run.summary_path.name} is not valid JSON")
        return
    if summary is None:
        return  # not a demo run: nothing to summarise, and not worth a "missing" note
    rows = []
    for stage, numbers in summary.items():
        if not isinstance(numbers, dict):
            continue
        flat = {k: v for k, v in numbers.items() if k != "seconds" and not isinstance(v, dict)}
        desc = ", ".join(f"{k} {_fmt(v)}" for k, v in flat.items())
        rows.append((stage, desc, numbers.get("seconds")))
    page.add(
        "summary", "Demo summary", "summary", {"rows": rows, "total": summary.get("total_seconds")}
    )


def _config_section(page: _Page, text: str | None) -> None:
    path = page.run.config_path
    if text is None:
        page.absent("config", "Resolved config", f"no {path.name} in the run folder")
        return
    page.add("config", "Resolved config", "config", {"path": str(path), "text": text})


def _curve_section(
    page: _Page, rows: list[dict], anchor: str, title: str, draw, what: str, name: str, alt: str
) -> None:
    """A figure of ``metrics.jsonl``'s ``rows`` drawn by ``draw`` (``None``: nothing to draw)."""
    png = draw(rows) if rows else None
    if png is None:
        page.absent(anchor, title, f"no {what} in {page.run.metrics_path.name}")
        return
    page.add(anchor, title, "image", {"img": page.img(name, png, alt)})


def _rows(page: _Page, path: Path, anchor: str, title: str) -> list[dict[str, str]] | None:
    """The rows of the run's CSV file ``path``; ``None``, and the section marked absent, when
    it is missing, unreadable or empty."""
    rows = RunFolder.table(path)
    if not rows:
        page.absent(anchor, title, f"no {path.name} in the run folder")
        return None
    return rows


def _roc_section(page: _Page) -> None:
    preds = _rows(page, page.run.zeroshot_preds, "roc", "ROC curves")
    if preds is None:
        return
    table = {r.get("class", ""): r for r in (RunFolder.table(page.run.zeroshot_eval) or [])}
    classes = [c[len("true:") :] for c in preds[0] if c.startswith("true:") and c[5:] in preds[0]]
    curves, labels, rows = {}, {}, []
    for name in classes:
        y = np.array([_float(r[f"true:{name}"]) for r in preds])
        s = np.array([_float(r[name]) for r in preds])
        ok = np.isfinite(y) & np.isfinite(s)
        y, s = y[ok].astype(int), s[ok]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            rows.append((name, n_pos, n_neg, float("nan"), "", "only one label present"))
            continue
        auroc = metrics.auroc(y, s)
        ev = table.get(name, {})
        lo, hi = _float(ev.get("ci_low")), _float(ev.get("ci_high"))
        ci = f"[{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        curves[name] = figures.roc_points(y, s)
        labels[name] = f"{name}: AUROC {auroc:.2f} {ci}".strip()
        rows.append((name, n_pos, n_neg, auroc, ci, ""))
    png = figures.roc_curves(curves, labels)
    img = None
    if png is not None:
        alt = "ROC curves of the zero-shot classifier, one per finding, AUROC and 95% CI in legend"
        img = page.img("roc", png, alt)
    page.add("roc", "ROC curves (zero-shot)", "roc", {"img": img, "rows": rows})


def _eval_section(page: _Page) -> None:
    rows = _rows(page, page.run.zeroshot_eval, "evaluation", "Zero-shot evaluation")
    if rows is not None:
        page.add("evaluation", "Zero-shot evaluation", "table", _table(rows))


def _retrieval_section(page: _Page) -> None:
    gallery = page.run.gallery()
    if not gallery:
        name = page.run.retrieval_json.name
        page.absent("retrieval", "Retrieval gallery", f"no usable {name} in the run folder")
        return
    items = []
    for item in gallery:
        scan_id = str(item.get("id", ""))
        hits = [
            {
                "true": bool(hit.get("matches_true_report")),
                "rank": hit.get("rank", ""),
                "score": hit.get("score"),
                "report": hit.get("report", ""),
            }
            for hit in item.get("hits", [])
        ]
        items.append(
            {
                "id": scan_id,
                "thumb": _thumb(page, scan_id, str(item.get("image_path", ""))),
                "true_report": item.get("true_report", ""),
                "hits": hits,
                "any_true": any(h["true"] for h in hits),
            }
        )
    page.add("retrieval", "Retrieval gallery", "retrieval", {"cards": items})


def _flags_section(page: _Page) -> None:
    rows = _rows(page, page.run.flags_csv, "flags", "Flagged pairs")
    if rows is None:
        return
    rows = sorted(rows, key=lambda r: -_nan_low(_float(r.get("score"))))[:MAX_FLAGS]
    shown = [
        {
            "flagged": str(r.get("flagged", "")).lower() == "true",
            "thumb": _thumb(page, str(r.get("id", "")), str(r.get("image_path", ""))),
            "id": str(r.get("id", ""))[:17],
            "score": r.get("score"),
            "similarity": r.get("similarity"),
            "neighbour_mean": r.get("neighbour_mean"),
            "rank": r.get("rank", ""),
            "explanation": r.get("explanation", ""),
            "report": r.get("report", ""),
        }
        for r in rows
    ]
    n_flagged = sum(r["flagged"] for r in shown)
    page.add("flags", "Flagged pairs", "flags", {"rows": shown, "n_flagged": n_flagged})


def _scan_candidates(run: RunFolder) -> list[tuple[str, str, str]]:
    """(id, image path, report) of test scans from retrieval.json and flags.csv, deduplicated."""
    seen: dict[str, tuple[str, str, str]] = {}
    for item in run.gallery() or []:
        if item.get("id") and item.get("true_report"):
            seen.setdefault(
                str(item["id"]), (str(item["id"]), item["image_path"], item["true_report"])
            )
    for r in RunFolder.table(run.flags_csv) or []:
        if r.get("id") and r.get("report"):
            seen.setdefault(r["id"], (r["id"], r.get("image_path", ""), r["report"]))
    return list(seen.values())


def _dataset_candidates(config_path: Path) -> tuple[list[tuple[str, str, str]], list[Path]]:
    """Test (else validation) pairs of the run's dataset, and its phantom mask folder.

    Used for a plain ``radalign pretrain`` run, which lists no test scans of its own. Phantoms
    are never generated here: a phantom dataset that is not on disk gives no candidates.
    """
    from radalign.pretrain.config import load_train_config
    from radalign.pretrain.data import load_pairs

    data = load_train_config(config_path).data
    masks = []
    if data.source == "phantoms":
        base = Path(data.phantoms_dir)
        if not (base / data.phantoms_layout).is_dir():
            return [], []
        masks = [base / "masks"]
    try:
        records = load_pairs(data, split="test").records
    except ValueError:  # no test split: the validation pairs
        records = load_pairs(data, split=data.val_split).records
    found = [(r.id, str(r.image_path), r.report) for r in records if r.image_path and r.report]
    return found, masks


def _load_masks(masks_dirs: list[Path], scan_id: str) -> dict[str, np.ndarray]:
    from radalign.attention_maps import load_masks

    found = [d / f"{scan_id}.npz" for d in masks_dirs if (d / f"{scan_id}.npz").is_file()]
    if not found:
        return {}
    path = found[0]
    try:
        return load_masks(path)
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read masks %s: %s", path, exc)
        return {}


def _attention_section(page: _Page, config_text: str | None, model, n_heatmaps: int) -> None:
    from radalign.attention_maps import finding_label, pointing_game, to_image, word_attention

    title = "Word–region attention"
    if n_heatmaps <= 0:
        page.absent("attention", title, "heatmaps turned off (--heatmaps 0)")
        return
    run, run_dir = page.run, page.run_dir
    if model is None:
        from radalign.encoders.checkpoint import is_pretrained_dir

        if not is_pretrained_dir(run.model_dir):
            page.absent("attention", title, f"no saved model in {run.model_dir}")
            return
    candidates = _scan_candidates(run)
    masks_dirs = [run_dir / folder / "masks" for folder in PHANTOM_FOLDERS]
    from_dataset = False
    if not candidates and config_text is not None:
        try:
            candidates, masks_dirs = _dataset_candidates(run.config_path)
            from_dataset = True
        except Exception as exc:  # the dataset may be gone or moved; the report goes on
            log.warning("report: cannot list the run's dataset: %s", exc)
    if not candidates:
        page.absent(
            "attention", title, "no test scans with reports (retrieval.json, flags.csv, dataset)"
        )
        return
    if model is None:
        import radalign

        model = radalign.load(run.model_dir).eval()
    tau1, normalize = _local_params(config_text)

    def priority(c: tuple[str, str, str]) -> int:
        masks = _load_masks(masks_dirs, c[0])
        labels = {finding_label(w) for w in re.findall(r"[A-Za-z]+", c[2])}
        return -(2 * len(labels & set(masks)) + bool(masks) + bool(labels - {None}))

    ordered = sorted(candidates[:500], key=priority)
    scans: list[dict[str, Any]] = []
    hits = total = 0
    for scan_id, path, report in ordered:
        if len(scans) >= n_heatmaps:
            break
        found = _resolve_image(path, run_dir)
        if found is None:
            continue
        try:
            image, words, maps = word_attention(
                model, found, report, tau1=tau1, normalize=normalize
            )
        except Exception as exc:  # one unreadable scan must not sink the report
            log.warning("report: attention for %s failed: %s", scan_id, exc)
            continue
        masks = _load_masks(masks_dirs, scan_id)
        picked, seen = [], set()
        for k, word in enumerate(words):
            label = finding_label(word)
            if label and word.lower() not in seen and len(picked) < MAX_WORDS_PER_SCAN:
                seen.add(word.lower())
                picked.append((k, word, label))
        if not picked:
            continue
        h, s = pointing_game(maps, words, masks)
        hits, total = hits + h, total + s
        panels = []
        for k, word, label in picked:
            mask = masks.get(label)
            if mask is not None and mask.shape != image.shape:
                mask = _resize_mask(mask, image.shape)
            note = "not planted"
            if mask is not None:
                inside, _ = pointing_game(maps[k : k + 1], [word], {label: masks[label]})
                note = "planted; peak " + ("inside" if inside else "outside")
            panels.append((f'"{word}" → {label}\n({note})', to_image(maps[k], image.shape), mask))
        png = figures.attention_figure(image, panels, title=scan_id)
        alt = f"attention maps of the words {', '.join(w for _, w, _ in picked)} on scan {scan_id}"
        scans.append(
            {
                "id": scan_id,
                "report": report,
                "words": [w for _, w, _ in picked],
                "hits": h,
                "total": s,
                "img": page.img(f"attention-{len(scans) + 1}", png, alt),
            }
        )
    if not scans:
        page.absent("attention", title, "no readable test scan whose report names a finding")
        return
    data = {
        "from_dataset": from_dataset,
        "tau1": f"{tau1:g}",
        "scans": scans,
        "hits": hits,
        "total": total,
        "share": f"{hits / total:.0%}" if total else "",
    }
    page.add("attention", title, "attention", data)


def _local_params(config_text: str | None) -> tuple[float, bool]:
    """``loss.local_tau1`` and ``loss.local_normalize`` of the run (defaults 4.0, False)."""
    import yaml

    try:
        loss = (yaml.safe_load(config_text or "") or {}).get("loss") or {}
        return float(loss.get("local_tau1", 4.0)), bool(loss.get("local_normalize", False))
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return 4.0, False


def _resize_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


# ---------------------------------------------------------------------------------- HTML
def _nan_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _fmt(value, digits: int = 3) -> str:
    """A number for a table cell: integers as is, floats to ``digits`` places, NaN as a dash.

    Plain text (not escaped: the template escapes what it prints).
    """
    if value is None:
        return ""
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return text
        x = _float(text)
        if math.isnan(x) and text.lower() != "nan":
            return value
    else:
        x = _float(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _table(rows: list[dict[str, str]]) -> dict[str, Any]:
    """A CSV's rows for the template's ``table``: per cell (numeric?, value)."""
    cols = list(rows[0])
    cells = []
    for r in rows:
        row = []
        for c in cols:
            v = r.get(c, "")
            row.append((math.isfinite(_float(v)) or str(v).lower() == "nan", v))
        cells.append(row)
    return {"cols": cols, "rows": cells}


@cache
def _template():
    """The page template, loaded once; autoescape on for every value it prints."""
    from importlib.resources import files

    import jinja2

    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    return env.from_string(files("radalign").joinpath(TEMPLATE).read_text(encoding="utf-8"))


def _render(page: _Page) -> str:
    document = _template().render(
        run_name=page.run_dir.name,
        run_dir=str(page.run_dir),
        sections=page.sections,
        missing=page.missing,
    )
    return document.lstrip()  # the macro definitions above <!DOCTYPE html> leave blank lines
