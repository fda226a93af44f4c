"""FAISS mechanics of IVF indices whose inverted lists live on disk (larger than memory).

An on-disk index is an ordinary trained IVF index (``IVF{nlist},PQ{m}x8``, ``IVF{nlist},SQ8``,
``IVF{nlist},Flat``, ...) whose inverted lists (the codes and the 8-byte ids of every vector)
are a ``faiss.OnDiskInvertedLists`` file, ``index.ivfdata``, memory-mapped read-only.  Resident
memory is the coarse quantiser, the codebooks and the list table; the lists are paged in by the
OS as queries probe them (see :func:`radalign.retrieval.index_choice.ondisk_resident_bytes`).

Building never holds all vectors: the quantiser is trained on a uniform sample drawn in one pass
over the chunks (:func:`reservoir_sample`), then the chunks are added to in-memory blocks of
``block_rows`` vectors, each block is written to a scratch file, and the blocks are merged into
the ``.ivfdata`` file with :func:`faiss.contrib.ondisk.merge_ondisk` (FAISS maps the blocks, so
they need not fit in RAM either).

:class:`radalign.retrieval.index.Index` uses these functions; searching is unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

VectorSource = (
    np.ndarray | Sequence[np.ndarray | str | os.PathLike] | Callable[[], Iterable[np.ndarray]]
)
"""Vectors to index in chunks: a 2-D array (e.g. ``np.load(path, mmap_mode="r")``), a sequence
of 2-D arrays or ``.npy`` paths (opened memory-mapped, e.g. embedding parts), or a function that
returns a fresh iterable of 2-D arrays on each call (read twice: once to sample, once to add)."""

DEFAULT_CHUNK_ROWS = 16_384  # normalised in float64: 16384 x 512 x (4 + 8 + 4) B = 128 MiB
DEFAULT_BLOCK_ROWS = 1_000_000

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "DEFAULT_CHUNK_ROWS",
    "VectorSource",
    "add_on_disk",
    "chunk_reader",
    "on_disk_lists",
    "open_on_disk",
    "point_lists_at",
    "reservoir_sample",
]


def chunk_reader(
    source: VectorSource, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Callable[[], Iterator[np.ndarray]]:
    """A function returning a fresh iterator over ``source``'s chunks (2-D arrays)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if isinstance(source, np.ndarray):

        def of_array() -> Iterator[np.ndarray]:
            _check_2d(source, "vectors")
            for s in range(0, len(source), chunk_rows):
                yield source[s : s + chunk_rows]

        return of_array
    if callable(source):

        def of_callable() -> Iterator[np.ndarray]:
            it = source()
            if it is None:
                raise TypeError("the vector source function returned None, not an iterable")
            for i, chunk in enumerate(it):
                yield _check_2d(np.asarray(chunk), f"chunk {i}")

        return of_callable
    if isinstance(source, Iterator):
        raise TypeError(
            "a one-shot iterator cannot be read twice (sample, then add): pass an array, a "
            "list of arrays or .npy paths, or a function returning a fresh iterable"
        )
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        parts = list(source)

        def of_parts() -> Iterator[np.ndarray]:
            for i, part in enumerate(parts):
                arr = _open_part(part, i)
                for s in range(0, len(arr), chunk_rows):
                    yield arr[s : s + chunk_rows]

        return of_parts
    raise TypeError(f"cannot read vectors from a {type(source).__name__}")


def _open_part(part: np.ndarray | str | os.PathLike, i: int) -> np.ndarray:
    if isinstance(part, np.ndarray):
        return _check_2d(part, f"part {i}")
    path = Path(part)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vector part {i} not found")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a .npy array of vectors ({e})") from e
    return _check_2d(arr, str(path))


