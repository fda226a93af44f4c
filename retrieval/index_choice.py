"""Pick a FAISS ``index_factory`` string from corpus size and memory budget.

The idea (popularised by autofaiss / clip-retrieval) is that nobody should have to know FAISS to
get a good index: the corpus size ``n``, the vector dimension ``dim`` and an optional memory budget
decide.  Every index searches L2-normalised vectors by inner product (cosine similarity,
``faiss.METRIC_INNER_PRODUCT``).  The rules, first match wins:

1. **Flat** (exact, brute force) when ``n < FLAT_MAX_N`` (50k) and the flat matrix
   (``n * dim * 4`` bytes) fits the budget.  Exact search over 50k 512-d vectors takes a few
   milliseconds per query batch, so nothing is gained by approximating.
2. **HNSW32** (graph, no training, incremental adds) when ``n < HNSW_MAX_N`` (1M) and the graph
   fits: about ``dim * 4 + 32 * 2 * 4`` bytes per vector (the float vector plus 2*M level-0 links).
3. **IVF{nlist},PQ{m}x8,RFlat** otherwise (large corpora, or a budget too tight for 1./2.):

   * ``nlist`` = the power of two nearest to ``4 * sqrt(n)``, clamped to ``[16, 65536]`` and to
     ``n // 39`` (FAISS wants >= 39 training points per centroid);
   * ``m`` (bytes per code) is the largest divisor of ``dim`` that is ``<= dim / 8`` (at least
     8 dimensions per sub-quantizer: FAISS k-means is ~10x slower per point for 4-d or smaller
     sub-vectors, which made ``dim/4`` codes take minutes to train; the exact re-ranking stage
     recovers the accuracy);
   * ``RFlat``: the top ``k * k_factor`` candidates are re-scored exactly.  In
     :class:`radalign.retrieval.index.Index` this stage reads the memory-mapped ``vectors.npy``
     instead of a second in-RAM copy of the vectors, so the budget counts only the PQ codes.

   Corpora below ``PQ_MIN_N`` (10k; 8-bit PQ needs ~256 * 39 training points) that do not fit as
   Flat get ``SQ8,RFlat`` (one byte per dimension) instead.
4. **When to switch to disk: IVF{nlist},PQ{m}x8,RFlat,OnDisk** when the in-RAM IVF-PQ of 3.
   (:func:`ivfpq_bytes`) does not fit the budget.  The same codes are kept (no loss of recall)
   but the inverted lists (codes + ids) live in ``index.ivfdata``, memory-mapped: the resident
   part is the quantiser, the codebooks and the list table (:func:`ondisk_resident_bytes`, about
   ``nlist * dim * 4``), and the OS pages lists in as queries probe them and evicts them under
   memory pressure.  Shrinking the codes instead would cost recall for RAM that the page cache
   gives back for free.  Measured at 1M x 512 (``benchmarks/index_scale.py``): same recall, warm
   queries as fast as in RAM, 1.4x slower cold (first touch of a list), a 5x smaller build heap
   and 70 MB less resident heap.  ``choose_index(..., on_disk=True)`` forces this layout.

Memory per layout (``n`` vectors, ``dim`` dims, 4-byte floats, 8-byte ids; :func:`layout_bytes`):

=========================  ===================================  ==================================
layout                     resident (RAM)                       disk (besides ``vectors.npy``
                                                                ``4*n*dim`` and the metadata)
=========================  ===================================  ==================================
Flat                       ``4*n*dim``                          same
HNSW32                     ``n*(4*dim + 256)``                  same
IVF-PQ m x 8, in RAM       ``n*(m + 8) + 4*nlist*dim            same
                           + 4*256*dim``
IVF-PQ m x 8, on disk      ``4*nlist*dim + 4*256*dim            ``n*(m + 8)`` (``index.ivfdata``)
                           + 24*nlist`` + paged lists
=========================  ===================================  ==================================

Building on disk (:meth:`radalign.retrieval.index.Index.build_on_disk`) needs about
``4*train_sample*dim`` (the training sample) + ``block_rows*(m + 8)`` (one block of codes) +
one chunk of vectors; the corpus itself is read in chunks and never held.

If nothing fits the budget (even the on-disk quantiser is larger) the on-disk layout is returned
with a warning.  The budget is the index's resident size, not the temporary memory needed for
building it, and not the page cache the OS lends to the on-disk lists.  A user can bypass
all of this by passing any ``index_factory`` string to ``Index.build(factory=...)``.

:func:`default_search_params` gives the matching search-time knobs (``nprobe``, ``efSearch``,
``k_factor``) stored with the index.
"""

