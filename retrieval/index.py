"""An embedding store with a FAISS index: vectors, one metadata row per vector, and a manifest.

On disk an :class:`Index` is a directory::

    vectors.npy       float32 [N, dim], L2-normalised unless built with normalize=False;
                      memory-mapped on load; used to rebuild and for exact re-ranking
    metadata.parquet  one row per vector: ``id`` (unique str) plus any user columns
                      (study/patient ids, report text or pointer, source path, modality, ...)
    index.faiss       the FAISS index (``faiss.write_index``)
    index.ivfdata     only for on-disk indices (factory ending in ``,OnDisk``): the inverted
                      lists, memory-mapped read-only (:mod:`radalign.retrieval.ondisk`)
    index.json        manifest: format version, dim, n, factory string, metric, normalize flag,
                      search params, embedding-model fingerprint, timestamps, radalign version,
                      and size + sha256 of every other file.  Written last.

The directory is built in a temporary sibling and swapped in with
:func:`radalign.encoders.atomic.atomic_dir`; ``index.json`` is written last inside it, so a killed
build never looks whole, and :meth:`Index.load` refuses a directory without a valid ``index.json``
or whose files do not match its checksums.

Search is by inner product (cosine similarity on normalised vectors).  A trailing ``,RFlat`` in
the factory string (see :mod:`radalign.retrieval.index_choice`) is implemented here: FAISS returns
``k * k_factor`` candidates from the compressed index and they are re-scored exactly against the
stored vectors, so the full-precision vectors are not held twice.

Indices larger than memory: :meth:`Index.build_on_disk` reads the vectors in chunks (an array,
memory-mapped ``.npy`` parts, or a function yielding arrays), trains the IVF quantiser on a
sample and writes the inverted lists to ``index.ivfdata``; :meth:`Index.load` maps them and
:meth:`Index.search` is unchanged.  On-disk indices are read-only (rebuild to add vectors).

Not thread-safe for concurrent :meth:`Index.add`; concurrent searches are serialised.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from radalign.encoders.atomic import atomic_dir
from radalign.encoders.errors import InputError
from radalign.retrieval.index_choice import (
    ON_DISK_SUFFIX,
    choose_index,
    default_search_params,
    split_refine,
    split_storage,
)
from radalign.retrieval.ondisk import (
    DEFAULT_BLOCK_ROWS,
    DEFAULT_CHUNK_ROWS,
    VectorSource,
    add_on_disk,
    chunk_reader,
    on_disk_lists,
    open_on_disk,
    point_lists_at,
    reservoir_sample,
)

FORMAT = "radalign-index"
FORMAT_VERSION = 2  # 2: on-disk inverted lists (index.ivfdata); in-RAM indices still write 1
VECTORS_FILE = "vectors.npy"
METADATA_FILE = "metadata.parquet"
FAISS_FILE = "index.faiss"
MANIFEST_FILE = "index.json"
IVFDATA_FILE = "index.ivfdata"
METRIC = "inner_product"
_CHUNK_ROWS = 65_536
_RERANK_BYTES = 64 << 20

__all__ = [
    "DimensionMismatch",
    "EmptyIndexError",
    "FingerprintMismatch",
    "Index",
    "IndexFormatError",
    "SearchResult",
    "train_index",
]


class IndexFormatError(InputError):
    """An index directory that is incomplete, corrupt, or of an unknown format."""


class FingerprintMismatch(InputError):
    """An index built by a different embedding model than the caller expects."""


class EmptyIndexError(ValueError):
    """Building from zero vectors, or searching an index that holds none."""


class DimensionMismatch(ValueError):
    """Vectors or queries whose dimension differs from the index's."""


