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
     recovers the accuracy); with a budget, the first of ``dim/8, dim/16, ...`` whose
     ``n * (m + 8) + nlist * dim * 4`` bytes fit (8 bytes per id in the lists);
   * ``RFlat``: the top ``k * k_factor`` candidates are re-scored exactly.  In
     :class:`radalign.retrieval.index.Index` this stage reads the memory-mapped ``vectors.npy``
     instead of a second in-RAM copy of the vectors, so the budget counts only the PQ codes.

   Corpora below ``PQ_MIN_N`` (10k; 8-bit PQ needs ~256 * 39 training points) that do not fit as
   Flat get ``SQ8,RFlat`` (one byte per dimension) instead.

If nothing fits the budget the most compact candidate is returned with a warning.  The budget is
the index's resident size, not the temporary memory needed for building it.  A user can bypass
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


def choose_index(n: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """Return an ``index_factory`` string for ``n`` vectors of ``dim`` dims (rules: module doc)."""
    if n <= 0:
        raise ValueError(f"cannot choose an index for an empty corpus (n={n})")
    if dim <= 0:
        raise ValueError(f"dimension must be positive, got {dim}")
    budget = memory_budget_bytes

    def fits(nbytes: int) -> bool:
        return budget is None or nbytes <= budget

    if n < FLAT_MAX_N and fits(flat_bytes(n, dim)):
        return "Flat"
    if n < HNSW_MAX_N and fits(hnsw_bytes(n, dim)):
        return f"HNSW{HNSW_M},Flat"
    if n < PQ_MIN_N:
        if not fits(n * dim):
            _warn_budget(n * dim, budget)
        return "SQ8,RFlat"
    nlist = choose_nlist(n)
    candidates = pq_m_candidates(dim)
    for m in candidates:
        if fits(ivfpq_bytes(n, dim, nlist, m)):
            return f"IVF{nlist},PQ{m}x8,RFlat"
    m = candidates[-1]
    _warn_budget(ivfpq_bytes(n, dim, nlist, m), budget)
    return f"IVF{nlist},PQ{m}x8,RFlat"


def _warn_budget(nbytes: int, budget: int | None) -> None:
    warnings.warn(
        f"no index fits the memory budget of {budget} bytes; using the most compact one "
        f"(~{nbytes} bytes)",
        UserWarning,
        stacklevel=3,
    )


def split_refine(factory: str) -> tuple[str, bool]:
    """Split a trailing ``,RFlat`` / ``,Refine(Flat)`` off ``factory``.

    Returns ``(base_factory, refine)``; radalign implements the exact re-ranking itself against
    the stored vectors.  Other refine stages (e.g. ``Refine(SQ8)``) stay in the FAISS string.
    """
    f = factory.strip().replace(" ", "")
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
