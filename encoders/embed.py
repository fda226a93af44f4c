"""Batch embedding of scans and reports, skipping (and listing) inputs that cannot be read.

Used by ``radalign embed`` and by the index, zero-shot and flag commands: decoding runs in
DataLoader workers, bad files come back as skip records instead of exceptions, and the job
finishes with whatever could be read.  The encoders run in ``precision`` (default ``auto``: bf16
where the hardware runs it natively and fast, else fp32; see :mod:`radalign.encoders.precision`);
the vectors come back as float32 either way (re-normalised in float32 after a bf16 forward).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from radalign.encoders.atomic import atomic_write
from radalign.encoders.errors import InputError, SkipLog
from radalign.encoders.precision import Precision, autocast, resolve_precision
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


@dataclass
class Embeddings:
    """Vectors ``[N, E]`` (float32, L2-normalised) with one metadata row each, and the skips."""

    vectors: np.ndarray
    metadata: pd.DataFrame
    skipped: SkipLog = field(default_factory=SkipLog)
    fingerprint: str = ""
    kind: str = "image"
    precision: str = "fp32"
    """The precision the encoder ran in (``fp32`` or ``bf16``)."""

    def __len__(self) -> int:
        return len(self.vectors)


class _ImageFiles(Dataset):
    """Decodes and preprocesses one scan per item; a bad file becomes ``("skip", ...)``."""

    def __init__(self, paths: Sequence[Path], transform, window: str) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.window = window

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from radalign.encoders.imageio import load_image

        try:
            return ("ok", i, self.transform(load_image(self.paths[i], window=self.window)))
        except InputError as err:
            return ("skip", i, (err.path, err.reason, err.detail))


def _collate(items):
    ok = [(i, x) for tag, i, x in items if tag == "ok"]
    skips = [x for tag, _, x in items if tag == "skip"]
    idx = [i for i, _ in ok]
    pixels = torch.stack([x for _, x in ok]) if ok else None
    return idx, pixels, skips


def iter_image_batches(
    paths: Sequence[Path],
    transform,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    window: str = "header",
) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[str, str, str]]]]:
    """Yield ``(indices into paths, pixels or None, skips)`` batches of decoded scans."""
    loader = DataLoader(
        _ImageFiles(paths, transform, window),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    yield from loader


@torch.inference_mode()
def embed_images(
    model,
    paths: Sequence[str | Path],
    ids: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    window: str = "header",
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: str | Precision = "auto",
) -> Embeddings:
    """Global embeddings of scans (DICOM/PNG/JPG); unreadable files are skipped and listed.

    ``ids`` default to the paths as given; ``precision``: ``auto``, ``bf16`` or ``fp32`` (or a
    resolved :class:`~radalign.encoders.precision.Precision`).
    """
    paths = [Path(p) for p in paths]
    ids = [str(i) for i in ids] if ids is not None else [str(p) for p in paths]
    device = torch.device(device) if device is not None else model.device
    precision = resolve_precision(precision, device)
    model.eval()
    transform = model.transform(train=False)
    vectors, kept, skipped = [], [], SkipLog()
    bar = tqdm(total=len(paths), desc="embedding scans", unit="img", disable=not progress)
    for idx, pixels, skips in iter_image_batches(
        paths, transform, batch_size=batch_size, num_workers=num_workers, window=window
    ):
        for s in skips:
            skipped.add(*s)
        if pixels is not None:
            with autocast(device, precision):
                out = model.encode_image(pixels.to(device))
            vectors.append(_float32(out, precision))
            kept += idx
        bar.update(len(idx) + len(skips))
    bar.close()
    meta = pd.DataFrame({"id": [ids[i] for i in kept], "path": [str(paths[i]) for i in kept]})
    return Embeddings(
        _stack(vectors, model), meta, skipped, model.fingerprint(), "image", precision.name
    )


@torch.inference_mode()
def embed_texts(
    model,
    texts: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    text_cache=None,
    precision: str | Precision = "auto",
) -> Embeddings:
    """Global embeddings of report texts; empty or non-UTF-8 texts are skipped and listed.

    Reports are batched shortest first (little padding) and returned in the given order.
    ``text_cache`` (a :class:`~radalign.encoders.frozen_text.FrozenTextCache` of this model's
    report tower, valid only while that tower is frozen) supplies tower outputs it already holds.
    ``precision`` as in :func:`embed_images`.
    """
    ids = [str(i) for i in (ids if ids is not None else range(len(texts)))]
    device = torch.device(device) if device is not None else model.device
    precision = resolve_precision(precision, device)
    model.eval()
    good, skipped = [], SkipLog()
    for i, text in zip(ids, texts):
        try:
            good.append((i, check_report_text(text, i)))
        except InputError as err:
            skipped.add_error(err)
    order = sorted(range(len(good)), key=lambda n: len(good[n][1]))
    vectors = []
    for start in tqdm(
        range(0, len(order), batch_size),
        desc="embedding reports",
        unit="batch",
        disable=not progress,
    ):
        chunk = [good[n][1] for n in order[start : start + batch_size]]
        with autocast(device, precision):
            if text_cache is not None:
                out = model.text_features({}, text_cache(chunk, device)).embedding
            else:
                tokens = {k: v.to(device) for k, v in model.tokenize(chunk).items()}
                out = model.encode_text(tokens)
        vectors.append(_float32(out, precision))
    x = _stack(vectors, model)
    if len(order):
        x = x[np.argsort(order)]
    meta = pd.DataFrame({"id": [i for i, _ in good], "text": [t for _, t in good]})
    return Embeddings(x, meta, skipped, model.fingerprint(), "report", precision.name)


@dataclass
class PairEmbeddings:
    """Image and report embeddings of (image, report) pairs, aligned row by row.

    ``ids`` are the pairs whose scan *and* report embedded, in the order given; ``image`` and
    ``text`` are their vectors ``[N, E]``; ``images``/``texts`` keep every embedded item (a scan
    whose report failed is still in ``images``); ``skipped`` lists both sides' skips."""

    ids: list[str]
    image: np.ndarray
    text: np.ndarray
    images: Embeddings
    texts: Embeddings
    skipped: SkipLog