def _check_2d(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [N, dim], got shape {x.shape}")
    return x


def reservoir_sample(
    chunks: Iterable[np.ndarray], size: int, seed: int = 0
) -> tuple[np.ndarray, int, int]:
    """A uniform sample of at most ``size`` rows from one pass over ``chunks``.

    Every row gets a random key and the ``size`` smallest keys win, so the total count need not
    be known in advance.  Returns ``(sample float32 [<= size, dim] in source order, n, dim)``."""
    if size < 1:
        raise ValueError(f"sample size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    keys = np.empty(0, dtype=np.float64)
    rows = np.empty(0, dtype=np.int64)
    vecs: np.ndarray | None = None
    n, dim = 0, None
    for chunk in chunks:
        if dim is None:
            dim = chunk.shape[1]
            vecs = np.empty((0, dim), dtype=np.float32)
        elif chunk.shape[1] != dim:
            raise ValueError(f"chunk dimension {chunk.shape[1]} differs from the first ({dim})")
        k = rng.random(len(chunk))
        cut = np.inf if len(keys) < size else keys.max()
        take = np.flatnonzero(k < cut)
        if len(take):
            keys = np.concatenate([keys, k[take]])
            rows = np.concatenate([rows, n + take])
            vecs = np.concatenate([vecs, np.asarray(chunk[take], dtype=np.float32)])
            if len(keys) > size:
                keep = np.argpartition(keys, size - 1)[:size]
                keys, rows, vecs = keys[keep], rows[keep], vecs[keep]
        n += len(chunk)
    if dim is None or vecs is None:
        return np.empty((0, 0), dtype=np.float32), 0, 0
    order = np.argsort(rows)
    return np.ascontiguousarray(vecs[order]), n, int(dim)


def add_on_disk(
    trained: faiss.Index,
    chunks: Iterable[np.ndarray],
    ivfdata: Path,
    workdir: Path,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> faiss.Index:
    """Add ``chunks`` (prepared float32 vectors; ids are row numbers 0, 1, ...) to an empty copy
    of the trained IVF index, with the inverted lists written to ``ivfdata``.

    At most ``block_rows`` codes are in RAM at a time; the blocks go to the scratch directory
    ``workdir`` (created, and deleted afterwards) and are merged into ``ivfdata``.  Returns the
    index with on-disk lists."""
    ivf = faiss.try_extract_index_ivf(trained)
    if ivf is None:
        raise ValueError("on-disk inverted lists need an IVF index (e.g. 'IVF4096,PQ64x8')")
    if not isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists):
        raise ValueError(
            "this IVF index keeps its lists in blocks (fast-scan?), which FAISS cannot store "
            "on disk; use PQ{m}x8, SQ8 or Flat codes"
        )
    if not trained.is_trained or trained.ntotal:
        raise ValueError("add_on_disk needs a trained, empty index")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    workdir.mkdir(parents=True)
    blocks: list[str] = []
    block = faiss.clone_index(trained)
    n = 0

    def flush() -> None:
        name = str(workdir / f"block-{len(blocks):05d}.faiss")
        faiss.write_index(block, name)
        blocks.append(name)
        block.reset()

    try:
        for chunk in chunks:
            block.add_with_ids(chunk, np.arange(n, n + len(chunk), dtype=np.int64))
            n += len(chunk)
            if block.ntotal >= block_rows:
                flush()
        if block.ntotal or not blocks:
            flush()
        out = faiss.clone_index(trained)
        merge_ondisk(out, blocks, str(ivfdata))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if out.ntotal != n:
        raise RuntimeError(f"merged {out.ntotal} vectors into {ivfdata}, expected {n}")
    _no_prefetch_threads(out)
    return out


def on_disk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The index's on-disk inverted lists, or None for an in-memory index."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def open_on_disk(index_file: Path, ivfdata: Path) -> faiss.Index:
    """Read an index written with on-disk lists and map its lists from ``ivfdata`` (read-only).

    The lists' file name stored inside ``index_file`` is ignored (the directory may have moved
    since it was written)."""
    index = faiss.read_index(str(index_file), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = on_disk_lists(index)
    if lists is None:
        raise ValueError(f"{index_file} has no on-disk inverted lists")
    size = ivfdata.stat().st_size
    if size != lists.totsize:
        raise ValueError(f"{ivfdata} has {size} bytes, the index expects {lists.totsize}")
    lists.filename = str(ivfdata)
    lists.do_mmap()
    _no_prefetch_threads(index)
    return index


def _no_prefetch_threads(index: faiss.Index) -> None:
    """FAISS starts ``prefetch_nthread`` (32) threads per search to touch the probed lists,
    which cost ~1 ms a query even when they are cached; let the search page them in itself."""
    on_disk_lists(index).prefetch_nthread = 0


def point_lists_at(index: faiss.Index, ivfdata: Path) -> None:
    """Record that the (unchanged) lists file now lives at ``ivfdata`` (after a move or copy)."""
    lists = on_disk_lists(index)
    if lists is None:
        raise ValueError("not an index with on-disk inverted lists")
    lists.filename = str(ivfdata)
