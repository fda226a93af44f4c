"""Read paired (image, report) data from the layouts radalign knows, behind one call.

:func:`open_source` detects the layout of a path and returns a :class:`PairSet`:

``mimic-dicom``  MIMIC-CXR v2.0.0: ``ROOT/files/p10/p10000032/s50414267/<dicom_id>.dcm`` and the
                 report ``ROOT/files/p10/p10000032/s50414267.txt`` (or ``mimic-cxr-reports.zip``).
                 Images come from ``cxr-record-list.csv.gz`` when present, else from a walk of
                 ``files/``. Views come from ``mimic-cxr-2.0.0-metadata.csv.gz`` when given
                 (``metadata=``) or present in ROOT, else from each file's ``ViewPosition``
                 (header only, no pixels; slow for the full set, so pass the metadata file).
``mimic-jpg``    MIMIC-CXR-JPG v2.0.0/2.1.0: ``ROOT/files/.../<dicom_id>.jpg`` with
                 ``mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz`` in ROOT. Reports from
                 the ``.txt`` files under ``ROOT/files`` when present, else under ``reports_root=``
                 (the MIMIC-CXR DICOM release, its ``files/`` tree or ``mimic-cxr-reports.zip``).
``iu-xray``      IU X-ray / OpenI: ``ROOT/ecgen-radiology/*.xml`` and ``ROOT/images/<image id>.png``
                 (``images_dir=``, ``image_suffix=``); one record per image, labels = MeSH major
                 headings (the part before ``/``) as 1.0, patient = the report uId (``CXR1``).
``manifest``     a CSV or Parquet file (or a folder holding ``manifest.csv``/``.parquet``) with
                 ``image_path`` (relative to the file's folder, or absolute) and/or ``report``, and
                 optionally ``id``, ``patient_id``, ``study_id``, ``study_date``, ``view``,
                 ``split``, ``labels`` (pipe-separated names -> 1.0), ``findings``/``impression``
                 and numeric label columns. A manifest whose reports are all blank is the
                 ``labels-only`` layout (see ``label_text``).

Filtering happens in this order, each step counted: duplicate ids (bad input, first kept) ->
``split`` -> ``views`` -> missing image files -> ``one_image_per_study`` -> reports (missing,
empty, no usable section). Rows left out by an option are counted in ``PairSet.filtered``; bad
input goes to ``PairSet.skipped`` (a :class:`SkipLog`) with its reason. A single bad row never
raises; a path that is no known layout raises :class:`InputError` ``"unrecognised layout"`` at
once.

Commands open a source with :func:`open_records`: the same, with their ``--split`` and
``--views`` values read in one place (``all`` keeps everything) and an error when no record is
left.

Splits: the official MIMIC split file when there is one (``validate`` -> ``val``), a manifest's
``split`` column, else :func:`radalign.data.splits.assign_splits` by patient (falling back to
study id, then record id), patient-consistently with any splits already given.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from radalign.data.records import (
    PairRecord,
    PairSet,
    normalize_split,
    normalize_view,
    split_option,
)
from radalign.data.sections import (
    SECTION_CHOICES,
    clean_text,
    select_sections,
    split_sections,
)
from radalign.data.splits import DEFAULT_FRACTIONS, assign_splits, split_key
from radalign.encoders.errors import InputError, SkipLog
from radalign.encoders.labels import CHEXPERT_LABELS

__all__ = [
    "CHEXPERT_LABELS",
    "LAYOUTS",
    "NIH_LABELS",
    "detect_layout",
    "label_sentence",
    "open_records",
    "open_source",
    "views_option",
]

LAYOUTS: tuple[str, ...] = ("mimic-dicom", "mimic-jpg", "iu-xray", "manifest", "shards")
_LAYOUT_ALIASES = {
    "auto": "auto",
    "mimic-dicom": "mimic-dicom",
    "mimic-cxr": "mimic-dicom",
    "dicom": "mimic-dicom",
    "mimic-jpg": "mimic-jpg",
    "mimic-cxr-jpg": "mimic-jpg",
    "jpg": "mimic-jpg",
    "iu-xray": "iu-xray",
    "iu": "iu-xray",
    "openi": "iu-xray",
    "manifest": "manifest",
    "csv": "manifest",
    "parquet": "manifest",
    "labels-only": "manifest",
    "shards": "shards",
    "prepared": "shards",
}
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    "No Finding",
)
_LABEL_KEYS = {re.sub(r"[\s_]+", " ", n).lower() for n in CHEXPERT_LABELS + NIH_LABELS}

_MANIFEST_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_MANIFEST_NAMES = ("manifest.csv", "manifest.parquet", "manifest.csv.gz")
_PGROUP = re.compile(r"p\d\d")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_JPG_SUFFIXES = (".jpg", ".jpeg")
_UNRECOGNISED = (
    "expected a MIMIC-CXR root (files/p10..p19/pNNNNNNNN/sNNNNNNNN/ with .dcm or .jpg images), "
    "an IU X-ray root (ecgen-radiology/*.xml), or a .csv/.parquet manifest "
    "(or a folder holding manifest.csv)"
)
_MIMIC_KW = frozenset({"metadata", "split_file", "labels_file", "labeler", "reports_root"})
_IU_KW = frozenset({"images_dir", "image_suffix"})
_MANIFEST_KW = frozenset({"label_columns"})
_COLUMNS = (
    "id",
    "image_path",
    "patient_id",
    "study_id",
    "view",
    "split",
    "study_date",
    "text_key",
    "meta",
)
#: Manifest columns read into named record fields (the rest go to ``PairRecord.metadata``).
_MANIFEST_KNOWN = frozenset(
    {
        "id",
        "dicom_id",
        "image_path",
        "path",
        "image",
        "report",
        "text",
        "patient_id",
        "subject_id",
        "study_id",
        "view",
        "ViewPosition",
        "split",
        "study_date",
        "StudyDate",
        "labels",
        "findings",
        "impression",
        "indication",
        "comparison",
    }
)
#: MIMIC metadata columns kept in ``PairRecord.metadata`` (plus any extra columns of the file).
_MIMIC_META = ("StudyTime", "Rows", "Columns", "PerformedProcedureStepDescription")
_MIMIC_KNOWN = frozenset({"dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"})


# ----------------------------------------------------------------------------------- options


@dataclass
class _Options:
    split: str | None
    views: frozenset[str] | None
    one_image_per_study: bool
    section: str
    label_text: bool
    check_files: bool
    keep_unknown_view: bool | None
    require_report: bool
    require_images: bool | None
    fractions: Sequence[float]
    seed: int


def open_source(
    path: str | os.PathLike,
    *,
    layout: str = "auto",
    split: str | None = None,
    views: Iterable[str] | str | None = ("PA", "AP"),
    one_image_per_study: bool = False,
    section: str = "findings+impression",
    label_text: bool = False,
    check_files: bool = True,
    keep_unknown_view: bool | None = None,
    require_report: bool = True,
    require_images: bool | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    **kw,
) -> PairSet:
    """Load the pairs under ``path`` (a MIMIC-CXR / MIMIC-CXR-JPG / IU X-ray root or a manifest).

    Options (the defaults suit CLIP/GLoRIA-style pretraining):

    ``layout``            ``"auto"`` (detect), or ``mimic-dicom``, ``mimic-jpg``, ``iu-xray``,
                          ``manifest``.
    ``split``             keep one split only (``train``/``val``/``test``; ``validate`` = ``val``;
                          ``all`` or ``None`` keeps every split).
    ``views``             keep these view positions (default frontal ``PA``/``AP``; ``None`` or
                          ``all`` keeps all; a string may list several, ``"PA,AP"``). Views are normalised (``AP Supine`` -> ``AP``, ``L`` -> ``LATERAL``).
    ``keep_unknown_view`` keep rows without a view when filtering; default: no for MIMIC (a blank
                          ViewPosition there is mostly not a standard frontal), yes for IU X-ray and
                          manifests (which often leave the view blank).
    ``one_image_per_study`` one image per study: PA before AP before others, then smallest id.
    ``section``           ``findings+impression`` (default), ``impression``, ``findings``,
                          ``longest`` or ``full``; see :mod:`radalign.data.sections`. The
                          default because the impression alone is short (often "No acute
                          process.") while the findings carry the localised detail (side, zone,
                          size) that the word-region loss aligns with image regions; when one of
                          the two is missing the other is used alone.
    ``label_text``        for rows without a report (label-only sets), write a sentence from the
                          labels (see :func:`label_sentence`); off by default, then such rows are
                          skipped as ``"empty report"``.
    ``check_files``       skip rows whose image file does not exist (``os.path.exists``, no
                          decoding; ``radalign data check --decode`` decodes).
    ``require_report``    ``False`` keeps rows with an empty or unusable report (``report=""``).
    ``require_images``    rows without an image path are skipped (``"no image"``); default: yes,
                          unless the source has no image paths at all (a reports-only set, e.g. a
                          manifest with a blank ``image_path`` column or IU X-ray without
                          ``images/``), whose records then have ``image_path=None``.
    ``fractions``, ``seed`` for :func:`~radalign.data.splits.assign_splits` when a row has no
                          official split.

    Layout-specific keywords: MIMIC ``metadata=``, ``split_file=``, ``labels_file=``,
    ``labeler="chexpert"|"negbio"|None``, ``reports_root=``; IU X-ray ``images_dir=``,
    ``image_suffix=".png"``; manifest ``label_columns=[...]`` (default: columns named like a
    CheXpert/NIH label holding only -1/0/1/blank).
    """
    path = Path(path)
    if section not in SECTION_CHOICES:
        raise ValueError(f"section must be one of {', '.join(SECTION_CHOICES)}; got {section!r}")
    split = split_option(split)  # train/val/test (aliases such as validate), None for all
    views = views_option(views)
    view_set = None if views is None else frozenset(filter(None, map(normalize_view, views)))
    key = _LAYOUT_ALIASES.get(str(layout).lower())
    if key is None:
        raise ValueError(f"unknown layout {layout!r}; use auto or one of {', '.join(LAYOUTS)}")
    if key == "auto":
        key = detect_layout(path)
    else:
        _require_layout(path, key)
    allowed = {
        "mimic-dicom": _MIMIC_KW,
        "mimic-jpg": _MIMIC_KW,
        "iu-xray": _IU_KW,
        "shards": frozenset(),
    }.get(key, _MANIFEST_KW)
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(
            f"open_source got options {sorted(unknown)} not used by layout {key}; "
            f"valid: {sorted(allowed)}"
        )
    opts = _Options(
        split=split,
        views=view_set,
        one_image_per_study=one_image_per_study,
        section=section,
        label_text=label_text,
        check_files=check_files,
        keep_unknown_view=keep_unknown_view,
        require_report=require_report,
        require_images=require_images,
        fractions=tuple(fractions),
        seed=seed,
    )
    if key == "shards":
        return _open_shards(path, opts, **kw)
    if key in ("mimic-dicom", "mimic-jpg"):
        return _open_mimic(path, key, opts, **kw)
    if key == "iu-xray":
        return _open_iu(path, opts, **kw)
    return _open_manifest(path, opts, **kw)


def views_option(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """The views a ``--views``/``views=`` option keeps: ``None`` (every view) for ``all`` or
    ``None``; a comma-separated string or names as a tuple (normalised by :func:`open_source`)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return None
        value = value.split(",")
    views = tuple(str(v).strip() for v in value if v is not None and str(v).strip())
    if not views:
        raise ValueError("no views given; name them (e.g. PA,AP) or use all")
    return views


