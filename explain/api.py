"""``explain(model, scan, report=..., finding=...)``: where in the scan, and which words of the
text, drive the model's image–text similarity.

Two map kinds over the image, both at the scan's size:

* ``attention``: the word–region attention (:mod:`radalign.explain.attention`) of each finding
  word of the report (words that name a CheXpert finding, :data:`FINDING_WORDS`; every word when
  the report names none), or, for a finding, the mean over its positive prompts of the
  attention of the words that name it;
* ``gradients``: integrated gradients over the pixels of the cosine between the image embedding
  and the text's (the report, or the finding's ensembled positive prompt vector), black
  baseline (:mod:`radalign.explain.gradients`), summed over channels.

Each raw map is denoised into a heatmap with the user's threshold and circled
(:mod:`radalign.explain.render`). For the text: integrated gradients over the word embeddings
(per word) and GLoRIA's word–context score (per word).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from radalign.explain.attention import WordMaps, word_region_maps
from radalign.explain.gradients import pixel_ig, word_ig
from radalign.explain.render import Region, circled_regions, denoise

__all__ = [
    "Explainer",
    "Explanation",
    "ImageMap",
    "TextAttribution",
    "explain",
    "run_local_params",
]

MAX_PROMPTS = 8
BASELINES = ("black", "blur")
BLUR_SIGMA = 0.05  # of the scan's longer side
MAX_WORDS = 6


@dataclass
class ImageMap:
    """One map over the scan: ``raw`` [H, W] (attention or IG), ``heat`` (denoised, [0, 1]) and
    its circled ``regions``; ``kind`` is "attention" or "gradients", ``name`` the word or
    finding it explains."""

    kind: str
    name: str
    raw: np.ndarray
    heat: np.ndarray
    regions: list[Region]
    label: str | None = None  # the CheXpert finding the word or prompt names


@dataclass
class TextAttribution:
    """Per-word attributions of one text: IG over the word embeddings (sums to ``ig_total``
    up to ``ig_gap``) and GLoRIA's word–context cosine."""

    text: str
    words: list[str]
    ig: np.ndarray
    attention_score: np.ndarray
    ig_total: float
    ig_gap: float