from __future__ import annotations

import math
import re
import warnings

FLAT_MAX_N = 50_000
HNSW_MAX_N = 1_000_000
HNSW_M = 32
PQ_MIN_N = 10_000
PQ_MIN_DSUB = 8
NLIST_MIN, NLIST_MAX = 16, 65_536
MIN_POINTS_PER_CENTROID = 39

DEFAULT_EF_SEARCH = 128
DEFAULT_K_FACTOR = 16
NPROBE_MIN = 16

ON_DISK_SUFFIX = ",OnDisk"
LIST_ENTRY_BYTES = 24  # faiss OnDiskOneList: size, capacity, offset

_IVF_RE = re.compile(r"IVF(\d+)")
_HNSW_RE = re.compile(r"HNSW(\d+)")


def flat_bytes(n: int, dim: int) -> int:
    """Resident size of a Flat index."""
    return n * dim * 4


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    """Approximate resident size of ``HNSW{m}`` (vectors + level-0 links)."""
    return n * (dim * 4 + m * 2 * 4)


def ivfpq_bytes(n: int, dim: int, nlist: int, m: int) -> int:
    """Approximate resident size of ``IVF{nlist},PQ{m}x8`` (codes, ids, centroids, codebooks)."""
    return n * (m + 8) + nlist * dim * 4 + 256 * dim * 4


def ondisk_resident_bytes(dim: int, nlist: int) -> int:
    """Resident size of an on-disk ``IVF{nlist},PQ{m}x8``: quantiser, codebooks, list table (the
    lists themselves are paged in from ``index.ivfdata`` as queries probe them)."""
    return nlist * dim * 4 + 256 * dim * 4 + nlist * LIST_ENTRY_BYTES


def ondisk_file_bytes(n: int, m: int) -> int:
    """Size of the ``index.ivfdata`` inverted lists of ``n`` vectors with ``m``-byte codes."""
    return n * (m + 8)


def layout_bytes(n: int, dim: int, factory: str) -> dict[str, int]:
    """``{"resident": ..., "disk": ...}`` estimated for ``factory`` over ``n`` vectors; disk
    counts the FAISS files only (``vectors.npy``, ``4*n*dim``, and the metadata come on top)."""
    rest, on_disk = split_storage(factory)
    base, _ = split_refine(rest)
    nlist = nlist_of(base)
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", base)
    if nlist is not None:
        code = int(pq.group(1)) * int(pq.group(2) or 8) // 8 if pq else _code_bytes(base, dim)
        if on_disk:
            return {
                "resident": ondisk_resident_bytes(dim, nlist),
                "disk": ondisk_file_bytes(n, code),
            }
        nbytes = n * (code + 8) + nlist * dim * 4 + (256 * dim * 4 if pq else 0)
        return {"resident": nbytes, "disk": nbytes}
    if is_hnsw(base):
        m = int(_HNSW_RE.search(base).group(1))
        nbytes = hnsw_bytes(n, dim, m)
    elif base.startswith("SQ8"):
        nbytes = n * dim
    else:
        nbytes = flat_bytes(n, dim)
    return {"resident": nbytes, "disk": nbytes}


def _code_bytes(base: str, dim: int) -> int:
    if "SQ8" in base:
        return dim
    if "SQfp16" in base:
        return 2 * dim
    return 4 * dim  # IVF,Flat


