"""Grounding metrics of maps against ground-truth masks, the centre-prior baseline, and the
"sanity checks for saliency maps" (Adebayo et al. 2018) test with a randomised model.

Per (map, mask) pair, the map at the mask's size:

* pointing game: the map's argmax lies inside the mask (:func:`pointing_hit`);
* hit: at least half of the map's kept area (``map / max >= threshold``) lies inside the mask
  (:func:`region_hit`, the precision of the circled regions);
* IoU of the kept area at thresholds 0.1, 0.2, ..., 0.5 of the normalised map and their mean,
  mIoU (:func:`miou`, BioViL's protocol);
* CNR = |μ_in − μ_out| / sqrt(σ²_in + σ²_out) over the map's values inside vs outside the mask
  (:func:`cnr`, threshold-free; the map is min–max normalised first).

The centre prior (:func:`centre_prior`) is a map that peaks at the scan's centre and falls off
linearly with the distance: large central masks make the pointing game easy, so a model's
score only means something beside it. A map method passes the sanity check when the same
method on a model with randomised weights scores at chance and its maps have a low rank
correlation with the trained model's (:func:`sanity_check`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

__all__ = [
    "KINDS",
    "THRESHOLDS",
    "GroundingScores",
    "SanityResult",
    "centre_prior",
    "cnr",
    "evaluate_cases",
    "iou",
    "miou",
    "phantom_cases",
    "pointing_hit",
    "randomized_copy",
    "rank_correlation",
    "region_hit",
    "sanity_check",
    "score_map",
    "summarise",
]

THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def _pair(heat: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    mask = np.asarray(mask, dtype=bool)
    if heat.shape != mask.shape:
        raise ValueError(f"map shape {heat.shape} != mask shape {mask.shape}")
    if not mask.any():
        raise ValueError("the mask is empty")
    return heat, mask


def _minmax(heat: np.ndarray) -> np.ndarray:
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """True when the map's maximum (the first, in row-major order) lies inside ``mask``."""
    heat, mask = _pair(heat, mask)
    return bool(mask.flat[int(np.argmax(heat))])