@dataclass
class Explanation:
    """What :func:`explain` returns; :meth:`save` writes it to a folder."""

    image: np.ndarray
    scan: str
    mode: str  # "report" or "finding"
    query: str  # the report text or the finding name
    similarity: float  # cosine of the image and text embeddings
    maps: list[ImageMap]
    texts: list[TextAttribution]
    settings: dict[str, Any] = field(default_factory=dict)

    def map(self, kind: str, name: str | None = None) -> ImageMap:
        """The first map of ``kind`` (named ``name``, when given)."""
        for m in self.maps:
            if m.kind == kind and (name is None or m.name == name):
                return m
        raise KeyError(f"no {kind} map named {name!r}")

    def to_json(self) -> dict[str, Any]:
        """Everything but the arrays (those go to maps.npz)."""
        return {
            "scan": self.scan,
            "mode": self.mode,
            "query": self.query,
            "similarity": _num(self.similarity),
            "image_shape": list(self.image.shape),
            "settings": self.settings,
            "maps": [
                {
                    "kind": m.kind,
                    "name": m.name,
                    "label": m.label,
                    "key": _key(i, m),
                    "regions": [r.to_dict() for r in m.regions],
                }
                for i, m in enumerate(self.maps)
            ],  # fmt: skip
            "texts": [
                {
                    "text": t.text,
                    "words": t.words,
                    "ig": [_num(v) for v in t.ig],
                    "attention_score": [_num(v) for v in t.attention_score],
                    "ig_total": _num(t.ig_total),
                    "ig_gap": _num(t.ig_gap, 3),
                }
                for t in self.texts
            ],  # fmt: skip
        }

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``index.html``, one PNG per map and per text, ``maps.npz`` and
        ``explain.json`` to ``out``, atomically; returns the path of ``index.html``."""
        from radalign.explain.page import write_folder

        return write_folder(self, Path(out))


def _num(value: float, digits: int = 6) -> float | None:
    """A JSON number (rounded; significant digits for tiny values), None for NaN/inf."""
    value = float(value)
    if not np.isfinite(value):
        return None
    return round(value, digits) if abs(value) >= 1e-3 else float(f"{value:.{digits}g}")


def _key(i: int, m: ImageMap) -> str:
    return f"{i:02d}-{m.kind}-{re.sub(r'[^A-Za-z0-9]+', '_', m.name).strip('_') or 'map'}"


def _load_scan(scan: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str]:
    from radalign.encoders.imageio import load_image

    if isinstance(scan, np.ndarray):
        image = np.asarray(scan, dtype=np.float32)
        if image.ndim != 2 or min(image.shape) < 2 or not np.isfinite(image).all():
            raise ValueError(f"a scan array must be finite and 2-D, got shape {image.shape}")
        return np.clip(image, 0.0, 1.0), "<array>"
    path = Path(scan)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such scan file")
    return np.asarray(load_image(path), dtype=np.float32), str(path)


def _baseline_image(image: np.ndarray, kind: str) -> np.ndarray:
    """The IG baseline scan: all black, or the scan Gaussian-blurred (sigma
    :data:`BLUR_SIGMA` of its longer side: keeps the overall intensity, removes the detail)."""
    if kind == "black":
        return np.zeros_like(image)
    from scipy import ndimage

    return ndimage.gaussian_filter(image, sigma=BLUR_SIGMA * max(image.shape)).astype(np.float32)


class Explainer:
    """Explains scans with one model; caches each finding's prompts and class vector.

    ``tau1``/``normalize``: the run's ``loss.local_tau1``/``loss.local_normalize``. ``steps``:
    Riemann steps of both IGs, run ``batch_size`` at a time. ``threshold``/``smooth``: the
    heatmaps' denoising (:func:`radalign.explain.render.denoise`). ``text_ig=False`` skips the
    per-word IG (evaluation does). ``baseline``: the pixel IG's baseline, "black" (the default)
    or "blur" (the scan blurred, :func:`_baseline_image`).
    """

    def __init__(
        self,
        model,
        *,
        prompts: str | os.PathLike = "chexpert",
        tau1: float = 4.0,
        normalize: bool = False,
        steps: int = 32,
        batch_size: int = 16,
        threshold: float = 0.5,
        smooth: float = 0.02,
        text_ig: bool = True,
        gradients: bool = True,
        baseline: str = "black",
    ) -> None:
        from radalign.zeroshot.prompts import load_prompt_set

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        denoise(np.zeros((2, 2)), threshold, smooth)  # validates both
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {baseline!r}")
        self.baseline = baseline
        self.model = model
        self.prompts = load_prompt_set(str(prompts))
        self.tau1, self.normalize = float(tau1), bool(normalize)
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.threshold, self.smooth = float(threshold), float(smooth)
        self.text_ig, self.gradients = text_ig, gradients
        self._vectors: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ texts
    def finding_name(self, name: str) -> str:
        """The prompt set's class called ``name`` (case-insensitive, or a finding word such as
        "effusion"); ValueError listing the classes otherwise."""
        from radalign.attention_maps import finding_label

        classes = self.prompts.class_names
        lowered = {c.lower(): c for c in classes}
        key = str(name).strip().lower()
        found = lowered.get(key) or finding_label(key)
        if found not in classes:
            raise ValueError(
                f"unknown finding {name!r}; the {self.prompts.name!r} prompt set has: "
                + ", ".join(classes)
            )
        return found

    def finding_prompts(self, finding: str) -> list[str]:
        return self.prompts.positive(finding)[:MAX_PROMPTS]

    def _finding_vector(self, finding: str) -> torch.Tensor:
        if finding not in self._vectors:
            from radalign.zeroshot.classifier import PromptClassifier

            clf = PromptClassifier(
                self.model, self.prompts.subset([finding]), device=self.model.device,
                precision="fp32",
            )  # fmt: skip
            self._vectors[finding] = torch.from_numpy(clf.positive_vectors[0].copy())
        return self._vectors[finding]

    # ------------------------------------------------------------------ explain
    @torch.no_grad()
    def _embed_text(self, text: str) -> torch.Tensor:
        tokens = {k: v.to(self.model.device) for k, v in self.model.tokenize([text]).items()}
        return self.model.encode_text(tokens)[0].float()

    def explain(
        self,
        scan: str | os.PathLike | np.ndarray,
        report: str | None = None,
        finding: str | None = None,
    ) -> Explanation:
        """Explain ``scan`` (a DICOM/PNG/JPG path, or a float [0, 1] 2-D array) against a
        ``report`` text or a ``finding`` name (exactly one)."""
        from radalign.attention_maps import finding_label

        if (report is None) == (finding is None):
            raise ValueError("give exactly one of report= or finding=")
        model = self.model
        if report is not None:
            report = str(report)
            _, words = model.tokenizer.encode([report])
            if not words[0]:
                raise ValueError(f"the report has no words to explain: {report[:80]!r}")
            mode, query, texts = "report", report, [report]
        else:
            finding = self.finding_name(finding)
            mode, query, texts = "finding", finding, self.finding_prompts(finding)
        image, source = _load_scan(scan)
        was_training = model.training
        model.eval()
        try:
            transform = model.transform(train=False)
            pixels = transform(image)
            black = transform(_baseline_image(image, self.baseline))
            word_maps = word_region_maps(
                model, pixels[None], texts, tau1=self.tau1, normalize=self.normalize
            )
            if mode == "report":
                target = self._embed_text(report)
                raw_attn = _report_attention(word_maps[0], finding_label)
            else:
                target = self._finding_vector(finding).to(model.device)
                raw_attn = [(finding, finding, _finding_attention(word_maps, finding))]
            with torch.no_grad():
                img_emb = model.encode_image(pixels[None].to(model.device))[0].float()
            similarity = float(torch.dot(img_emb, target.float()))
            maps = [self._image_map("attention", n, lab, g, image.shape) for n, lab, g in raw_attn]
            if self.gradients:
                ig = pixel_ig(
                    model, pixels, target, baseline=black, steps=self.steps,
                    batch_size=self.batch_size,
                )  # fmt: skip
                grid = ig.values.sum(axis=0)
                name = "report" if mode == "report" else finding
                maps.append(self._image_map("gradients", name, finding, grid, image.shape))
                ig_gap = ig.gap
            text_attr = [self._text_attribution(wm, img_emb) for wm in word_maps]
        finally:
            model.train(was_training)
        settings = {
            "steps": self.steps, "threshold": self.threshold, "smooth": self.smooth,
            "tau1": self.tau1, "normalize": self.normalize, "prompts": self.prompts.name,
            "baseline": f"{self.baseline} scan", "pixel_ig_gap": _num(ig_gap, 3) if self.gradients else None,
        }  # fmt: skip
        return Explanation(image, source, mode, query, similarity, maps, text_attr, settings)

    def _image_map(
        self, kind: str, name: str, label: str | None, grid: np.ndarray, shape: tuple[int, int]
    ) -> ImageMap:
        from radalign.attention_maps import to_image

        raw = to_image(np.asarray(grid, dtype=np.float32), shape)
        heat = denoise(raw, self.threshold, self.smooth if kind == "gradients" else 0.0)
        return ImageMap(kind, name, raw, heat, circled_regions(heat), label)

    def _text_attribution(self, wm: WordMaps, img_emb: torch.Tensor) -> TextAttribution:
        n = len(wm.words)
        if self.text_ig and n:
            tokens = self.model.tokenize([wm.text])
            att = word_ig(self.model, tokens, img_emb, steps=self.steps, batch_size=self.batch_size)
            values, total, gap = att.values, att.f_input - att.f_baseline, att.gap
        else:
            values, total, gap = np.full(n, np.nan), float("nan"), float("nan")
        return TextAttribution(wm.text, wm.words, values, wm.scores, total, gap)


def _report_attention(wm: WordMaps, finding_label) -> list[tuple[str, str | None, np.ndarray]]:
    """(word, label, map) for each distinct finding word of the report; every word (at most
    :data:`MAX_WORDS`) when it names no finding."""
    picked, seen = [], set()
    for k, word in enumerate(wm.words):
        label = finding_label(word)
        if label is not None and word.lower() not in seen:
            seen.add(word.lower())
            picked.append((word, label, wm.maps[k]))
    if not picked:
        picked = [(w, None, wm.maps[k]) for k, w in enumerate(wm.words[:MAX_WORDS])]
    return picked


def _finding_attention(word_maps: list[WordMaps], finding: str) -> np.ndarray:
    """Mean over prompts of the mean attention of the words naming ``finding`` (all words of a
    prompt that names it by no such word)."""
    from radalign.attention_maps import finding_label

    terms = set(re.findall(r"[a-z]+", finding.lower()))
    per_prompt = []
    for wm in word_maps:
        if not wm.words:
            continue
        hit = [k for k, w in enumerate(wm.words)
               if finding_label(w) == finding or w.lower() in terms]  # fmt: skip
        keep = hit or list(range(len(wm.words)))
        per_prompt.append(wm.maps[keep].mean(axis=0))
    return np.mean(per_prompt, axis=0)


def explain(
    model,
    scan: str | os.PathLike | np.ndarray,
    report: str | None = None,
    finding: str | None = None,
    **options: Any,
) -> Explanation:
    """Explain one scan against a report or a finding (``options``: those of
    :class:`Explainer`)."""
    return Explainer(model, **options).explain(scan, report=report, finding=finding)


def run_local_params(model_dir: str | os.PathLike) -> tuple[float, bool] | None:
    """``(loss.local_tau1, loss.local_normalize)`` of the run that saved ``model_dir``
    (its parent's ``config.yaml``), or None when there is none."""
    import yaml

    config = Path(model_dir).parent / "config.yaml"
    if not Path(model_dir).is_dir() or not config.is_file():
        return None
    try:
        loss = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("loss") or {}
        return float(loss.get("local_tau1", 4.0)), bool(loss.get("local_normalize", False))
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None