def open_records(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    views: str | Iterable[str] | None = ("PA", "AP"),
    **options,
) -> PairSet:
    """The records of one source as a command selects them: :func:`open_source` (``split`` read
    by :func:`~radalign.data.records.split_option`, ``views`` by :func:`views_option`: ``all``
    keeps everything), and a :class:`ValueError` saying what was left out when no record is
    left. The returned :class:`PairSet` carries what was skipped and filtered."""
    pairs = open_source(path, split=split, views=views, **options)
    if not pairs.records:
        why = [f"{reason} {n}" for reason, n in pairs.filtered.most_common() if n]
        if len(pairs.skipped):
            why.append(pairs.skipped.summary())
        chosen = split_option(split)
        where = f" in split {chosen}" if chosen else ""
        raise ValueError(
            f"{path}: no records{where}" + (f" (left out: {'; '.join(why)})" if why else "")
        )
    return pairs


def detect_layout(path: str | os.PathLike) -> str:
    """``mimic-dicom``, ``mimic-jpg``, ``iu-xray``, ``manifest`` or ``shards`` (a folder written
    by ``radalign data prepare``); :class:`InputError` ``"unrecognised layout"`` otherwise
    (``"file not found"`` if ``path`` does not exist)."""
    from radalign.data.shards import is_prepared

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", _UNRECOGNISED)
    if is_prepared(path):
        return "shards"
    if path.is_file():
        if path.name.lower().endswith(_MANIFEST_SUFFIXES):
            return "manifest"
        raise InputError(path, "unrecognised layout", _UNRECOGNISED)
    files = path / "files"
    if files.is_dir() and any(_PGROUP.fullmatch(e.name) for e in _scandir(files) if e.is_dir()):
        records = _find_file(path, "cxr-record-list.csv.gz") is not None
        metadata = _find_metadata(path) is not None
        if records != metadata:  # the release's own index file decides
            return "mimic-dicom" if records else "mimic-jpg"
        first = _sniff_image(path)
        if first is not None:
            return "mimic-dicom" if first.lower().endswith(_DICOM_SUFFIXES) else "mimic-jpg"
        if records:
            return "mimic-dicom"
        raise InputError(path, "unrecognised layout", "files/p1x tree holds no .dcm or .jpg images")
    if (path / "ecgen-radiology").is_dir() or _has_iu_xml(path):
        return "iu-xray"
    if any((path / n).is_file() for n in _MANIFEST_NAMES):
        return "manifest"
    raise InputError(path, "unrecognised layout", _UNRECOGNISED)


