"""Word–region attention maps of a model for one scan and its report, and the pointing game.

The attention of word l over the image regions r is GLoRIA's published form
``a_{l,r} = softmax_r(tau1 * w_l · v_r)`` (:meth:`WordRegionLoss.attention`), so each word's map
sums to 1 over the region grid.

Pointing game: a finding word of the report "hits" when the peak of its attention map,
upsampled to the mask size, lies inside the planted mask of the matching label. Only words whose
label has a mask for that scan are counted (a negated finding, "no effusion", has none).

Finding word -> planted label (:data:`FINDING_WORDS`)::

    effusion, effusions            -> Pleural Effusion
    cardiomegaly, heart            -> Cardiomegaly
    pneumothorax, pneumothoraces   -> Pneumothorax
    consolidation, consolidations  -> Consolidation
    opacity, opacities             -> Lung Opacity
    edema                          -> Edema
    atelectasis                    -> Atelectasis
    nodule(s), mass(es), lesion(s) -> Lung Lesion
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FINDING_WORDS",
    "finding_label",
    "load_masks",
    "pointing_game",
    "pointing_game_over",
    "to_image",
    "word_attention",
]

FINDING_WORDS: dict[str, str] = {
    "effusion": "Pleural Effusion",
    "effusions": "Pleural Effusion",
    "cardiomegaly": "Cardiomegaly",
    "heart": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
    "pneumothoraces": "Pneumothorax",
    "consolidation": "Consolidation",
    "consolidations": "Consolidation",
    "opacity": "Lung Opacity",
    "opacities": "Lung Opacity",
    "edema": "Edema",
    "atelectasis": "Atelectasis",
    "nodule": "Lung Lesion",
    "nodules": "Lung Lesion",
    "mass": "Lung Lesion",
    "masses": "Lung Lesion",
    "lesion": "Lung Lesion",
    "lesions": "Lung Lesion",
}


def finding_label(word: str, finding_words: Mapping[str, str] | None = None) -> str | None:
    """The planted label a report word names, or None (case-insensitive)."""
    table = FINDING_WORDS if finding_words is None else finding_words
    return table.get(word.lower().strip())


@torch.no_grad()
def word_attention(
    model,
    image_path: str | os.PathLike,
    report: str,
    *,
    tau1: float = 4.0,
    normalize: bool = False,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(image [H, W], words, maps [n_words, h, w])`` for one scan and its report.

    ``image`` is the scan as loaded (float in [0, 1]); ``words[k]`` is the k-th kept word of the
    report (punctuation dropped, as the model's tokenizer does) and ``maps[k]`` its attention over
    the ``h × w`` region grid (sums to 1). ``tau1``/``normalize`` should match the run's
    ``loss.local_tau1``/``loss.local_normalize``.
    """
    from radalign.encoders.imageio import load_image
    from radalign.explain.attention import word_region_maps

    image = load_image(image_path)
    pixels = model.transform(train=False)(image)[None]
    found = word_region_maps(model, pixels, [report], tau1=tau1, normalize=normalize)[0]
    words, maps = found.words, found.maps
    return np.asarray(image, dtype=np.float32), list(words), maps


def to_image(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample maps ``[..., h, w]`` (bilinear) to an image of ``shape`` (H, W).

    The model letterboxes scans (longest side to the input size, centred padding to a square),
    so the maps are upsampled to a square of side max(H, W) and the centre H × W is kept.
    """
    maps = np.asarray(maps, dtype=np.float32)
    lead = maps.shape[:-2]
    flat = torch.from_numpy(maps.reshape(-1, 1, *maps.shape[-2:]))
    height, width = int(shape[0]), int(shape[1])
    side = max(height, width)
    up = F.interpolate(flat, size=(side, side), mode="bilinear", align_corners=False)
    top, left = (side - height) // 2, (side - width) // 2
    up = up[:, 0, top : top + height, left : left + width]
    return up.numpy().reshape(*lead, height, width)


def pointing_game(
    maps: np.ndarray,
    words: Sequence[str],
    masks: Mapping[str, np.ndarray],
    finding_words: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """``(hits, total)`` over the finding words whose label has a mask in ``masks``.

    ``maps [n_words, h, w]`` as from :func:`word_attention`; ``masks`` maps label -> bool
    ``[H, W]``; ``finding_words`` maps word -> label (default :data:`FINDING_WORDS`).
    """
    hits = total = 0
    for k, word in enumerate(words):
        label = finding_label(word, finding_words)
        if label is None or label not in masks:
            continue
        mask = np.asarray(masks[label], dtype=bool)
        up = to_image(maps[k], mask.shape)
        peak = np.unravel_index(int(np.argmax(up)), up.shape)
        total += 1
        hits += bool(mask[peak])
    return hits, total


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Planted-finding masks of one phantom scan (``masks/<id>.npz``: label -> bool array)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k], dtype=bool) for k in z.files}


def pointing_game_over(
    model,
    scans: Sequence[tuple[str, str, str]],
    masks_dir: str | os.PathLike,
    *,
    tau1: float = 4.0,
    normalize: bool = False,
    limit: int = 100,
) -> tuple[int, int]:
    """Pointing game summed over ``(scan id, image path, report)`` triples that have masks,
    at most ``limit`` scans with at least one countable finding word."""
    from pathlib import Path

    hits = total = used = 0
    for scan_id, image_path, report in scans:
        path = Path(masks_dir) / f"{scan_id}.npz"
        if used >= limit or not path.is_file():
            continue
        masks = load_masks(path)
        if not masks:
            continue
        _, words, maps = word_attention(model, image_path, report, tau1=tau1, normalize=normalize)
        h, t = pointing_game(maps, words, masks)
        hits, total, used = hits + h, total + t, used + (t > 0)
    return hits, total
