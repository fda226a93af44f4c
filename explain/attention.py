"""Word–region attention of a model's report words over the region grid of one scan.

GLoRIA's published form ``a_{l,r} = softmax_r(tau1 * w_l · v_r)``
(:meth:`radalign.pretrain.local_loss.WordRegionLoss.attention`): each word's map sums to 1 over
the ``h × w`` grid. Beside the maps, each word gets GLoRIA's word-level score, the cosine
between the word feature ``w_l`` and its attention-weighted image context ``c_l = Σ_r a_{l,r}
v_r``: how well the scan supports that word (the per-word "attention" attribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["WordMaps", "word_region_maps"]


@dataclass
class WordMaps:
    """One text's ``words``, their ``maps [L, h, w]`` (each sums to 1) and ``scores [L]``."""

    text: str
    words: list[str]
    maps: np.ndarray
    scores: np.ndarray


@torch.no_grad()
def word_region_maps(
    model,
    pixels: torch.Tensor,
    texts: Sequence[str],
    *,
    tau1: float = 4.0,
    normalize: bool = False,
) -> list[WordMaps]:
    """Attention maps of every kept word of each of ``texts`` over the scan ``pixels [1, C, S, S]``
    (the model's transform of one scan). ``tau1``/``normalize`` should match the run's
    ``loss.local_tau1``/``loss.local_normalize``."""
    from radalign.pretrain.local_loss import WordRegionLoss

    if pixels.ndim != 4 or pixels.shape[0] != 1:
        raise ValueError(f"pixels must be [1, C, S, S], got {tuple(pixels.shape)}")
    device = model.device
    img = model.image_features(pixels.to(device))
    regions = img.regions[0].float()
    h, wd = img.grid
    tokens, words = model.tokenizer.encode(list(texts))
    tokens = {k: v.to(device) for k, v in tokens.items()}
    txt = model.text_features(tokens)
    loss = WordRegionLoss(tau1=tau1, form="paper", normalize=normalize)
    out = []
    for b, text in enumerate(texts):
        n_words = len(words[b])
        if txt.words.shape[1] < n_words:
            raise RuntimeError(f"{txt.words.shape[1]} word features for {n_words} words")
        w = txt.words[b, :n_words].float()
        mask = txt.word_mask[b, :n_words]
        attn = loss.attention(regions, w, mask)  # [L, R]
        context = attn @ regions  # [L, D]
        scores = F.cosine_similarity(w, context, dim=-1) * mask
        out.append(
            WordMaps(
                text=str(text),
                words=list(words[b]),
                maps=attn.reshape(n_words, h, wd).cpu().numpy().astype(np.float32),
                scores=scores.cpu().numpy().astype(np.float32),
            )
        )
    return out