def _require_layout(path: Path, layout: str) -> None:
    """Fail at once when ``path`` cannot be the explicitly named ``layout``."""
    if not path.exists():
        raise InputError(path, "file not found", _UNRECOGNISED)
    if layout in ("mimic-dicom", "mimic-jpg"):
        ok = path.is_dir() and (
            (path / "files").is_dir()
            or _find_file(path, "cxr-record-list.csv.gz") is not None
            or _find_metadata(path) is not None
        )
    elif layout == "iu-xray":
        ok = path.is_dir() and ((path / "ecgen-radiology").is_dir() or _has_iu_xml(path))
    elif layout == "shards":
        from radalign.data.shards import is_prepared

        ok = is_prepared(path)
    else:
        ok = (path.is_file() and path.name.lower().endswith(_MANIFEST_SUFFIXES)) or (
            path.is_dir() and any((path / n).is_file() for n in _MANIFEST_NAMES)
        )
    if not ok:
        raise InputError(path, "unrecognised layout", f"not a {layout} source; {_UNRECOGNISED}")


# --------------------------------------------------------------------------------- assembling


def _strcol(df: pd.DataFrame, *names: str) -> pd.Series:
    """The first of ``names`` in ``df`` as stripped strings ('' for missing), or all ''."""
    for name in names:
        if name in df.columns:
            s = df[name]
            if s.dtype != object and not pd.api.types.is_string_dtype(s):
                s = s.astype(object).where(s.notna(), "")
                s = s.map(_num_to_str)
            else:
                s = s.fillna("")
            return s.astype(str).str.strip()
    return pd.Series([""] * len(df), index=df.index, dtype=object)


def _meta_dicts(df: pd.DataFrame, names: Sequence[str]) -> list[dict[str, str]]:
    """Per row, ``{column: value}`` of the non-blank values of ``names`` as strings."""
    names = [str(c) for c in names if c in df.columns]
    cols = [_strcol(df, c).tolist() for c in names]
    if not names:
        return [{} for _ in range(len(df))]
    return [{k: v for k, v in zip(names, vals) if v} for vals in zip(*cols)]


