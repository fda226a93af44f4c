"""Decode once: turn any source into resized, lossless WebDataset shards (``radalign data prepare``).

Each image is decoded with the training decoder (:func:`radalign.encoders.imageio.load_image`:
the same windowing and MONOCHROME handling), resized with its aspect kept so the longer side is
``size`` (cv2 ``INTER_AREA``; smaller images are kept as they are), quantised to ``uint8`` or
``uint16`` and stored as a lossless PNG. What training reads from a shard is therefore exactly
:func:`prepared_pixels` of the decoded original, and from there the pipeline (transform,
augmentation, batching) is the one used for any other source.

Shards are planned from the source's record order (``shard_size`` records each), written in
parallel by worker processes (one shard per task), each shard atomically (temporary file, then
rename) together with a small ``parts/shard-NNNNNN.json`` holding its index rows and skips. A
killed job rerun with the same arguments skips the shards already finished; a rerun with other
arguments into the same folder is refused unless ``overwrite=True``. ``index.parquet``,
``skipped.csv`` and ``manifest.json`` (last) are written when every shard is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.data.records import PairRecord
from radalign.data.shards import (
    FORMAT,
    INDEX,
    INDEX_COLUMNS,
    MANIFEST,
    PLAN,
    VERSION,
    shard_name,
)
from radalign.encoders.atomic import atomic_write
from radalign.encoders.errors import InputError, SkipLog

__all__ = ["DTYPES", "PrepareSummary", "encode_png", "prepare", "prepared_pixels"]

DTYPES = ("uint8", "uint16")
PNG_LEVEL = 1  # zlib level: decoding speed hardly depends on it, writing does
_BASE_FIELDS = frozenset(
    {"id", "image_path", "report", "patient_id", "study_id", "view", "split", "labels"}
    | {"study_date", "sections", "source"}
)


@dataclass
class PrepareSummary:
    """What a prepare run did."""

    out: Path
    n_records: int
    n_written: int
    n_shards: int
    n_resumed_shards: int
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    bytes: int = 0

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in self.skipped.most_common()) or "none"
        rate = self.n_written / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"prepared {self.n_written} of {self.n_records} records into {self.n_shards} shards "
            f"({self.n_resumed_shards} already done) at {self.out}: {self.bytes / 1e6:.1f} MB, "
            f"{self.seconds:.1f} s ({rate:.1f} images/s); skipped: {skipped}"
        )


def prepared_pixels(image: np.ndarray, size: int, dtype: str = "uint8") -> np.ndarray:
    """The stored pixels of a decoded image (2-D float in [0, 1]): longer side resized to
    ``size`` with the aspect kept (never enlarged), then rounded to ``dtype``."""
    import cv2

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    img = np.ascontiguousarray(image, dtype=np.float32)
    h, w = img.shape
    if max(h, w) > size:
        scale = size / max(h, w)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, new, interpolation=cv2.INTER_AREA)
    full = 255.0 if dtype == "uint8" else 65535.0
    return np.rint(np.clip(img, 0.0, 1.0) * full).astype(dtype)


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless gray PNG bytes of a uint8/uint16 array."""
    import cv2

    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {pixels.shape}")
    return buf.tobytes()


# ---------------------------------------------------------------------------------- one shard


