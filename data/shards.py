"""Reading a prepared folder (``radalign data prepare``): WebDataset tar shards plus an index.

A prepared folder holds::

    shard-000000.tar ...   WebDataset-convention tars: <key>.png (8- or 16-bit gray) + <key>.json
    index.parquet          one row per sample: shard, member, byte offset and size of the PNG,
                           and the record's fields (id, report, sections, labels, ...)
    manifest.json          what was prepared, from what, with which options; written last
    skipped.csv            what was left out and why (path, reason, detail, stage)

Two ways to read it:

* **Random access** (what radalign itself does): :func:`radalign.data.sources.open_source` on the
  folder returns ordinary :class:`~radalign.data.records.PairRecord` objects whose
  ``image_path`` is ``DIR/shard-000003.tar::000123.png``; ``load_image`` reads those bytes at the
  recorded offset. Training keeps its map-style dataset, distributed sampler, deterministic
  shuffling and exact mid-epoch resume.
* **Streaming**: ``webdataset.WebDataset(shard_urls(DIR))`` yields ``{"__key__", "png",
  "json"}`` samples like any WebDataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.encoders.errors import InputError
from radalign.encoders.imageio import SHARD_INDEX, shard_member_path

__all__ = [
    "FORMAT",
    "INDEX",
    "INDEX_COLUMNS",
    "MANIFEST",
    "PLAN",
    "is_prepared",
    "read_index",
    "read_manifest",
    "read_sample",
    "shard_name",
    "shard_urls",
]

FORMAT = "radalign-shards"
VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"
INDEX = SHARD_INDEX
INDEX_COLUMNS: tuple[str, ...] = (
    "key",
    "shard",
    "member",
    "offset",
    "size",
    "json_offset",
    "json_size",
    "height",
    "width",
    "id",
    "report",
    "sections",
    "patient_id",
    "study_id",
    "view",
    "split",
    "labels",
    "study_date",
    "source",
    "source_path",
    "extra",
)


def shard_name(i: int) -> str:
    """``shard-000003.tar`` for ``i = 3``."""
    return f"shard-{i:06d}.tar"


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``radalign data prepare`` (finished or not)."""
    path = Path(path)
    return path.is_dir() and ((path / MANIFEST).is_file() or (path / PLAN).is_file())


def read_manifest(folder: str | os.PathLike) -> dict:
    """``manifest.json`` of a finished prepared folder; :class:`InputError` otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        if (folder / PLAN).is_file():
            raise InputError(
                folder, "incomplete prepare", "no manifest.json yet: rerun the same prepare"
            )
        raise InputError(folder, "not a prepared folder", "no manifest.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, "unreadable manifest", str(exc)) from None
    if manifest.get("format") != FORMAT:
        raise InputError(path, "not a prepared folder", f"format is not {FORMAT!r}")
    if int(manifest.get("version", 0)) > VERSION:
        raise InputError(path, "unsupported shard version", f"{manifest.get('version')}")
    return manifest


def read_index(folder: str | os.PathLike) -> pd.DataFrame:
    """``index.parquet`` of a finished prepared folder, checked for its columns."""
    folder = Path(folder)
    read_manifest(folder)
    path = folder / INDEX
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, "unreadable shard index", str(exc)) from None
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, "unreadable shard index", f"missing columns {missing}")
    return df


def shard_urls(folder: str | os.PathLike) -> list[str]:
    """The shard files of a finished prepared folder, in order (for ``webdataset.WebDataset``)."""
    manifest = read_manifest(folder)
    return [str(Path(folder) / name) for name in manifest["shards"]]


def read_sample(folder: str | os.PathLike, key: str) -> tuple[np.ndarray, dict]:
    """The stored pixels (uint8/uint16, as written) and JSON metadata of sample ``key``."""
    import cv2

    folder = Path(folder)
    df = read_index(folder)
    row = df[df["key"] == str(key)]
    if row.empty:
        raise KeyError(f"{folder}: no sample {key!r}")
    r = row.iloc[0]
    shard = folder / r["shard"]
    with open(shard, "rb") as fh:
        fh.seek(int(r["offset"]))
        png = fh.read(int(r["size"]))
        fh.seek(int(r["json_offset"]))
        meta = json.loads(fh.read(int(r["json_size"])).decode("utf-8"))
    pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputError(shard_member_path(shard, r["member"]), "truncated or corrupt image")
    return pixels, meta