def _num_to_str(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _frame(**cols) -> pd.DataFrame:
    """The common table (object columns: element access on Arrow strings is slow)."""
    n = max(len(v) for v in cols.values() if not isinstance(v, str))
    data = {}
    for name in _COLUMNS:
        v = cols.get(name, "")
        if isinstance(v, str):
            data[name] = np.full(n, v, dtype=object)
        elif isinstance(v, pd.Series):
            data[name] = v.to_numpy(dtype=object)
        else:
            data[name] = np.asarray(list(v), dtype=object)
    return pd.DataFrame(data, dtype=object)


def _map_unique(values: pd.Series, fn: Callable[[object], str | None]) -> pd.Series:
    """``fn`` applied once per distinct value (``None`` -> ''), as an object Series."""
    arr = values.to_numpy(dtype=object)
    uniq = pd.unique(arr)
    table = {u: fn(u) or "" for u in uniq}
    return pd.Series([table[v] for v in arr], index=values.index, dtype=object)


_Fetch = Callable[[list[str]], Mapping[str, "str | dict[str, str] | None"]]
_Labels = Callable[[pd.DataFrame], list[dict[str, float]]]


def _assemble(
    df: pd.DataFrame,
    *,
    layout: str,
    root: Path,
    source: str,
    opts: _Options,
    fetch: _Fetch,
    labels: _Labels | None,
    skipped: SkipLog,
    description: str,
    where: Callable[[pd.DataFrame], list[str]] | None = None,
    read_view: Callable[[str], str | None] | None = None,
    keep_unknown_default: bool = True,
    require_images_default: bool = True,
) -> PairSet:
    """The common filter chain (see the module docstring) from a table of :data:`_COLUMNS`."""
    filtered: Counter = Counter()
    df = df.reset_index(drop=True)

    def skip(mask: pd.Series | np.ndarray, reason: str, detail: str = "") -> pd.DataFrame:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            bad = df[mask]
            paths = bad["image_path"].where(bad["image_path"] != "", bad["id"])
            for p, i in zip(paths, bad["id"]):
                skipped.add(p, reason, detail or f"id {i}")
        return df[~mask]

    # 1. duplicate ids: keep the first
    df = skip(df["id"].duplicated(keep="first").to_numpy(), "duplicate id")

    # 2. splits: normalise, then fill the gaps patient-consistently
    df = df.assign(split=_map_unique(df["split"], normalize_split))
    missing = (df["split"] == "").to_numpy()
    if missing.any():
        have = df[~missing & (df["patient_id"] != "").to_numpy()]
        given = have.groupby("patient_id", sort=False)["split"].first().to_dict()
        keys = [
            split_key(p or None, s or None, i)
            for p, s, i in zip(
                df.loc[missing, "patient_id"], df.loc[missing, "study_id"], df.loc[missing, "id"]
            )
        ]
        assigned = assign_splits(keys, opts.fractions, opts.seed)
        fill = [given.get(p) or assigned[k] for p, k in zip(df.loc[missing, "patient_id"], keys)]
        df.loc[missing, "split"] = fill

    # 3. split filter
    if opts.split is not None:
        keep = (df["split"] == opts.split).to_numpy()
        filtered["split"] += int((~keep).sum())
        df = df[keep]

    keep_unknown = (
        keep_unknown_default if opts.keep_unknown_view is None else opts.keep_unknown_view
    )

    def view_filter(frame: pd.DataFrame, defer_unknown: bool) -> pd.DataFrame:
        if opts.views is None:
            return frame
        known = (frame["view"] != "").to_numpy()
        ok = frame["view"].isin(opts.views).to_numpy() | (~known & (keep_unknown or defer_unknown))
        filtered["view"] += int((~ok).sum())
        return frame[ok]

    # 4. views already known
    df = view_filter(df, defer_unknown=read_view is not None)

    # 5. images: present in the table, present on disk
    has_path = (df["image_path"] != "").to_numpy()
    need_images = require_images_default if opts.require_images is None else opts.require_images
    if need_images:
        df = skip(~has_path, "no image")
    else:
        df = df.assign(image_path=df["image_path"].where(has_path, ""))
    if opts.check_files and len(df):
        exists = np.fromiter(
            (not p or os.path.exists(p) for p in df["image_path"]), dtype=bool, count=len(df)
        )
        df = skip(~exists, "missing image")

    # 5b. views from file headers where the table has none
    if read_view is not None:
        unknown = (df["view"] == "").to_numpy() & (df["image_path"] != "").to_numpy()
        if unknown.any():
            views, bad = [], np.zeros(len(df), dtype=bool)
            for k, p in enumerate(df["image_path"]):
                if not unknown[k]:
                    views.append(None)
                    continue
                try:
                    views.append(read_view(p))
                except InputError as err:
                    views.append(None)
                    bad[k] = True
                    skipped.add(p, err.reason, err.detail)
            new = [v or "" for v in views]
            df = df.assign(view=np.where(unknown, new, df["view"].to_numpy()))
            df = df[~bad]
        df = view_filter(df, defer_unknown=False)

    # 6. one image per study
    if opts.one_image_per_study and len(df):
        group = df["study_id"].where(df["study_id"] != "", "id:" + df["id"])
        rank = df["view"].map({"PA": 0, "AP": 1}).fillna(2)
        order = pd.DataFrame({"g": group, "r": rank, "i": df["id"]}).sort_values(["g", "r", "i"])
        first = ~order["g"].duplicated(keep="first")
        keep_idx = order.index[first.to_numpy()]
        filtered["one image per study"] += len(df) - len(keep_idx)
        df = df.loc[df.index.isin(keep_idx)]

    # 7. reports (no cyclic GC while hundreds of thousands of small objects are made)
    with _gc_paused():
        records = _build_records(df, opts, source, fetch, labels, where, skipped)
    return PairSet(
        records=records,
        skipped=skipped,
        layout=layout,
        root=root,
        description=description,
        filtered=filtered,
        options={
            "split": opts.split,
            "views": None if opts.views is None else sorted(opts.views),
            "keep_unknown_view": keep_unknown,
            "one_image_per_study": opts.one_image_per_study,
            "section": opts.section,
            "label_text": opts.label_text,
            "check_files": opts.check_files,
            "require_report": opts.require_report,
            "require_images": need_images,
        },
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _build_records(
    df: pd.DataFrame,
    opts: _Options,
    source: str,
    fetch: _Fetch,
    labels: _Labels | None,
    where: Callable[[pd.DataFrame], list[str]] | None,
    skipped: SkipLog,
) -> list[PairRecord]:
    """Read, section and choose each report once, then make one record per row."""
    label_dicts = labels(df) if labels is not None else [{} for _ in range(len(df))]
    wheres = where(df) if where is not None else None
    keys = df["text_key"].tolist()
    raw = fetch(list(dict.fromkeys(keys)))
    chosen: dict[str, tuple[str, dict[str, str], str]] = {}
    for k in dict.fromkeys(keys):
        chosen[k] = _choose(raw.get(k), opts.section)

    records: list[PairRecord] = []
    cols = [df[c].tolist() for c in ("id", "image_path", "patient_id", "study_id", "view")]
    cols += [df[c].tolist() for c in ("split", "study_date", "meta")]
    for n, (rid, img, pid, sid, view, spl, date, meta) in enumerate(zip(*cols)):
        report, sections, error = chosen[keys[n]]
        rec_source = source
        if error:
            sentence = None
            if opts.label_text and error in ("empty report", "no usable section"):
                sentence = label_sentence(label_dicts[n], rid)
            if sentence is not None:
                report, rec_source = sentence, "labels-only"
            elif not opts.require_report and error != "missing report":
                report = ""
            else:
                place = wheres[n] if wheres is not None else (img or rid)
                skipped.add(place, error, f"id {rid}")
                continue
        records.append(
            PairRecord(
                id=rid,
                image_path=Path(img) if img else None,
                report=report,
                patient_id=pid or None,
                study_id=sid or None,
                view=view or None,
                split=spl or None,
                labels=label_dicts[n],
                study_date=date or None,
                sections=dict(sections),
                source=rec_source,
                metadata=dict(meta) if isinstance(meta, dict) else {},
            )
        )
    return records


def _choose(raw: str | dict | None, section: str) -> tuple[str, dict[str, str], str]:
    """``(report, sections, error reason or '')`` of one report text or sections dict."""
    if raw is None:
        return "", {}, "missing report"
    if isinstance(raw, dict):
        sections, full = raw, ""
    else:
        if not raw.strip():
            return "", {}, "empty report"
        sections, full = split_sections(raw), raw
    try:
        return select_sections(sections, section, full_text=full), sections, ""
    except InputError as err:
        return "", sections, err.reason


# ------------------------------------------------------------------------------ label text

_FINDING_TEMPLATES = (
    "Findings: {}.",
    "Findings consistent with {}.",
    "The radiograph shows {}.",
    "There is evidence of {}.",
)
_NORMAL_TEMPLATES = (
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "The heart and lungs are within normal limits.",
)
_NO_FINDING = frozenset({"no finding", "no findings", "normal"})
#: Labels that say nothing about the picture (test status, bookkeeping): never written out.
_UNINFORMATIVE = frozenset({"inconclusive", "unknown", "other", "todo", "n/a", "none"})


def _humanise(label: str) -> str:
    words = str(label).replace("_", " ").split()
    return " ".join(w if any(c.isupper() for c in w[1:]) else w.lower() for w in words)


def label_sentence(labels: Mapping[str, float], key: str) -> str | None:
    """A short report written from CheXpert-style labels (the CXR-CLIP idea), or ``None``.

    Positive (1) labels are listed, uncertain (-1) ones as "possible ..."; with none of those but
    "No Finding"/"Normal" positive, a normal-study sentence. Uninformative labels
    ("Inconclusive", "Unknown", "Other") are ignored. The template is chosen by a hash of
    ``key`` (the record id), so the same record always gets the same sentence.
    """
    pos, unc, normal = [], [], False
    for name, value in labels.items():
        low = str(name).strip().lower()
        if low in _UNINFORMATIVE:
            continue
        is_normal = low in _NO_FINDING
        if value == 1:
            if is_normal:
                normal = True
            else:
                pos.append(_humanise(name))
        elif value == -1 and not is_normal:
            unc.append("possible " + _humanise(name))
    h = zlib.crc32(str(key).encode("utf-8"))
    if pos or unc:
        return _FINDING_TEMPLATES[h % len(_FINDING_TEMPLATES)].format(", ".join(pos + unc))
    if normal:
        return _NORMAL_TEMPLATES[h % len(_NORMAL_TEMPLATES)]
    return None


# ----------------------------------------------------------------------------------- MIMIC


def _scandir(path: str | os.PathLike) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _iter_mimic_images(
    root: Path, suffixes: tuple[str, ...]
) -> Iterator[tuple[str, str, str, str]]:
    """``(subject_id, study_id, dicom_id, relative path)`` for every image under ``files/``."""
    for group in _scandir(root / "files"):
        if not (_PGROUP.fullmatch(group.name) and group.is_dir()):
            continue
        for patient in _scandir(group.path):
            if not (patient.name.startswith("p") and patient.is_dir()):
                continue
            for study in _scandir(patient.path):
                if not (study.name.startswith("s") and study.is_dir()):
                    continue
                for f in _scandir(study.path):
                    if f.name.lower().endswith(suffixes) and f.is_file():
                        rel = f"files/{group.name}/{patient.name}/{study.name}/{f.name}"
                        yield patient.name[1:], study.name[1:], f.name.rsplit(".", 1)[0], rel


def _sniff_image(root: Path, max_studies: int = 200) -> str | None:
    """The name of the first image file in the first ``max_studies`` study folders (unsorted)."""
    seen = 0
    suffixes = _DICOM_SUFFIXES + _JPG_SUFFIXES
    try:
        for group in os.scandir(root / "files"):
            if not (_PGROUP.fullmatch(group.name) and group.is_dir()):
                continue
            for patient in os.scandir(group.path):
                if not patient.is_dir():
                    continue
                for study in os.scandir(patient.path):
                    if not study.is_dir():
                        continue
                    for f in os.scandir(study.path):
                        if f.name.lower().endswith(suffixes):
                            return f.name
                    seen += 1
                    if seen >= max_studies:
                        return None
    except OSError:
        return None
    return None


def _find_file(root: Path, name: str) -> Path | None:
    for cand in (root / name, root / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    return None


def _find_metadata(root: Path, kind: str = "metadata") -> Path | None:
    found = sorted(root.glob(f"mimic-cxr-2.*-{kind}.csv*"))
    return found[-1] if found else None


def _read_ids_csv(path: Path, wanted: Sequence[str]) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in set(wanted))
    for col in wanted:
        if col not in df.columns:
            df[col] = ""
        df[col] = df[col].astype(str).str.strip()
    return df


def _study_rel(subject: pd.Series, study: pd.Series) -> pd.Series:
    return "files/p" + subject.str[:2] + "/p" + subject + "/s" + study


def _dicom_view(path: str) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
        return normalize_view(ds.get("ViewPosition", None))
    except Exception as exc:  # any parse failure of one file is that file's problem
        raise InputError(path, "unreadable DICOM header", f"{type(exc).__name__}: {exc}") from None


class _MimicReports:
    """Reads ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` from folders or ``mimic-cxr-reports.zip``."""

    def __init__(self, roots: list[Path], zips: list[Path]) -> None:
        self.roots = [str(r) for r in roots]
        self.zips = zips
        self._zip_index: dict[str, tuple[zipfile.ZipFile, str]] | None = None

    def _zip_lookup(self, rel: str) -> str | None:
        if not self.zips:
            return None
        if self._zip_index is None:
            self._zip_index = {}
            for z in self.zips:
                try:
                    zf = zipfile.ZipFile(z)
                except (OSError, zipfile.BadZipFile):
                    continue
                for name in zf.namelist():
                    at = name.find("files/")
                    if at >= 0 and name.endswith(".txt"):
                        self._zip_index.setdefault(name[at:], (zf, name))
        hit = self._zip_index.get(rel)
        if hit is None:
            return None
        return hit[0].read(hit[1]).decode("utf-8", errors="replace")

    def __call__(self, keys: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for rel in keys:
            text = None
            for r in self.roots:
                try:
                    with open(f"{r}/{rel}", encoding="utf-8", errors="replace") as fh:
                        text = fh.read()
                    break
                except OSError:
                    continue
            if text is None:
                text = self._zip_lookup(rel)
            out[rel] = text
        return out

    def where(self, rel: str) -> str:
        return f"{self.roots[0]}/{rel}"


def _labels_from_frame(frame: pd.DataFrame | None, key: str) -> _Labels | None:
    """Per-row label dicts, looked up by ``key`` (a column of the assembled table)."""
    if frame is None:
        return None
    names = [c for c in frame.columns if c not in ("subject_id", "study_id", "_key")]
    values = frame[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    index = {k: n for n, k in enumerate(frame["_key"])}

    def lookup(df: pd.DataFrame) -> list[dict[str, float]]:
        out, cache = [], {}
        for k in df[key]:
            if k not in cache:
                n = index.get(k)
                cache[k] = (
                    {} if n is None else {c: float(v) for c, v in zip(names, values[n]) if v == v}
                )
            out.append(dict(cache[k]))
        return out

    return lookup


def _open_mimic(root: Path, layout: str, opts: _Options, **kw) -> PairSet:
    skipped = SkipLog()
    notes: list[str] = []
    jpg = layout == "mimic-jpg"
    suffix = ".jpg" if jpg else ".dcm"
    meta_path = Path(kw["metadata"]) if kw.get("metadata") else _find_metadata(root)
    record_path = None if jpg else _find_file(root, "cxr-record-list.csv.gz")

    meta = None
    meta_cols: list[str] = list(_MIMIC_META)
    if meta_path is not None:
        head = pd.read_csv(meta_path, nrows=0).columns
        meta_cols += [str(c) for c in head if c not in _MIMIC_KNOWN and c not in meta_cols]
        meta = _read_ids_csv(
            meta_path,
            ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", *meta_cols],
        )
    if record_path is not None:
        base = _read_ids_csv(record_path, ["subject_id", "study_id", "dicom_id", "path"])
        notes.append(f"images from {record_path.name}")
    elif jpg and meta is not None:
        base = meta[["subject_id", "study_id", "dicom_id"]].copy()
        base["path"] = (
            _study_rel(base["subject_id"], base["study_id"]) + "/" + base["dicom_id"] + suffix
        )
        notes.append(f"images from {meta_path.name}")
    else:
        rows = list(_iter_mimic_images(root, _JPG_SUFFIXES if jpg else _DICOM_SUFFIXES))
        base = pd.DataFrame(
            rows, columns=["subject_id", "study_id", "dicom_id", "path"], dtype=object
        )
        notes.append("images found by walking files/")
    base = base.astype(str)
    if meta is not None:
        extra = meta.drop_duplicates("dicom_id")[
            ["dicom_id", "ViewPosition", "StudyDate", *meta_cols]
        ]
        base = base.merge(extra, on="dicom_id", how="left", sort=False)
        notes.append(f"views from {meta_path.name}")
    else:
        base["ViewPosition"] = ""
        base["StudyDate"] = ""
        for col in _MIMIC_META:
            base[col] = ""
        if not jpg:
            notes.append("views from DICOM headers")
    base = base.fillna("")

    split_path = Path(kw["split_file"]) if kw.get("split_file") else _find_metadata(root, "split")
    if split_path is not None:
        sp = _read_ids_csv(split_path, ["dicom_id", "split"]).drop_duplicates("dicom_id")
        base = base.merge(sp, on="dicom_id", how="left", sort=False).fillna("")
        notes.append(f"official split from {split_path.name}")
    else:
        base["split"] = ""
        notes.append("patient-disjoint hash split")

    labeler = kw.get("labeler", "chexpert")
    label_path = Path(kw["labels_file"]) if kw.get("labels_file") else None
    if label_path is None and labeler:
        label_path = _find_metadata(root, str(labeler))
    label_frame = None
    if label_path is not None:
        label_frame = pd.read_csv(label_path, dtype={"subject_id": str, "study_id": str})
        label_frame["_key"] = label_frame["study_id"].astype(str).str.strip()
        label_frame = label_frame.drop_duplicates("_key")
        notes.append(f"labels from {label_path.name}")

    study = _study_rel(base["subject_id"], base["study_id"])
    images = base["path"].where(base["path"] != "", study + "/" + base["dicom_id"] + suffix)
    df = _frame(
        id=base["dicom_id"],
        image_path=(str(root) + "/" + images).where(images != "", ""),
        patient_id=base["subject_id"],
        study_id=base["study_id"],
        view=_map_unique(base["ViewPosition"], normalize_view),
        split=base["split"],
        study_date=base["StudyDate"],
        text_key=study + ".txt",
        meta=_meta_dicts(base, meta_cols),
    )

    roots = [root]
    zips = [z for z in (_find_file(root, "mimic-cxr-reports.zip"),) if z]
    if kw.get("reports_root"):
        rr = Path(kw["reports_root"])
        if rr.is_file() and rr.suffix == ".zip":
            zips.append(rr)
        else:
            roots.append(rr)
            zips += [z for z in (_find_file(rr, "mimic-cxr-reports.zip"),) if z]
    reports = _MimicReports(roots, zips)
    name = "MIMIC-CXR-JPG" if jpg else "MIMIC-CXR (DICOM)"
    return _assemble(
        df,
        layout=layout,
        root=root,
        source=layout,
        opts=opts,
        fetch=reports,
        labels=_labels_from_frame(label_frame, "study_id"),
        skipped=skipped,
        description=f"{name} at {root}: " + "; ".join(notes),
        where=lambda d: [reports.where(k) for k in d["text_key"]],
        read_view=None if (jpg or meta is not None) else _dicom_view,
        keep_unknown_default=False,
    )


# ------------------------------------------------------------------------------ IU X-ray


def _has_iu_xml(path: Path) -> bool:
    for name in sorted(os.listdir(path))[:50]:
        if name.lower().endswith(".xml"):
            try:
                with open(path / name, "rb") as fh:
                    return b"<eCitation" in fh.read(4096)
            except OSError:
                return False
    return False


def _natural(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _iu_label(term: str) -> str:
    name = term.split("/", 1)[0].strip()
    return name[:1].upper() + name[1:] if name[:1].islower() else name


def _open_iu(root: Path, opts: _Options, *, images_dir=None, image_suffix: str = ".png") -> PairSet:
    skipped = SkipLog()
    xml_dir = root / "ecgen-radiology" if (root / "ecgen-radiology").is_dir() else root
    img_dir = Path(images_dir) if images_dir else root / "images"
    if not img_dir.is_dir() and not images_dir and xml_dir == root:
        img_dir = root.parent / "images"
    have_images = img_dir.is_dir()
    rows: list[tuple[str, str, str, str]] = []
    texts: dict[str, dict[str, str]] = {}
    labels_of: dict[str, dict[str, float]] = {}
    for xml in sorted(xml_dir.glob("*.xml"), key=_natural):
        try:
            doc = ET.parse(xml).getroot()
        except (ET.ParseError, OSError, ValueError) as exc:
            skipped.add(xml, "unreadable XML", str(exc))
            continue
        uid_el = doc.find("uId")
        uid = (uid_el.get("id") if uid_el is not None else None) or f"CXR{xml.stem}"
        sections: dict[str, str] = {}
        for at in doc.iter("AbstractText"):
            label = " ".join((at.get("Label") or "").upper().split())
            text = clean_text("".join(at.itertext()))
            if label and text:
                sections[label] = f"{sections[label]} {text}" if label in sections else text
        labels: dict[str, float] = {}
        mesh = doc.find("MeSH")
        if mesh is not None:
            for major in mesh.iter("major"):
                if major.text and major.text.strip():
                    labels[_iu_label(major.text)] = 1.0
        key = str(xml)
        texts[key] = sections
        labels_of[key] = labels
        image_ids = []
        for pi in doc.iter("parentImage"):
            iid = pi.get("id")
            if not iid:
                url = pi.findtext(".//url") or ""
                iid = PurePosixPath(url.strip()).stem
            if iid:
                image_ids.append(iid)
        if not image_ids:
            rows.append((uid, "", uid, key))
        for iid in image_ids:
            path = str(img_dir / f"{iid}{image_suffix}") if have_images else ""
            rows.append((iid, path, uid, key))
    if rows:
        ids, paths, pids, keys = zip(*rows)
    else:
        ids = paths = pids = keys = ()
    df = (
        _frame(id=ids, image_path=paths, patient_id=pids, study_id=pids, text_key=keys)
        if rows
        else pd.DataFrame({c: [] for c in _COLUMNS}, dtype=object)
    )
    return _assemble(
        df,
        layout="iu-xray",
        root=root,
        source="iu-xray",
        opts=opts,
        fetch=lambda ks: {k: texts.get(k) for k in ks},
        labels=lambda d: [dict(labels_of[k]) for k in d["text_key"]],
        skipped=skipped,
        description=(
            f"IU X-ray at {root}: {len(texts)} reports from {xml_dir.name}/, "
            + (f"images from {img_dir}" if have_images else "no image folder (reports only)")
        ),
        where=lambda d: list(d["text_key"]),
        keep_unknown_default=True,
        require_images_default=have_images,
    )


# ------------------------------------------------------------------------------ manifests


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    except (OSError, ValueError) as exc:
        raise InputError(path, "unreadable manifest", f"{type(exc).__name__}: {exc}") from None


def _detect_label_columns(df: pd.DataFrame) -> list[str]:
    out = []
    for col in df.columns:
        if re.sub(r"[\s_]+", " ", str(col)).strip().lower() not in _LABEL_KEYS:
            continue
        vals = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
        raw_blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if (vals.isna() & ~raw_blank).any():
            continue  # text in it: not a numeric label column
        if vals.dropna().isin([-1.0, 0.0, 1.0]).all():
            out.append(col)
    return out


def _open_manifest(
    path: Path, opts: _Options, *, label_columns: Sequence[str] | None = None
) -> PairSet:
    if path.is_dir():
        found = [path / n for n in _MANIFEST_NAMES if (path / n).is_file()]
        if not found:
            raise InputError(path, "unrecognised layout", _UNRECOGNISED)
        path = found[0]
    table = _read_table(path)
    cols = set(table.columns)
    img_col = next((c for c in ("image_path", "path", "image") if c in cols), None)
    rep_col = next((c for c in ("report", "text") if c in cols), None)
    has_sections = "findings" in cols or "impression" in cols
    if img_col is None and rep_col is None and not has_sections:
        raise InputError(
            path,
            "unrecognised layout",
            f"a manifest needs an image_path and/or a report column; has {sorted(map(str, cols))}",
        )
    table = table.reset_index(drop=True)
    n = len(table)
    rel = _strcol(table, img_col) if img_col else pd.Series([""] * n, dtype=object)
    base = str(path.parent)
    image_path = [p if not p or os.path.isabs(p) else f"{base}/{p}" for p in rel]
    if "id" in cols or "dicom_id" in cols:
        ids = _strcol(table, "id", "dicom_id")
        ids = ids.where(ids != "", pd.Series([f"row{i}" for i in range(n)], index=ids.index))
    else:
        stems = pd.Series([PurePosixPath(p.replace("\\", "/")).stem if p else "" for p in rel])
        ids = stems.where(stems != "", pd.Series([f"row{i}" for i in range(n)]))
        clash = ids.duplicated(keep=False) & ~(rel.duplicated(keep=False) & (rel != ""))
        if clash.any():
            ids = ids.where(~clash, ids + "#" + pd.Series(range(n)).astype(str))

    reports = _strcol(table, rep_col) if rep_col else pd.Series([""] * n, dtype=object)
    texts: dict[str, str | dict[str, str]] = {}
    if has_sections:
        sec_cols = {
            name.upper(): _strcol(table, name).tolist()
            for name in ("indication", "comparison", "findings", "impression")
            if name in cols
        }
        report_list = reports.tolist()
        for i in range(n):
            sections = {k: clean_text(v[i]) for k, v in sec_cols.items()}
            sections = {k: v for k, v in sections.items() if v}
            has_content = sections.get("FINDINGS") or sections.get("IMPRESSION")
            texts[str(i)] = sections if has_content else report_list[i]
    else:
        texts = {str(i): r for i, r in enumerate(reports)}
    labels_only = not any(
        (v if isinstance(v, str) else " ".join(v.values())).strip() for v in texts.values()
    )

    # labels: pipe-separated names (1.0) plus numeric label columns
    lab_cols = list(label_columns) if label_columns is not None else _detect_label_columns(table)
    missing_cols = [c for c in lab_cols if c not in cols]
    if missing_cols:
        raise ValueError(f"label_columns not in {path.name}: {missing_cols}")
    values = (
        table[lab_cols].replace("", np.nan).apply(pd.to_numeric, errors="coerce").to_numpy(float)
        if lab_cols
        else np.zeros((n, 0))
    )
    pipes = _strcol(table, "labels").tolist()
    label_list: list[dict[str, float]] = []
    for i in range(n):
        d = {c: float(v) for c, v in zip(lab_cols, values[i]) if v == v}
        for name in pipes[i].split("|"):
            name = name.strip()
            if name:
                d[name] = 1.0
        label_list.append(d)

    df = _frame(
        id=ids,
        image_path=image_path,
        patient_id=_strcol(table, "patient_id", "subject_id"),
        study_id=_strcol(table, "study_id"),
        view=_map_unique(_strcol(table, "view", "ViewPosition"), normalize_view),
        split=_strcol(table, "split"),
        study_date=_strcol(table, "study_date", "StudyDate"),
        text_key=[str(i) for i in range(n)],
        meta=_meta_dicts(
            table, [c for c in table.columns if c not in _MANIFEST_KNOWN and c not in lab_cols]
        ),
    )
    layout = "labels-only" if labels_only else "manifest"
    no_images = all(not p for p in image_path)
    return _assemble(
        df,
        layout=layout,
        root=path,
        source=layout,
        opts=opts,
        fetch=lambda ks: {k: texts[k] for k in ks},
        labels=lambda d: [dict(label_list[int(k)]) for k in d["text_key"]],
        skipped=SkipLog(),
        description=(
            f"{'label-only ' if labels_only else ''}manifest {path} ({n} rows"
            + (", no image paths: reports only" if no_images else "")
            + (f"; label columns: {', '.join(lab_cols)}" if lab_cols else "")
            + ")"
        ),
        where=lambda d: [p or f"{path}:row {k}" for p, k in zip(d["image_path"], d["text_key"])],
        keep_unknown_default=True,
        require_images_default=not no_images,
    )


# ------------------------------------------------------------------------------ prepared shards


def _open_shards(root: Path, opts: _Options) -> PairSet:
    """A folder written by ``radalign data prepare``: records from its ``index.parquet``, image
    paths naming the shard members; the usual filters and report rules apply."""
    import dataclasses
    import json

    from radalign.data.shards import read_index, read_manifest
    from radalign.encoders.imageio import shard_member_path

    manifest = read_manifest(root)
    index = read_index(root)
    n = len(index)
    present = {s: (root / s).is_file() for s in index["shard"].unique()}
    paths = [
        str(shard_member_path(root / s, m)) if present[s] else ""
        for s, m in zip(index["shard"], index["member"])
    ]
    skipped = SkipLog()
    for s in sorted(k for k, ok in present.items() if not ok):
        skipped.add(root / s, "missing shard", f"{int((index['shard'] == s).sum())} samples")
    texts: dict[str, str | dict[str, str]] = {}
    for k, rep, sec in zip(range(n), index["report"], index["sections"]):
        sections = json.loads(sec) if sec else {}
        texts[str(k)] = sections if any(sections.values()) else str(rep or "")
    labels = [json.loads(v) if v else {} for v in index["labels"]]
    df = _frame(
        id=_strcol(index, "id"),
        image_path=paths,
        patient_id=_strcol(index, "patient_id"),
        study_id=_strcol(index, "study_id"),
        view=_strcol(index, "view"),
        split=_strcol(index, "split"),
        study_date=_strcol(index, "study_date"),
        text_key=[str(k) for k in range(n)],
    )
    pairs = _assemble(
        df,
        layout="shards",
        root=root,
        source=str(manifest.get("layout") or "shards"),
        opts=dataclasses.replace(opts, check_files=False),  # shard presence checked above
        fetch=lambda ks: {k: texts[k] for k in ks},
        labels=lambda d: [dict(labels[int(k)]) for k in d["text_key"]],
        skipped=skipped,
        description=(
            f"prepared shards at {root}: {n} samples in {len(present)} shards "
            f"({manifest.get('size')} px {manifest.get('dtype')}) from {manifest.get('layout')} "
            f"{manifest.get('source')}"
        ),
        where=lambda d: list(d["image_path"]),
        keep_unknown_default=True,
        require_images_default=True,
    )
    # the stored per-record source and any extra record fields
    row_of = {rid: k for k, rid in enumerate(index["id"])}
    sources, extras = index["source"].tolist(), index["extra"].tolist()
    names = {f.name for f in dataclasses.fields(PairRecord)}
    for rec in pairs.records:
        k = row_of[rec.id]
        if sources[k] and rec.source != "labels-only":
            rec.source = sources[k]
        for name, value in (json.loads(extras[k]) if extras[k] else {}).items():
            if name in names:
                setattr(rec, name, value)
    return pairs