def iou(heat: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """IoU of ``minmax(heat) >= threshold`` with ``mask`` (0 when the map is flat)."""
    heat, mask = _pair(heat, mask)
    norm = _minmax(heat)
    kept = (norm >= threshold) & (heat.max() > heat.min())
    union = np.logical_or(kept, mask).sum()
    return float(np.logical_and(kept, mask).sum() / union) if union else 0.0


def miou(heat: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> float:
    """Mean :func:`iou` over ``thresholds``."""
    return float(np.mean([iou(heat, mask, t) for t in thresholds]))


def region_hit(heat: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> bool:
    """True when at least half of the kept area ``minmax(heat) >= threshold`` is in ``mask``."""
    heat, mask = _pair(heat, mask)
    if heat.max() <= heat.min():
        return False
    kept = _minmax(heat) >= threshold
    return bool(np.logical_and(kept, mask).sum() * 2 >= kept.sum())


def cnr(heat: np.ndarray, mask: np.ndarray) -> float:
    """Contrast-to-noise ratio of the min–max normalised map inside vs outside ``mask``
    (NaN when the mask covers everything; 0 for a flat map)."""
    heat, mask = _pair(heat, mask)
    if mask.all():
        return float("nan")
    norm = _minmax(heat)
    inside, outside = norm[mask], norm[~mask]
    spread = math.sqrt(inside.var() + outside.var())
    diff = abs(inside.mean() - outside.mean())
    if spread == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / spread)


def centre_prior(shape: tuple[int, int]) -> np.ndarray:
    """A map ``[H, W]`` that is 1 at the centre and falls linearly to 0 at the corners."""
    h, w = int(shape[0]), int(shape[1])
    rows = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    cols = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    dist = np.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    return (1.0 - dist / dist.max()).astype(np.float32)


def score_map(
    heat: np.ndarray, mask: np.ndarray, threshold: float = 0.5
) -> dict[str, float | bool]:
    """All four measures of one map against one mask (see the module docstring)."""
    return {
        "pointing": pointing_hit(heat, mask),
        "hit": region_hit(heat, mask, threshold),
        "miou": miou(heat, mask),
        "cnr": cnr(heat, mask),
    }


@dataclass
class GroundingScores:
    """Means over cases of one map kind for one finding (``n`` cases), with the chance level
    of the pointing game (mean share of the scan its masks cover)."""

    n: int
    pointing: float
    hit: float
    miou: float
    cnr: float
    chance: float
    per_case: list[dict[str, float | bool]] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in ("n", "pointing", "hit", "miou", "cnr", "chance")}


def summarise(
    scores: Sequence[dict[str, float | bool]], mask_shares: Sequence[float]
) -> GroundingScores:
    """Means of :func:`score_map` results (CNR over its finite values)."""
    if not scores:
        nan = float("nan")
        return GroundingScores(0, nan, nan, nan, nan, nan)
    col = {k: np.array([float(s[k]) for s in scores]) for k in ("pointing", "hit", "miou", "cnr")}
    finite = col["cnr"][np.isfinite(col["cnr"])]
    return GroundingScores(
        n=len(scores),
        pointing=float(col["pointing"].mean()),
        hit=float(col["hit"].mean()),
        miou=float(col["miou"].mean()),
        cnr=float(finite.mean()) if finite.size else float("nan"),
        chance=float(np.mean(mask_shares)),
        per_case=list(scores),
    )


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (0 when either is constant)."""
    a, b = np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"map sizes differ: {a.size} vs {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


@dataclass
class SanityResult:
    """The randomised model's pointing hits against chance, and the maps' rank correlation."""

    hits: int
    n: int
    chance: float
    p_value: float  # two-sided binomial test of hits/n against chance
    rank_corr: float  # mean Spearman correlation, trained vs randomised heatmaps
    at_chance: bool
    low_correlation: bool
    rank_corr_raw: float = float("nan")  # the same on the raw (signed) maps, for reference

    @property
    def passed(self) -> bool:
        return self.at_chance and self.low_correlation

    def to_dict(self) -> dict[str, float | int | bool]:
        keys = ("hits", "n", "chance", "p_value", "rank_corr", "rank_corr_raw", "at_chance",
                "low_correlation")  # fmt: skip
        return {k: getattr(self, k) for k in keys} | {"passed": self.passed}


def sanity_check(
    random_hits: Iterable[bool],
    mask_shares: Iterable[float],
    rank_corrs: Iterable[float],
    *,
    alpha: float = 0.01,
    max_corr: float = 0.5,
    raw_rank_corrs: Iterable[float] | None = None,
) -> SanityResult:
    """Does a map method fail on a randomised model, as it should?

    ``random_hits``: the randomised model's pointing-game outcomes; ``mask_shares``: each
    case's mask area share (its chance of a hit); ``rank_corrs``: per-case rank correlation of
    the trained and randomised maps. At chance: a two-sided binomial test of the hits against
    the mean share does not reject at ``alpha``, or the randomised model scores *below* chance.
    Low correlation: the mean of ``rank_corrs`` is below ``max_corr``. ``raw_rank_corrs`` (of
    the raw, signed maps) is only reported.
    """
    hits = [bool(h) for h in random_hits]
    shares = [float(s) for s in mask_shares]
    corrs = np.array([float(c) for c in rank_corrs], dtype=np.float64)
    if not hits or len(hits) != len(shares):
        raise ValueError("need one mask share per randomised-model outcome, and at least one")
    chance = float(np.clip(np.mean(shares), 1e-9, 1 - 1e-9))
    k, n = int(sum(hits)), len(hits)
    p = float(stats.binomtest(k, n, chance).pvalue)
    at_chance = p >= alpha or k / n <= chance
    rho = float(np.nanmean(corrs)) if corrs.size else float("nan")
    raw = np.array([float(c) for c in raw_rank_corrs or []], dtype=np.float64)
    rho_raw = float(np.nanmean(raw)) if raw.size else float("nan")
    return SanityResult(k, n, chance, p, rho, at_chance, bool(rho < max_corr), rho_raw)


def randomized_copy(model, seed: int = 0):
    """A deep copy of ``model`` with every parameter re-initialised (Adebayo's full cascading
    randomisation): each submodule's own ``reset_parameters``, in a seeded RNG, so the result
    has the architecture but none of the learned weights. The logit scale is kept."""
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            done: set[int] = set()
            for module in clone.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset) and module is not clone:
                    reset()
                    done.update(id(p) for p in module.parameters())
            for name, param in clone.named_parameters():  # e.g. a ViT's position embedding
                if id(param) not in done and name != "logit_scale":
                    param.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(state)
    return clone.eval()


# ------------------------------------------------------------------------ phantom evaluation
def phantom_cases(n: int, seed: int = 0, size: int = 256) -> list:
    """``n`` in-memory phantom cases (:func:`radalign.data.synth.generate_case`) that have at
    least one planted-finding mask; case ``i`` draws from ``default_rng([seed, i])``."""
    from radalign.data.synth import generate_case

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cases, i = [], 0
    while len(cases) < n:
        if i >= 20 * n:
            raise RuntimeError(f"only {len(cases)} of {n} phantoms with findings in {i} draws")
        case = generate_case(np.random.default_rng([seed, i]), size)
        i += 1
        if any(m.any() and not m.all() for m in case.masks.values()):
            cases.append(case)
    return cases


KINDS = ("attention", "gradients")


def evaluate_cases(
    model,
    cases: Sequence,
    *,
    random_model=None,
    steps: int = 16,
    threshold: float = 0.5,
    smooth: float = 0.02,
    tau1: float = 4.0,
    normalize: bool = False,
    prompts: str = "chexpert",
    batch_size: int = 16,
    baseline: str = "black",
) -> dict:
    """Ground both map kinds of ``model`` (and of ``random_model``, for the sanity check)
    against every planted mask of ``cases`` (objects with ``.image`` and ``.masks``), per
    finding, beside the centre prior.

    Returns ``{"rows": [...], "sanity": {kind: SanityResult.to_dict()}}``; each row is one
    (finding, method) with ``n``, ``pointing``, ``hit``, ``miou``, ``cnr`` and ``chance``;
    methods are ``attention``, ``gradients``, ``centre prior`` and ``random <kind>``; the
    finding ``all`` pools every case.
    """
    from radalign.explain.api import Explainer
    from radalign.explain.render import denoise

    options = dict(prompts=prompts, tau1=tau1, normalize=normalize, steps=steps,
                   batch_size=batch_size, threshold=threshold, smooth=smooth, text_ig=False,
                   baseline=baseline)  # fmt: skip
    explainers = {"": Explainer(model, **options)}
    if random_model is not None:
        explainers["random "] = Explainer(random_model, **options)
    classes = set(explainers[""].prompts.class_names)
    scores: dict[tuple[str, str], list] = {}
    shares: dict[str, list[float]] = {}
    random_hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    random_shares: list[float] = []
    corrs: dict[str, list[float]] = {k: [] for k in KINDS}
    raw_corrs: dict[str, list[float]] = {k: [] for k in KINDS}

    def add(finding: str, method: str, s: dict) -> None:
        scores.setdefault((finding, method), []).append(s)
        scores.setdefault(("all", method), []).append(s)

    for case in cases:
        for label, mask in sorted(case.masks.items()):
            mask = np.asarray(mask, dtype=bool)
            if label not in classes or not mask.any() or mask.all():
                continue
            share = float(mask.mean())
            shares.setdefault(label, []).append(share)
            shares.setdefault("all", []).append(share)
            heats: dict[str, dict[str, np.ndarray]] = {}
            raws: dict[str, dict[str, np.ndarray]] = {}
            for prefix, ex in explainers.items():
                e = ex.explain(case.image, finding=label)
                heats[prefix], raws[prefix] = {}, {}
                for kind in KINDS:
                    raw = e.map(kind).raw
                    heat = denoise(raw, 0.0, smooth if kind == "gradients" else 0.0)
                    heats[prefix][kind], raws[prefix][kind] = heat, raw
                    add(label, prefix + kind, score_map(heat, mask, threshold))
            add(label, "centre prior", score_map(centre_prior(mask.shape), mask, threshold))
            if random_model is not None:
                random_shares.append(share)
                for kind in KINDS:
                    random_hits[kind].append(pointing_hit(heats["random "][kind], mask))
                    corrs[kind].append(rank_correlation(heats[""][kind], heats["random "][kind]))
                    raw_corrs[kind].append(rank_correlation(raws[""][kind], raws["random "][kind]))
    rows = []
    order = sorted({f for f, _ in scores}, key=lambda f: (f == "all", f))
    methods = [*KINDS, "centre prior", *(f"random {k}" for k in KINDS)]
    for finding in order:
        for method in methods:
            if (finding, method) in scores:
                g = summarise(scores[(finding, method)], shares[finding])
                rows.append({"finding": finding, "method": method, **g.row()})
    sanity = {}
    if random_model is not None and random_shares:
        for kind in KINDS:
            sanity[kind] = sanity_check(
                random_hits[kind], random_shares, corrs[kind], raw_rank_corrs=raw_corrs[kind]
            ).to_dict()
    return {"rows": rows, "sanity": sanity}