@dataclass
class SearchResult:
    """Top-k results for Q queries; ``indices`` are row numbers, -1 (id None) where none found."""

    scores: np.ndarray  # [Q, k] float32
    indices: np.ndarray  # [Q, k] int64
    ids: list[list[str | None]]
    metadata: pd.DataFrame = field(repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    def frame(self, i: int) -> pd.DataFrame:
        """Metadata rows retrieved for query ``i``, best first, with ``rank`` and ``score``."""
        rows = self.indices[i]
        keep = rows >= 0
        df = self.metadata.iloc[rows[keep]].copy()
        df.insert(0, "rank", np.arange(int(keep.sum())))
        df["score"] = self.scores[i][keep]
        return df


class Index:
    """Vectors + metadata + FAISS index; build with :meth:`build`, open with :meth:`load`."""

    def __init__(
        self,
        *,
        faiss_index: faiss.Index,
        vectors: np.ndarray,
        metadata: pd.DataFrame,
        factory: str,
        fingerprint: str,
        normalize: bool,
        search_params: Mapping[str, int],
        created: str | None = None,
        updated: str | None = None,
        path: Path | None = None,
    ) -> None:
        self._index = faiss_index
        self._vectors = vectors
        self._metadata = metadata
        self.factory = factory
        self.fingerprint = fingerprint
        self.normalize = normalize
        self._refine = split_refine(factory)[1]
        self._search_params: dict[str, int] = dict(search_params)
        self.created = created or _now()
        self.updated = updated or self.created
        self.path = path
        self._lock = threading.Lock()
        self._row_of: dict[str, int] | None = None
        self._ids = metadata["id"].to_numpy(dtype=object)
        _apply_params(self._index, self._search_params)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metadata: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
        *,
        fingerprint: str,
        factory: str | None = None,
        memory_budget_bytes: int | None = None,
        normalize: bool = True,
        train_sample: int = 200_000,
        search_params: Mapping[str, int] | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> Index:
        """Build in memory.  ``factory`` defaults to :func:`choose_index`; ``metadata`` needs an
        ``id`` column (None: ids ``"0".."N-1"``); ``train_sample`` rows (drawn with ``seed``)
        train IVF/PQ/SQ indices; ``search_params`` override the defaults (nprobe, efSearch,
        k_factor)."""
        x = _prepare_vectors(vectors, None, normalize, "vectors")
        if len(x) == 0:
            raise EmptyIndexError("cannot build an index from 0 vectors")
        meta = _prepare_metadata(metadata, len(x), start=0)
        return cls._from_prepared(
            x,
            meta,
            fingerprint=fingerprint,
            factory=factory,
            memory_budget_bytes=memory_budget_bytes,
            normalize=normalize,
            train_sample=train_sample,
            search_params=search_params,
            seed=seed,
            threads=threads,
        )

    @classmethod
    def empty(
        cls,
        dim: int,
        *,
        fingerprint: str,
        factory: str = "Flat",
        normalize: bool = True,
        search_params: Mapping[str, int] | None = None,
    ) -> Index:
        """An index with no vectors, filled with :meth:`add` (only for factories that need no
        training, e.g. ``Flat`` or ``HNSW32``; trained ones need :meth:`build`)."""
        if dim <= 0:
            raise ValueError(f"dimension must be positive, got {dim}")
        if split_storage(factory)[1]:
            raise ValueError(f"{factory!r} is an on-disk index: use Index.build_on_disk")
        index = _new_faiss(int(dim), factory)
        if not index.is_trained:
            raise ValueError(
                f"{factory!r} must be trained on data: use Index.build(vectors, ...) instead"
            )
        params = default_search_params(factory)
        params.update(search_params or {})
        return cls(
            faiss_index=index,
            vectors=np.empty((0, dim), dtype=np.float32),
            metadata=_prepare_metadata(None, 0, start=0),
            factory=factory,
            fingerprint=fingerprint,
            normalize=normalize,
            search_params=params,
        )

    @classmethod
    def _from_prepared(
        cls,
        x: np.ndarray,
        meta: pd.DataFrame,
        *,
        factory: str | None,
        memory_budget_bytes: int | None,
        **opts: Any,
    ) -> Index:
        """Build from prepared vectors; ``opts`` are the keywords of :meth:`build_on_disk`
        (fingerprint, normalize, train_sample, search_params, seed, threads, created)."""
        n, dim = x.shape
        factory = factory or choose_index(n, dim, memory_budget_bytes)
        if split_storage(factory)[1]:
            return cls._on_disk_in_scratch(
                x, meta, factory=factory, memory_budget_bytes=memory_budget_bytes, **opts
            )
        index = _new_faiss(dim, factory)
        train_sample = opts["train_sample"]
        with _omp_threads(opts["threads"]):
            if not index.is_trained:
                rng = np.random.default_rng(opts["seed"])
                if n > train_sample:
                    rows = np.sort(rng.choice(n, size=train_sample, replace=False))
                    sample = np.ascontiguousarray(x[rows])
                else:
                    sample = x
                _train(index, sample, factory)
            for s in range(0, n, _CHUNK_ROWS * 4):
                index.add(x[s : s + _CHUNK_ROWS * 4])
        params = default_search_params(factory)
        params.update(opts["search_params"] or {})
        return cls(
            faiss_index=index,
            vectors=x,
            metadata=meta,
            factory=factory,
            fingerprint=opts["fingerprint"],
            normalize=opts["normalize"],
            search_params=params,
            created=opts.get("created"),
        )

    @classmethod
    def build_on_disk(
        cls,
        vectors: VectorSource,
        metadata: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
        out: str | os.PathLike,
        *,
        fingerprint: str,
        factory: str | None = None,
        memory_budget_bytes: int | None = None,
        normalize: bool = True,
        train_sample: int = 200_000,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        search_params: Mapping[str, int] | None = None,
        seed: int = 0,
        threads: int | None = None,
        created: str | None = None,
        trained: faiss.Index | None = None,
    ) -> Index:
        """Build an IVF index with on-disk inverted lists and save it at ``out`` (atomically).

        ``vectors`` are read in chunks of ``chunk_rows``, twice (see
        :data:`radalign.retrieval.ondisk.VectorSource`): a uniform sample of ``train_sample``
        rows trains the quantiser, then every chunk is normalised, appended to ``vectors.npy``
        and encoded, at most ``block_rows`` codes in RAM at a time.  ``factory`` is an IVF
        string (``,OnDisk`` is implied; default: ``choose_index(n, dim, on_disk=True)``);
        ``metadata`` as in :meth:`build` (held in RAM).  ``trained``: an already trained, empty
        FAISS IVF index of that ``factory`` to reuse (no sampling pass, no training)."""
        read = chunk_reader(vectors, chunk_rows)
        if trained is None:
            with _omp_threads(threads):
                sample, n, dim = reservoir_sample(read(), train_sample, seed)
        else:
            if not trained.is_trained or trained.ntotal or not factory:
                raise ValueError(
                    "trained= must be a trained FAISS index holding no vectors, passed with "
                    "the factory string it was made from"
                )
            sample, dim = None, int(trained.d)
            n = sum(len(c) for c in read())
        if n == 0:
            raise EmptyIndexError("cannot build an index from 0 vectors")
        meta = _prepare_metadata(metadata, n, start=0)
        factory = split_storage(factory or "")[0] or choose_index(
            n, dim, memory_budget_bytes, on_disk=True
        )
        factory = split_storage(factory)[0] + ON_DISK_SUFFIX
        index = _new_faiss(dim, factory) if trained is None else faiss.clone_index(trained)
        if faiss.try_extract_index_ivf(index) is None:
            raise ValueError(f"{factory!r} is not an IVF index: only IVF lists can live on disk")
        out = Path(out)
        with atomic_dir(out) as tmp, _omp_threads(threads):
            if sample is not None:
                _train(index, _prepare_vectors(sample, dim, normalize, "sampled vectors"), factory)
                del sample
            with open(tmp / VECTORS_FILE, "wb") as store:  # plain writes: no dirty mapped pages
                np.lib.format.write_array_header_1_0(
                    store, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)}
                )

                def prepared() -> Iterator[np.ndarray]:
                    s = 0
                    for chunk in read():
                        what = f"vectors[{s}:{s + len(chunk)}]"
                        x = _prepare_vectors(chunk, dim, normalize, what)
                        if s + len(x) > n:
                            raise ValueError(f"the vector source gave over {n} rows when re-read")
                        store.write(x.tobytes())
                        s += len(x)
                        yield x
                    if s != n:
                        raise ValueError(f"the vector source gave {s} rows when re-read, not {n}")

                on_disk = add_on_disk(
                    index, prepared(), tmp / IVFDATA_FILE, tmp / "blocks", block_rows=block_rows
                )
            params = default_search_params(factory)
            params.update(search_params or {})
            built = cls(
                faiss_index=on_disk,
                vectors=_map_vectors(tmp / VECTORS_FILE),
                metadata=meta,
                factory=factory,
                fingerprint=fingerprint,
                normalize=normalize,
                search_params=params,
                created=created,
            )
            built._write_dir(tmp)
        built._moved_to(out)
        return built

    @classmethod
    def _on_disk_in_scratch(cls, x: np.ndarray, meta: pd.DataFrame, **kw: Any) -> Index:
        """:meth:`build_on_disk` into a temporary directory (``$TMPDIR``), removed with the
        object; :meth:`save` links or copies the files to their place."""
        scratch = Path(tempfile.mkdtemp(prefix="radalign-ondisk-"))
        try:
            built = cls.build_on_disk(x, meta, scratch / "index", **kw)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        built.path = None
        weakref.finalize(built, shutil.rmtree, scratch, True)
        return built

    def rebuild(
        self,
        factory: str | None = None,
        *,
        memory_budget_bytes: int | None = None,
        train_sample: int = 200_000,
        search_params: Mapping[str, int] | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> Index:
        """A new in-memory index over the same vectors and metadata (e.g. another factory)."""
        return Index._from_prepared(
            np.ascontiguousarray(self._vectors, dtype=np.float32),
            self._metadata.copy(),
            fingerprint=self.fingerprint,
            factory=factory,
            memory_budget_bytes=memory_budget_bytes,
            normalize=self.normalize,
            train_sample=train_sample,
            search_params=search_params,
            seed=seed,
            threads=threads,
            created=self.created,
        )

    def add(
        self,
        vectors: np.ndarray,
        metadata: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
        *,
        threads: int | None = None,
    ) -> Index:
        """Append vectors and their metadata rows (trained indices are not retrained; on-disk
        indices are read-only: rebuild them with :meth:`build_on_disk`)."""
        if self.on_disk:
            raise ValueError(
                "cannot append to an on-disk index (its inverted lists are a read-only file): "
                "rebuild it over all vectors with Index.build_on_disk or "
                "'radalign index build --on-disk'"
            )
        x = _prepare_vectors(vectors, self.dim, self.normalize, "vectors")
        meta = _prepare_metadata(metadata, len(x), start=len(self))
        if len(x) == 0:
            return self
        row_of = self._row_index()
        clash = [i for i in meta["id"] if i in row_of]
        if clash:
            raise ValueError(
                f"{len(clash)} id(s) already in the index, e.g. {clash[:5]}; ids must be unique"
            )
        with self._lock, _omp_threads(threads):
            self._index.add(x)
            self._vectors = np.concatenate([np.asarray(self._vectors), x])
            if len(self._metadata):
                self._metadata = pd.concat([self._metadata, meta], ignore_index=True)
            else:
                self._metadata = meta
            self._ids = self._metadata["id"].to_numpy(dtype=object)
            self._row_of = None
            self.updated = _now()
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index directory atomically (``index.json`` last); returns the path."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self._write_dir(tmp)
        self._moved_to(path)
        return path

    def _write_dir(self, tmp: Path) -> None:
        """Write the index's files into the empty-or-partial directory ``tmp``, ``index.json``
        last.  ``vectors.npy`` / ``index.ivfdata`` already there as this index's own files (an
        on-disk build writes them first) are kept; on-disk lists are hard-linked or copied."""
        names = [VECTORS_FILE, METADATA_FILE, FAISS_FILE]
        if _maps_file(self._vectors, tmp / VECTORS_FILE):
            _fsync_file(tmp / VECTORS_FILE)
        else:
            _save_npy(tmp / VECTORS_FILE, self._vectors)
        lists = on_disk_lists(self._index)
        if lists is not None:
            names.append(IVFDATA_FILE)
            dst = tmp / IVFDATA_FILE
            if not (dst.exists() and dst.samefile(lists.filename)):
                _link_or_copy(Path(lists.filename), dst)
            _fsync_file(dst)
        self._metadata.to_parquet(tmp / METADATA_FILE, index=False)
        _fsync_file(tmp / METADATA_FILE)
        faiss.write_index(self._index, str(tmp / FAISS_FILE))
        _fsync_file(tmp / FAISS_FILE)
        manifest = self._manifest({name: _file_info(tmp / name) for name in names})
        with open(tmp / MANIFEST_FILE, "w") as fh:
            json.dump(manifest, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())

    def _moved_to(self, path: Path) -> None:
        """The files now live in ``path`` (the old ones may be gone): map the new ones."""
        if isinstance(self._vectors, np.memmap):
            self._vectors = _map_vectors(path / VECTORS_FILE)
        if self.on_disk:
            point_lists_at(self._index, path / IVFDATA_FILE)
        self.path = path

    def _manifest(self, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from radalign._version import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if self.on_disk else 1,
            "dim": self.dim,
            "n": len(self),
            "factory": self.factory,
            "metric": METRIC,
            "normalize": self.normalize,
            "search_params": self._search_params,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "updated": self.updated,
            "radalign_version": __version__,
            "faiss_version": faiss.__version__,
            "files": files,
        }

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        expected_fingerprint: str | None = None,
        verify: bool = True,
        mmap: bool = True,
    ) -> Index:
        """Open an index directory.  Refuses (``IndexFormatError``) a directory without a valid
        ``index.json`` or whose files fail their size/sha256 check (``verify=False`` checks sizes
        only), and (``FingerprintMismatch``) one built by another model."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no index directory at {path}")
        manifest = _read_manifest(path)
        if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
            raise FingerprintMismatch(
                path,
                "fingerprint mismatch",
                f"the index was built by another model: index fingerprint "
                f"{manifest['fingerprint']!r}, expected {expected_fingerprint!r}; "
                "rebuild the index with the current model",
            )
        for name, info in manifest["files"].items():
            _check_file(path, name, info, verify)
        on_disk = IVFDATA_FILE in manifest["files"]
        try:
            vectors = _map_vectors(path / VECTORS_FILE) if mmap else np.load(path / VECTORS_FILE)
            metadata = pd.read_parquet(path / METADATA_FILE)
            if on_disk:
                index = open_on_disk(path / FAISS_FILE, path / IVFDATA_FILE)
            else:
                index = faiss.read_index(str(path / FAISS_FILE))
        except Exception as e:  # checksums matched, so this is a format problem
            raise IndexFormatError(path, "unreadable index file", str(e)) from e
        n, dim = manifest["n"], manifest["dim"]
        if on_disk != split_storage(manifest["factory"])[1]:
            raise IndexFormatError(
                path,
                "inconsistent index",
                f"factory {manifest['factory']!r} and the files listed in index.json disagree "
                f"about on-disk lists ({IVFDATA_FILE})",
            )
        if vectors.shape != (n, dim) or len(metadata) != n or index.ntotal != n or index.d != dim:
            raise IndexFormatError(
                path,
                "inconsistent index",
                f"index.json says {n} x {dim}; vectors {vectors.shape}, "
                f"{len(metadata)} metadata rows, FAISS index {index.ntotal} x {index.d}",
            )
        return cls(
            faiss_index=index,
            vectors=vectors,
            metadata=metadata,
            factory=manifest["factory"],
            fingerprint=manifest["fingerprint"],
            normalize=manifest["normalize"],
            search_params=manifest["search_params"],
            created=manifest["created"],
            updated=manifest["updated"],
            path=path,
        )

    # ------------------------------------------------------------------ queries
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: int | None = None,
        threads: int | None = None,
    ) -> SearchResult:
        """Top-``k`` rows for each query ([Q, dim] or [dim]) by inner product, best first.

        ``nprobe`` / ``ef_search`` / ``k_factor`` override the stored search params for this
        call.  ``k`` must be between 1 and ``len(self)``."""
        if len(self) == 0:
            raise EmptyIndexError("the index is empty: add vectors before searching")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise ValueError(f"queries must be [Q, dim] or [dim], got shape {q.shape}")
        if q.shape[1] != self.dim:
            raise DimensionMismatch(
                f"query dimension mismatch: got {q.shape[1]}, index has {self.dim}"
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if k > len(self):
            raise ValueError(
                f"k={k} is larger than the index ({len(self)} vectors); use k <= {len(self)}"
            )
        q = _prepare_vectors(q, self.dim, self.normalize, "queries")
        params = dict(self._search_params)
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search), ("k_factor", k_factor)):
            if value is not None:
                if int(value) < 1:
                    raise ValueError(f"{name} must be >= 1, got {value}")
                params[name] = int(value)
        kk = min(len(self), k * params.get("k_factor", 1)) if self._refine else k
        if "efSearch" in params:
            params["efSearch"] = max(params["efSearch"], kk)
        with self._lock, _omp_threads(threads):
            changed = params != self._search_params
            if changed:
                _apply_params(self._index, params)
            try:
                scores, idx = self._index.search(q, kk)
            finally:
                if changed:
                    _apply_params(self._index, self._search_params)
        if self._refine:
            scores, idx = self._rerank(q, idx, k)
        else:
            scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
        idx = idx.astype(np.int64, copy=False)
        ids = np.where(idx >= 0, self._ids[np.maximum(idx, 0)], None).tolist()
        return SearchResult(scores=scores, indices=idx, ids=ids, metadata=self._metadata)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the candidates against the stored vectors; keep the top k."""
        nq, kk = cand.shape
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        step = max(1, _RERANK_BYTES // max(1, kk * self.dim * 4))
        for s in range(0, nq, step):
            c = cand[s : s + step]
            valid = c >= 0
            vecs = np.asarray(self._vectors[np.maximum(c, 0).ravel()], dtype=np.float32)
            vecs = vecs.reshape(len(c), kk, self.dim)
            sc = np.matmul(vecs, q[s : s + step, :, None])[..., 0]
            sc[~valid] = -np.inf
            order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            top_s = np.take_along_axis(sc, order, axis=1)
            top_i = np.take_along_axis(c, order, axis=1)
            out_s[s : s + step, : order.shape[1]] = top_s
            out_i[s : s + step, : order.shape[1]] = np.where(np.isfinite(top_s), top_i, -1)
        return out_s, out_i

    def lookup(self, ids: str | Sequence[str]) -> pd.DataFrame:
        """Metadata rows for ``ids`` in the given order (index = row number); KeyError if unknown."""
        if isinstance(ids, str):
            ids = [ids]
        row_of = self._row_index()
        missing = [i for i in ids if str(i) not in row_of]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in the index, e.g. {missing[:5]}")
        return self._metadata.iloc[[row_of[str(i)] for i in ids]]

    def set_search_params(self, **params: int) -> None:
        """Change the stored search params (e.g. ``nprobe=32``); saved with the index."""
        new = {**self._search_params, **{k: int(v) for k, v in params.items()}}
        with self._lock:
            _apply_params(self._index, new)
            self._search_params = new

    # ------------------------------------------------------------------ accessors
    def _row_index(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {str(i): r for r, i in enumerate(self._ids)}
        return self._row_of

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return (
            f"Index(n={len(self)}, dim={self.dim}, factory={self.factory!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def metric(self) -> str:
        return METRIC

    @property
    def metadata(self) -> pd.DataFrame:
        return self._metadata

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    @property
    def on_disk(self) -> bool:
        """True when the inverted lists are the memory-mapped file ``index.ivfdata``."""
        return on_disk_lists(self._index) is not None

    @property
    def search_params(self) -> dict[str, int]:
        return dict(self._search_params)

    @property
    def faiss_index(self) -> faiss.Index:
        """The FAISS index (without the ``RFlat`` stage, which radalign runs itself)."""
        return self._index

    def index_bytes(self) -> int:
        """Serialized size of the FAISS index (the vectors for re-ranking not included); for an
        on-disk index, the part held in RAM (quantiser, codebooks, list table), the lists being
        paged in from ``index.ivfdata``."""
        return int(faiss.serialize_index(self._index).nbytes)


# ---------------------------------------------------------------------- helpers
def train_index(
    factory: str, sample: np.ndarray, *, normalize: bool = True, threads: int | None = None
) -> faiss.Index:
    """A trained, empty FAISS index for ``factory`` (radalign suffixes removed), trained on
    ``sample`` the way :meth:`Index.build` trains; pass it to ``Index.build_on_disk(trained=)``
    to reuse one training for several builds."""
    x = _prepare_vectors(sample, None, normalize, "sample")
    if len(x) == 0:
        raise EmptyIndexError("cannot train on 0 vectors")
    index = _new_faiss(x.shape[1], factory)
    with _omp_threads(threads):
        _train(index, x, factory)
    return index


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


def _new_faiss(dim: int, factory: str) -> faiss.Index:
    """An untrained FAISS index for ``factory`` (radalign's suffixes removed), tuned for training."""
    base, _ = split_refine(factory)
    try:
        index = faiss.index_factory(dim, base, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"FAISS cannot build index_factory string {factory!r}: {e}") from e
    _tune_training(index)
    return index


def _train(index: faiss.Index, sample: np.ndarray, factory: str) -> None:
    if index.is_trained:
        return
    try:
        index.train(sample)
    except RuntimeError as e:
        raise ValueError(
            f"training {factory!r} on {len(sample)} vectors failed (too few vectors "
            f"for this index? choose a smaller nlist/PQ or 'Flat'): {e}"
        ) from e


def _tune_training(index: faiss.Index) -> None:
    """Skip polysemous training (unused, slow) and cap PQ k-means at 128 points per centroid."""
    ivf = faiss.try_extract_index_ivf(index)
    target = faiss.downcast_index(ivf) if ivf is not None else index
    if hasattr(target, "do_polysemous_training"):
        target.do_polysemous_training = False
    pq = getattr(target, "pq", None)
    if pq is not None and hasattr(pq, "cp"):
        pq.cp.max_points_per_centroid = 128


def _apply_params(index: faiss.Index, params: Mapping[str, int]) -> None:
    ps = faiss.ParameterSpace()
    for name, value in params.items():
        if name == "k_factor":  # radalign's own refine stage
            continue
        try:
            ps.set_index_parameter(index, name, float(value))
        except RuntimeError as e:
            raise ValueError(f"search parameter {name}={value} does not apply to this index") from e


def _prepare_vectors(x: Any, dim: int | None, normalize: bool, what: str) -> np.ndarray:
    """float32, C-contiguous, 2-D, finite, optionally L2-normalised (always a new array)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [N, dim], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise DimensionMismatch(f"{what} dimension mismatch: got {x.shape[1]}, index has {dim}")
    if x.shape[1] == 0:
        raise ValueError(f"{what} have dimension 0")
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, len(x), _CHUNK_ROWS):
        block = np.asarray(x[s : s + _CHUNK_ROWS], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = ~np.isfinite(norms)
        if bad.any():
            row = s + int(np.argmax(bad))
            raise ValueError(f"{what} contain NaN or infinite values (first at row {row})")
        if normalize:
            zero = norms == 0
            if zero.any():
                row = s + int(np.argmax(zero))
                raise ValueError(f"{what} contain an all-zero vector (row {row}): cannot normalise")
            block = block / norms[:, None]
        out[s : s + _CHUNK_ROWS] = block
    return out


def _prepare_metadata(
    metadata: pd.DataFrame | Sequence[Mapping[str, Any]] | None, n: int, start: int
) -> pd.DataFrame:
    if metadata is None:
        meta = pd.DataFrame({"id": [str(i) for i in range(start, start + n)]})
    elif isinstance(metadata, pd.DataFrame):
        meta = metadata.reset_index(drop=True).copy()
    else:
        meta = pd.DataFrame(list(metadata))
    if len(meta) != n:
        raise ValueError(
            f"vectors/metadata length mismatch: {n} vectors, {len(meta)} metadata rows"
        )
    if n and "id" not in meta.columns:
        raise ValueError("metadata needs an 'id' column (one unique string per vector)")
    if "id" not in meta.columns:
        meta["id"] = pd.Series([], dtype=str)
    if meta["id"].isna().any():
        raise ValueError("metadata 'id' column has missing values")
    meta["id"] = meta["id"].astype(str)
    dup = meta["id"][meta["id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate ids in metadata, e.g. {sorted(set(dup))[:5]}")
    cols = ["id"] + [c for c in meta.columns if c != "id"]
    return meta[cols]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_info(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _map_vectors(path: Path) -> np.ndarray:
    """``vectors.npy`` memory-mapped read-only, marked for random access: re-ranking reads
    ``k * k_factor`` scattered rows per query, and the kernel's default read-ahead (128 KiB a
    fault) would page in most of the file instead."""
    arr = np.load(path, mmap_mode="r")
    raw = getattr(arr, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)
    return arr


def _maps_file(array: np.ndarray, path: Path) -> bool:
    """True when ``array`` is a memory map of the file ``path``."""
    name = getattr(array, "filename", None)
    return (
        isinstance(array, np.memmap) and name is not None and path.exists() and path.samefile(name)
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.asarray(array, dtype=np.float32), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


_REQUIRED = {
    "format",
    "format_version",
    "dim",
    "n",
    "factory",
    "metric",
    "normalize",
    "search_params",
    "fingerprint",
    "created",
    "updated",
    "files",
}


def _read_manifest(path: Path) -> dict[str, Any]:
    mf = path / MANIFEST_FILE
    if not mf.is_file():
        raise IndexFormatError(
            path,
            "missing index.json",
            "not a complete index (a build was interrupted or is still being written); rebuild it",
        )
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(path, "invalid index.json", str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(path, "invalid index.json", f"not a {FORMAT} manifest")
    missing = sorted(_REQUIRED - set(manifest))
    if missing:
        raise IndexFormatError(path, "invalid index.json", f"missing keys {missing}")
    if manifest["format_version"] > FORMAT_VERSION:
        raise IndexFormatError(
            path,
            "unsupported format version",
            f"version {manifest['format_version']}; this radalign reads <= {FORMAT_VERSION}",
        )
    if manifest["metric"] != METRIC:
        raise IndexFormatError(path, "invalid index.json", f"unknown metric {manifest['metric']!r}")
    expected = {VECTORS_FILE, METADATA_FILE, FAISS_FILE}
    if set(manifest["files"]) - {IVFDATA_FILE} != expected:
        raise IndexFormatError(
            path, "invalid index.json", f"files must be {sorted(expected)} (+ {IVFDATA_FILE})"
        )
    return manifest


def _check_file(path: Path, name: str, info: Mapping[str, Any], verify: bool) -> None:
    f = path / name
    if not f.is_file():
        raise IndexFormatError(path, "missing file", f"{name} is listed in index.json but absent")
    size = f.stat().st_size
    if size != info["bytes"]:
        raise IndexFormatError(
            path,
            "checksum mismatch",
            f"{name} has {size} bytes, index.json says {info['bytes']}; the index is corrupt "
            "or half-written: rebuild it",
        )
    if verify:
        digest = _sha256(f)
        if digest != info["sha256"]:
            raise IndexFormatError(
                path,
                "checksum mismatch",
                f"{name} sha256 {digest[:16]}... differs from index.json's "
                f"{info['sha256'][:16]}...; the index is corrupt or half-written: rebuild it",
            )
