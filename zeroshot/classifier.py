"""Zero-shot classification of scans (or reports) with positive/negative prompt pairs.

For every class ``c`` of a :class:`~radalign.zeroshot.prompts.PromptSet` the positive sentences
are embedded with the report tower, averaged and re-normalised (prompt ensembling) into
``t_c+``; the negative sentences likewise into ``t_c-``.  The ``2C`` class vectors live in a
flat FAISS :class:`~radalign.retrieval.index.Index`, so scoring a batch of embeddings is one
search over all of them.  The probability that ``c`` is present in an embedding ``x`` is the
softmax over the pair::

    p_c(x) = exp(s·cos(x, t_c+)) / (exp(s·cos(x, t_c+)) + exp(s·cos(x, t_c-)))
           = sigmoid(s · (cos(x, t_c+) - cos(x, t_c-)))

with ``s`` the model's learned logit scale ``exp(model.logit_scale)`` clamped to at most 100
(CLIP's cap), or ``1 / temperature`` when a temperature is given.  Swapping a class's positive
and negative prompts turns ``p`` into ``1 - p``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from radalign.encoders.precision import Precision, autocast, resolve_precision
from radalign.retrieval.index import Index
from radalign.zeroshot.prompts import PromptSet, load_prompt_set

__all__ = ["MAX_LOGIT_SCALE", "PromptClassifier", "pair_probability"]

MAX_LOGIT_SCALE = 100.0


def pair_probability(cos_pos: np.ndarray, cos_neg: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over (positive, negative) of ``scale * cos``: the positive's share, in [0, 1]."""
    d = scale * (np.asarray(cos_pos, np.float64) - np.asarray(cos_neg, np.float64))
    return 0.5 * (1.0 + np.tanh(0.5 * d))  # = sigmoid(d), without overflow warnings


class PromptClassifier:
    """Scores embeddings against a prompt set's class vectors (see the module docstring).

    ``temperature`` replaces the model's logit scale by ``1 / temperature``; ``device`` is where
    the prompts are embedded (default: the model's device), in ``precision`` (``auto``: bf16
    where native and fast, else fp32; see :mod:`radalign.encoders.precision`). The class vectors
    and all scoring stay float32 / float64.
    """

    def __init__(
        self,
        model,
        prompt_set: PromptSet | str,
        *,
        temperature: float | None = None,
        batch_size: int = 128,
        device: str | torch.device | None = None,
        precision: str | Precision = "auto",
    ) -> None:
        if isinstance(prompt_set, str):
            prompt_set = load_prompt_set(prompt_set)
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.prompt_set = prompt_set
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else model.device
        self.precision = resolve_precision(precision, self.device)
        if temperature is not None:
            self.scale = 1.0 / float(temperature)
        else:
            self.scale = float(min(float(model.logit_scale.detach().exp()), MAX_LOGIT_SCALE))
        classes = prompt_set.class_names
        groups = [prompt_set.positive(c) if j == 0 else prompt_set.negative(c) for c in classes
                  for j in (0, 1)]  # fmt: skip
        vectors = self._ensemble(groups)  # rows: c0 positive, c0 negative, c1 positive, ...
        meta = pd.DataFrame(
            {
                "id": [f"{c}|{p}" for c in classes for p in ("positive", "negative")],
                "class": [c for c in classes for _ in (0, 1)],
                "polarity": ["positive", "negative"] * len(classes),
            }
        )
        self.index = Index.build(vectors, meta, fingerprint=model.fingerprint(), factory="Flat")

    # ------------------------------------------------------------------ embedding
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised report-tower embeddings ``[len(texts), E]`` (float32)."""
        texts = list(texts)
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.inference_mode():
                for s in range(0, len(texts), self.batch_size):
                    tokens = self.model.tokenize(texts[s : s + self.batch_size])
                    tokens = {k: v.to(self.device) for k, v in tokens.items()}
                    with autocast(self.device, self.precision):
                        vectors = self.model.encode_text(tokens).float()
                    if self.precision.reduced:
                        vectors = F.normalize(vectors, dim=-1)
                    out.append(vectors.cpu().numpy())
        finally:
            self.model.train(was_training)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _ensemble(self, groups: list[list[str]]) -> np.ndarray:
        """One unit vector per group of prompts: the re-normalised mean of their embeddings
        (all prompts embedded in one batched pass)."""
        emb = self.embed_texts([t for g in groups for t in g]).astype(np.float64)
        owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        sums = np.zeros((len(groups), emb.shape[1]))
        np.add.at(sums, owner, emb)
        mean = sums / np.array([len(g) for g in groups], dtype=np.float64)[:, None]
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        if not (norm > 0).all():
            raise ValueError("a class's prompt embeddings average to zero; cannot normalise")
        return (mean / norm).astype(np.float32)

    # ------------------------------------------------------------------ accessors
    @property
    def classes(self) -> list[str]:
        return self.prompt_set.class_names

    @property
    def dim(self) -> int:
        return int(self.index.dim) if hasattr(self, "index") else int(self.model.config.embed_dim)

    @property
    def positive_vectors(self) -> np.ndarray:
        """Ensembled positive class vectors ``[C, E]`` (unit length)."""
        return np.asarray(self.index.vectors[0::2])

    @property
    def negative_vectors(self) -> np.ndarray:
        """Ensembled negative class vectors ``[C, E]`` (unit length)."""
        return np.asarray(self.index.vectors[1::2])

    # ------------------------------------------------------------------ scoring
    def similarities(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosines ``(to positives [N, C], to negatives [N, C])`` from one index search."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be [N, E], got shape {x.shape}")
        n, c = len(x), len(self.classes)
        if n == 0:
            return np.zeros((0, c)), np.zeros((0, c))
        res = self.index.search(x, 2 * c)
        sims = np.empty((n, 2 * c), dtype=np.float64)
        np.put_along_axis(sims, res.indices, res.scores.astype(np.float64), axis=1)
        return sims[:, 0::2], sims[:, 1::2]

    def predict(
        self, image_embeddings: np.ndarray, ids: Sequence[str] | pd.Index | None = None
    ) -> pd.DataFrame:
        """Per-class probabilities ``[N, C]`` (columns = :attr:`classes`, index = ``ids``)."""
        pos, neg = self.similarities(image_embeddings)
        probs = pair_probability(pos, neg, self.scale)
        index = pd.Index(list(ids), name="id") if ids is not None else None
        if index is not None and len(index) != len(probs):
            raise ValueError(f"{len(index)} ids for {len(probs)} embeddings")
        return pd.DataFrame(probs, columns=self.classes, index=index)

    def predict_texts(
        self, texts: Sequence[str], ids: Sequence[str] | pd.Index | None = None
    ) -> pd.DataFrame:
        """The same scoring applied to report embeddings (e.g. to label reports)."""
        return self.predict(self.embed_texts(texts), ids)

    def decide(
        self, probs: pd.DataFrame, threshold: float | Mapping[str, float] = 0.5
    ) -> pd.DataFrame:
        """``probs >= threshold`` per class (one float, or a mapping class -> threshold)."""
        if isinstance(threshold, Mapping):
            missing = [c for c in probs.columns if c not in threshold]
            if missing:
                raise KeyError(f"no threshold for class(es) {missing}")
            thr = pd.Series({c: float(threshold[c]) for c in probs.columns})
        else:
            thr = pd.Series(float(threshold), index=probs.columns)
        return probs.ge(thr, axis=1)

    def __repr__(self) -> str:
        return (
            f"PromptClassifier(prompt_set={self.prompt_set.name!r}, classes={len(self.classes)}, "
            f"scale={self.scale:.3g})"
        )
