"""An embedding store with a FAISS index: vectors, one metadata row per vector, and a manifest.

On disk an :class:`Index` is a directory::

    vectors.npy       float32 [N, dim], L2-normalised unless built with normalize=False;
                      memory-mapped on load; used to rebuild and for exact re-ranking
    metadata.parquet  one row per vector: ``id`` (unique str) plus any user columns
                      (study/patient ids, report text or pointer, source path, modality, ...)
    index.faiss       the FAISS index (``faiss.write_index``)
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

Not thread-safe for concurrent :meth:`Index.add`; concurrent searches are serialised.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from radalign.encoders.atomic import atomic_dir
from radalign.encoders.errors import InputError
from radalign.retrieval.index_choice import choose_index, default_search_params, split_refine

FORMAT = "radalign-index"
FORMAT_VERSION = 1
VECTORS_FILE = "vectors.npy"
METADATA_FILE = "metadata.parquet"
FAISS_FILE = "index.faiss"
MANIFEST_FILE = "index.json"
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
        base, _ = split_refine(factory)
        try:
            index = faiss.index_factory(int(dim), base, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"FAISS cannot build index_factory string {factory!r}: {e}") from e
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
        fingerprint: str,
        factory: str | None,
        memory_budget_bytes: int | None,
        normalize: bool,
        train_sample: int,
        search_params: Mapping[str, int] | None,
        seed: int,
        threads: int | None,
        created: str | None = None,
    ) -> Index:
        n, dim = x.shape
        factory = factory or choose_index(n, dim, memory_budget_bytes)
        base, _ = split_refine(factory)
        try:
            index = faiss.index_factory(dim, base, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"FAISS cannot build index_factory string {factory!r}: {e}") from e
        _tune_training(index)
        with _omp_threads(threads):
            if not index.is_trained:
                rng = np.random.default_rng(seed)
                if n > train_sample:
                    rows = np.sort(rng.choice(n, size=train_sample, replace=False))
                    sample = np.ascontiguousarray(x[rows])
                else:
                    sample = x
                try:
                    index.train(sample)
                except RuntimeError as e:
                    raise ValueError(
                        f"training {factory!r} on {len(sample)} vectors failed (too few vectors "
                        f"for this index? choose a smaller nlist/PQ or 'Flat'): {e}"
                    ) from e
            for s in range(0, n, _CHUNK_ROWS * 4):
                index.add(x[s : s + _CHUNK_ROWS * 4])
        params = default_search_params(factory)
        params.update(search_params or {})
        return cls(
            faiss_index=index,
            vectors=x,
            metadata=meta,
            factory=factory,
            fingerprint=fingerprint,
            normalize=normalize,
            search_params=params,
            created=created,
        )

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
        """Append vectors and their metadata rows (trained indices are not retrained)."""
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
            _save_npy(tmp / VECTORS_FILE, self._vectors)
            self._metadata.to_parquet(tmp / METADATA_FILE, index=False)
            _fsync_file(tmp / METADATA_FILE)
            faiss.write_index(self._index, str(tmp / FAISS_FILE))
            _fsync_file(tmp / FAISS_FILE)
            manifest = self._manifest(
                {name: _file_info(tmp / name) for name in (VECTORS_FILE, METADATA_FILE, FAISS_FILE)}
            )
            with open(tmp / MANIFEST_FILE, "w") as fh:
                json.dump(manifest, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
        if isinstance(self._vectors, np.memmap):  # the old file may be gone: map the new one
            self._vectors = np.load(path / VECTORS_FILE, mmap_mode="r")
        self.path = path
        return path

    def _manifest(self, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from radalign._version import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
        try:
            vectors = np.load(path / VECTORS_FILE, mmap_mode="r" if mmap else None)
            metadata = pd.read_parquet(path / METADATA_FILE)
            index = faiss.read_index(str(path / FAISS_FILE))
        except Exception as e:  # checksums matched, so this is a format problem
            raise IndexFormatError(path, "unreadable index file", str(e)) from e
        n, dim = manifest["n"], manifest["dim"]
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
    def search_params(self) -> dict[str, int]:
        return dict(self._search_params)

    @property
    def faiss_index(self) -> faiss.Index:
        """The FAISS index (without the ``RFlat`` stage, which radalign runs itself)."""
        return self._index

    def index_bytes(self) -> int:
        """Serialized size of the FAISS index (the vectors for re-ranking not included)."""
        return int(faiss.serialize_index(self._index).nbytes)


# ---------------------------------------------------------------------- helpers
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
    if set(manifest["files"]) != expected:
        raise IndexFormatError(path, "invalid index.json", f"files must be {sorted(expected)}")
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