def _record_meta(rec: PairRecord) -> dict:
    """The JSON fields of a record (everything but the image path; extra fields kept)."""
    meta = {
        "id": rec.id,
        "report": rec.report,
        "sections": dict(rec.sections),
        "patient_id": rec.patient_id,
        "study_id": rec.study_id,
        "view": rec.view,
        "split": rec.split,
        "labels": {k: float(v) for k, v in rec.labels.items()},
        "study_date": rec.study_date,
        "source": rec.source,
        "source_path": None if rec.image_path is None else str(rec.image_path),
    }
    extra = {
        f.name: getattr(rec, f.name)
        for f in dataclasses.fields(rec)
        if f.name not in _BASE_FIELDS and getattr(rec, f.name, None) not in (None, {}, [], "")
    }
    if extra:
        meta["extra"] = extra
    return meta


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> tuple[int, int]:
    """Add ``name``; returns the byte offset and size of its data in the tar file."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    header = info.tobuf(tar.format, tar.encoding, tar.errors)
    offset = tar.offset + len(header)
    tar.addfile(info, io.BytesIO(data))
    return offset, len(data)


def _write_shard(task: tuple) -> dict:
    """Decode, resize and store one shard's records; returns its part (index rows, skips)."""
    index, records, keys, out, size, dtype, window = task
    import cv2
    from radalign.encoders.imageio import load_image

    cv2.setNumThreads(1)
    out = Path(out)
    name = shard_name(index)
    rows: list[dict] = []
    skipped: list[tuple[str, str, str]] = []
    with (
        atomic_write(out / name, "wb") as fh,
        tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for key, rec in zip(keys, records):
            if rec.image_path is None:
                skipped.append((rec.id, "no image", f"id {rec.id}"))
                continue
            try:
                image = load_image(rec.image_path, window=window)
            except InputError as err:
                skipped.append((err.path or str(rec.image_path), err.reason, err.detail))
                continue
            pixels = prepared_pixels(image, size, dtype)
            meta = _record_meta(rec)
            meta.update(
                height=int(pixels.shape[0]),
                width=int(pixels.shape[1]),
                orig_height=int(image.shape[0]),
                orig_width=int(image.shape[1]),
                dtype=dtype,
            )
            off, n = _tar_member(tar, f"{key}.png", encode_png(pixels))
            meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
            joff, jn = _tar_member(tar, f"{key}.json", meta_bytes)
            rows.append(
                {
                    "key": key,
                    "shard": name,
                    "member": f"{key}.png",
                    "offset": off,
                    "size": n,
                    "json_offset": joff,
                    "json_size": jn,
                    "height": meta["height"],
                    "width": meta["width"],
                    "id": rec.id,
                    "report": rec.report,
                    "sections": json.dumps(meta["sections"], ensure_ascii=False),
                    "patient_id": rec.patient_id,
                    "study_id": rec.study_id,
                    "view": rec.view,
                    "split": rec.split,
                    "labels": json.dumps(meta["labels"]),
                    "study_date": rec.study_date,
                    "source": rec.source,
                    "source_path": meta["source_path"],
                    "extra": json.dumps(meta.get("extra", {}), ensure_ascii=False, default=str),
                }
            )
    part = {
        "shard": name,
        "tar_size": (out / name).stat().st_size,
        "rows": rows,
        "skipped": skipped,
    }
    with atomic_write(out / "parts" / f"{Path(name).stem}.json", "w", encoding="utf-8") as fh:
        json.dump(part, fh, ensure_ascii=False)
    return part


def _finished_part(out: Path, index: int) -> dict | None:
    """The part of shard ``index`` when both it and its tar are complete, else ``None``."""
    name = shard_name(index)
    part_path = out / "parts" / f"{Path(name).stem}.json"
    tar = out / name
    if not (part_path.is_file() and tar.is_file()):
        return None
    try:
        part = json.loads(part_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return part if part.get("tar_size") == tar.stat().st_size else None


# ---------------------------------------------------------------------------------- the job


def _fingerprint(records: Sequence[PairRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.id}\t{r.image_path}\n".encode())
    return h.hexdigest()


def _clear(out: Path) -> None:
    """Remove what an earlier prepare wrote into ``out`` (its own files only)."""
    for p in out.glob("shard-*.tar"):
        p.unlink()
    for p in out.glob(".shard-*.tar.*.tmp"):
        p.unlink()
    shutil.rmtree(out / "parts", ignore_errors=True)
    for name in (PLAN, MANIFEST, INDEX, "skipped.csv"):
        (out / name).unlink(missing_ok=True)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="prepare", disable=not enabled, smoothing=0.1)


def prepare(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = 512,
    dtype: str = "uint8",
    workers: int | None = None,
    shard_size: int = 1000,
    views: Iterable[str] | None = ("PA", "AP"),
    section: str = "findings+impression",
    split: str | None = None,
    window: str = "header",
    overwrite: bool = False,
    progress: bool = True,
    **source_options,
) -> PrepareSummary:
    """Prepare ``source`` (any layout :func:`~radalign.data.sources.open_source` reads) into
    shards under ``out``; see the module docstring. Records without a usable report are kept
    (``report=""``): the images are what is costly, and reading the folder later applies the
    usual report rules (``require_report``, ``label_text``). ``workers`` defaults to all cores.
    """
    from radalign.data.sources import open_source

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, not {size}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, not {shard_size}")
    t0 = time.perf_counter()
    out = Path(out)
    source = Path(source)
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the source itself")
    pairs = open_source(
        source,
        views=views,
        section=section,
        split=split,
        require_report=False,
        **source_options,
    )
    records = [r for r in pairs.records if r.image_path is not None]
    no_image = [r for r in pairs.records if r.image_path is None]
    n_shards = max(1, -(-len(records) // shard_size)) if records else 0
    plan = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source.resolve()),
        "layout": pairs.layout,
        "size": size,
        "dtype": dtype,
        "window": window,
        "shard_size": shard_size,
        "views": None if views is None else sorted(views),
        "section": section,
        "split": split,
        "source_options": {k: str(v) for k, v in sorted(source_options.items())},
        "n_records": len(records),
        "n_shards": n_shards,
        "fingerprint": _fingerprint(records),
    }
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN
    if plan_path.is_file() and not overwrite:
        try:
            old = json.loads(plan_path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old != plan:
            diff = sorted(k for k in plan if old is None or old.get(k) != plan[k])
            raise ValueError(
                f"{out} holds a different prepare job (differs in {', '.join(diff)}); "
                "pass overwrite=True (--overwrite) or choose another --out"
            )
    elif overwrite or any(out.iterdir()):
        if not overwrite and any(p.name != PLAN for p in out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no prepare job; choose another --out")
        _clear(out)
    with atomic_write(plan_path, "w", encoding="utf-8") as fh:
        json.dump(plan, fh, indent=2)
    (out / MANIFEST).unlink(missing_ok=True)

    width = max(6, len(str(max(len(records) - 1, 0))))
    keys = [f"{i:0{width}d}" for i in range(len(records))]
    parts: dict[int, dict] = {}
    todo = []
    for i in range(n_shards):
        part = _finished_part(out, i)
        if part is not None:
            parts[i] = part
        else:
            lo, hi = i * shard_size, min(len(records), (i + 1) * shard_size)
            todo.append((i, records[lo:hi], keys[lo:hi], str(out), size, dtype, window))
    n_resumed = len(parts)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with _progress(len(records), progress) as bar:
        bar.update(sum(len(p["rows"]) + len(p["skipped"]) for p in parts.values()))
        if workers == 1:
            for task in todo:
                parts[task[0]] = _write_shard(task)
                bar.update(len(task[1]))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                futures = {ex.submit(_write_shard, t): t for t in todo}
                for fut in as_completed(futures):
                    task = futures[fut]
                    parts[task[0]] = fut.result()
                    bar.update(len(task[1]))
    return _finish(out, plan, pairs.skipped, no_image, parts, n_resumed, len(records), t0)


def _finish(
    out: Path,
    plan: dict,
    source_skips: SkipLog,
    no_image: list[PairRecord],
    parts: dict[int, dict],
    n_resumed: int,
    n_records: int,
    t0: float,
) -> PrepareSummary:
    """Write index.parquet, skipped.csv and (last) manifest.json from the shards' parts."""
    import csv

    order = sorted(parts)
    rows = [row for i in order for row in parts[i]["rows"]]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    for col in ("offset", "size", "json_offset", "json_size", "height", "width"):
        index[col] = index[col].astype("int64")
    with atomic_write(out / INDEX, "wb") as fh:
        index.to_parquet(fh, index=False)
    skips = [(p, r, d, "source") for p, r, d in source_skips.rows]
    skips += [(r.id, "no image", f"id {r.id}", "source") for r in no_image]
    skips += [(p, r, d, "decode") for i in order for p, r, d in parts[i]["skipped"]]
    with atomic_write(out / "skipped.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason", "detail", "stage"])
        writer.writerows(skips)
    shards = [shard_name(i) for i in order]
    total_bytes = sum((out / s).stat().st_size for s in shards)
    counts = Counter(r for _, r, _, _ in skips)
    seconds = time.perf_counter() - t0
    manifest = {
        **plan,
        "shards": shards,
        "n_samples": len(index),
        "bytes": total_bytes,
        "skipped": dict(counts.most_common()),
        "splits": {str(k): int(v) for k, v in index["split"].value_counts().items()},
        "seconds": round(seconds, 2),
        "members": "<key>.png (lossless gray PNG) + <key>.json (record fields)",
    }
    with atomic_write(out / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, ensure_ascii=False)
    return PrepareSummary(
        out=out,
        n_records=n_records,
        n_written=len(index),
        n_shards=len(shards),
        n_resumed_shards=n_resumed,
        skipped=counts,
        seconds=seconds,
        bytes=total_bytes,
    )