def choose_nlist(n: int) -> int:
    """Power of two nearest ``4 * sqrt(n)``, clamped to [16, 65536] and to ``n // 39``."""
    target = 4.0 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(target))
    nlist = min(max(nlist, NLIST_MIN), NLIST_MAX)
    cap = max(1, n // MIN_POINTS_PER_CENTROID)
    while nlist > cap and nlist > 1:
        nlist //= 2
    return int(nlist)


def pq_m_candidates(dim: int) -> list[int]:
    """Divisors of ``dim`` that are ``<= dim / PQ_MIN_DSUB``, largest first (``[1]`` if dim < 8)."""
    top = max(1, dim // PQ_MIN_DSUB)
    return [m for m in range(top, 0, -1) if dim % m == 0]


def choose_index(
    n: int, dim: int, memory_budget_bytes: int | None = None, *, on_disk: bool | None = None
) -> str:
    """Return an ``index_factory`` string (plus radalign's ``,RFlat`` / ``,OnDisk`` suffixes)
    for ``n`` vectors of ``dim`` dims; rules in the module doc.  ``on_disk``: None decides by
    the budget (rule 4), True always returns an on-disk IVF index, False never."""
    if n <= 0:
        raise ValueError(f"cannot choose an index for an empty corpus (n={n})")
    if dim <= 0:
        raise ValueError(f"dimension must be positive, got {dim}")
    budget = memory_budget_bytes

    def fits(nbytes: int) -> bool:
        return budget is None or nbytes <= budget

    nlist = choose_nlist(n)
    m = pq_m_candidates(dim)[0]
    if on_disk:
        resident = ondisk_resident_bytes(dim, nlist)
        if not fits(resident):
            _warn_budget(resident, budget)
        codes = f"PQ{m}x8" if n >= PQ_MIN_N else "SQ8"
        return f"IVF{nlist},{codes},RFlat{ON_DISK_SUFFIX}"
    if n < FLAT_MAX_N and fits(flat_bytes(n, dim)):
        return "Flat"
    if n < HNSW_MAX_N and fits(hnsw_bytes(n, dim)):
        return f"HNSW{HNSW_M},Flat"
    if n < PQ_MIN_N:
        if not fits(n * dim):
            _warn_budget(n * dim, budget)
        return "SQ8,RFlat"
    factory = f"IVF{nlist},PQ{m}x8,RFlat"
    if fits(ivfpq_bytes(n, dim, nlist, m)) or on_disk is False:
        if not fits(ivfpq_bytes(n, dim, nlist, m)):
            _warn_budget(ivfpq_bytes(n, dim, nlist, m), budget)
        return factory
    if not fits(ondisk_resident_bytes(dim, nlist)):
        _warn_budget(ondisk_resident_bytes(dim, nlist), budget)
    return factory + ON_DISK_SUFFIX


def _warn_budget(nbytes: int, budget: int | None) -> None:
    warnings.warn(
        f"no index fits the memory budget of {budget} bytes; using the most compact one "
        f"(~{nbytes} bytes)",
        UserWarning,
        stacklevel=3,
    )


def split_storage(factory: str) -> tuple[str, bool]:
    """Split radalign's trailing ``,OnDisk`` (inverted lists in a file) off ``factory``.

    Returns ``(rest, on_disk)``; ``"OnDisk"`` alone gives ``("", True)`` (choose the IVF index
    automatically, on disk)."""
    f = factory.strip().replace(" ", "")
    if f == ON_DISK_SUFFIX[1:]:
        return "", True
    if f.endswith(ON_DISK_SUFFIX):
        return f[: -len(ON_DISK_SUFFIX)], True
    return f, False


def split_refine(factory: str) -> tuple[str, bool]:
    """Split a trailing ``,RFlat`` / ``,Refine(Flat)`` (and ``,OnDisk``) off ``factory``.

    Returns ``(base_factory, refine)``; radalign implements the exact re-ranking itself against
    the stored vectors.  Other refine stages (e.g. ``Refine(SQ8)``) stay in the FAISS string.
    """
    f = split_storage(factory)[0]
    for suffix in (",RFlat", ",Refine(Flat)"):
        if f.endswith(suffix):
            return f[: -len(suffix)], True
    return f, False


def nlist_of(factory: str) -> int | None:
    """``nlist`` of an IVF factory string, else None."""
    m = _IVF_RE.search(factory)
    return int(m.group(1)) if m else None


def is_hnsw(factory: str) -> bool:
    """True when the factory string builds an HNSW index (top level, not an IVF quantizer)."""
    return bool(_HNSW_RE.search(factory)) and nlist_of(factory) is None


def default_nprobe(nlist: int) -> int:
    """``nlist / 128``, at least 16, at most ``nlist`` (with the default exact re-rank depth
    this gave recall@10 0.999 at 39x flat on 1M clustered 512-d vectors:
    ``benchmarks/results/index_speed.jsonl``)."""
    return int(min(nlist, max(NPROBE_MIN, nlist // 128)))


def default_search_params(factory: str) -> dict[str, int]:
    """Search-time parameters for ``factory``: ``nprobe`` (IVF), ``efSearch`` (HNSW),
    ``k_factor`` (refine stage).  Empty for exact indices."""
    base, refine = split_refine(factory)
    params: dict[str, int] = {}
    nlist = nlist_of(base)
    if nlist is not None:
        params["nprobe"] = default_nprobe(nlist)
    if is_hnsw(base):
        params["efSearch"] = DEFAULT_EF_SEARCH
    if refine:
        params["k_factor"] = DEFAULT_K_FACTOR
    return params