def embed_pairs(
    model,
    records: Sequence,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    text_cache=None,
    precision: str | Precision = "auto",
) -> PairEmbeddings:
    """Embed the scans and reports of ``records`` (anything with ``id``, ``image_path`` and
    ``report``) once each and align them: the one path every pair-level evaluation uses."""
    records = list(records)
    with_image = [r for r in records if r.image_path is not None]
    common = {"device": device, "progress": progress, "precision": precision}
    images = embed_images(
        model,
        [r.image_path for r in with_image],
        [str(r.id) for r in with_image],
        batch_size=batch_size,
        num_workers=num_workers,
        **common,
    )
    texts = embed_texts(
        model,
        [r.report for r in records],
        [str(r.id) for r in records],
        text_cache=text_cache,
        **common,
    )
    image_row = {i: n for n, i in enumerate(images.metadata["id"])}
    text_row = {i: n for n, i in enumerate(texts.metadata["id"])}
    ids = [str(r.id) for r in records if str(r.id) in image_row and str(r.id) in text_row]
    skipped = SkipLog()
    skipped.rows.extend(images.skipped.rows + texts.skipped.rows)
    image = images.vectors[np.asarray([image_row[i] for i in ids], dtype=np.int64)]
    text = texts.vectors[np.asarray([text_row[i] for i in ids], dtype=np.int64)]
    return PairEmbeddings(ids, image, text, images, texts, skipped)


def _float32(vectors: torch.Tensor, precision: Precision) -> np.ndarray:
    """Float32 numpy rows; after a reduced-precision forward re-normalised in float32."""
    vectors = vectors.float()
    if precision.reduced:
        vectors = F.normalize(vectors, dim=-1)
    return vectors.cpu().numpy()


_LETTER = re.compile(r"[^\W\d_]")


def check_report_text(text, where: str = "") -> str:
    """The report stripped, or ``InputError`` for empty, missing or non-UTF-8 text and for text
    without a single letter ("report has no words")."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        raise InputError(where, "empty report")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(where, "non-UTF-8 text") from None
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates from a file read with surrogateescape
        raise InputError(where, "non-UTF-8 text") from None
    text = text.strip()
    if not text:
        raise InputError(where, "empty report")
    if not _LETTER.search(text):
        raise InputError(where, "report has no words")
    return text


def write_embeddings(emb: Embeddings, out: str | Path) -> list[Path]:
    """Write ``out.parquet`` (ids, metadata, ``embedding`` column) or ``out.npy`` + ``.parquet``.

    ``skipped.csv`` goes next to the output. All writes are atomic. Returns the written paths.
    """
    out = Path(out)
    meta = emb.metadata.reset_index(drop=True)
    schema_meta = {
        "radalign": json.dumps(
            {
                "fingerprint": emb.fingerprint,
                "kind": emb.kind,
                "dim": int(emb.vectors.shape[1]),
                "precision": emb.precision,
            }
        )
    }
    written = []
    check_output(out)
    if out.suffix == ".npy":
        with atomic_write(out) as fh:
            np.save(fh, emb.vectors)
        written.append(out)
        table = pa.Table.from_pandas(meta, preserve_index=False)
        meta_path = out.with_suffix(".parquet")
    else:  # .parquet
        table = pa.Table.from_pandas(meta, preserve_index=False)
        flat = pa.array(emb.vectors.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, int(emb.vectors.shape[1]))
        table = table.append_column("embedding", column)
        meta_path = out
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **schema_meta})
    with atomic_write(meta_path) as fh:
        pq.write_table(table, fh)
    written.append(meta_path)
    written.append(emb.skipped.write_csv(out.parent / "skipped.csv"))
    return written


def check_output(out: Path) -> None:
    """``ValueError`` unless ``out`` names a file :func:`write_embeddings` can write."""
    if out.suffix not in (".parquet", ".npy"):
        raise ValueError(f"--out must end in .parquet or .npy, not {out.name!r}")


def read_embeddings(path: str | Path) -> Embeddings:
    """Read what :func:`write_embeddings` wrote (``.parquet`` or ``.npy``)."""
    path = Path(path)
    if path.suffix == ".npy":
        vectors = np.load(path)
        table = pq.read_table(path.with_suffix(".parquet"))
    else:
        table = pq.read_table(path)
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        vectors = column.flatten().to_numpy().reshape(-1, dim).astype(np.float32)
        table = table.drop(["embedding"])
    info = json.loads((table.schema.metadata or {}).get(b"radalign", b"{}"))
    return Embeddings(
        vectors,
        table.to_pandas(),
        SkipLog(),
        info.get("fingerprint", ""),
        info.get("kind", ""),
        info.get("precision", "fp32"),
    )


def _stack(vectors: list[np.ndarray], model) -> np.ndarray:
    if vectors:
        return np.concatenate(vectors).astype(np.float32)
    return np.zeros((0, model.config.embed_dim), np.float32)
