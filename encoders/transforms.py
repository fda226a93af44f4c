"""Image preprocessing for the towers: albumentations pipelines for training and evaluation.

Evaluation letterboxes (longer side to ``image_size``, pad to a square with black), then
normalises. Training adds a random resized crop, a small affine and brightness/contrast.
Horizontal flips are off by default: reports name left and right, and a flipped image would
contradict its report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch


@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 5.0
    translate: float = 0.05
    shear_deg: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False
    p_affine: float = 0.5
    p_color: float = 0.5


class ImageTransform:
    """Picklable callable: a 2-D float32 image in [0, 1] -> ``[in_chans, S, S]`` float tensor."""

    def __init__(
        self,
        image_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int = 3,
        aug: AugmentConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.image_size = image_size
        self.train = train
        self.in_chans = in_chans
        self.mean = np.asarray(list(mean)[:in_chans], np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(list(std)[:in_chans], np.float32).reshape(-1, 1, 1)
        steps = [
            A.LongestMaxSize(max_size=image_size, interpolation=cv2.INTER_AREA),
            A.PadIfNeeded(image_size, image_size, border_mode=cv2.BORDER_CONSTANT, fill=0),
        ]
        if train:
            a = aug or AugmentConfig()
            steps += [
                A.RandomResizedCrop(
                    size=(image_size, image_size), scale=tuple(a.scale), ratio=tuple(a.ratio), p=1.0
                ),
                A.Affine(
                    rotate=(-a.rotate_deg, a.rotate_deg),
                    translate_percent=(-a.translate, a.translate),
                    shear=(-a.shear_deg, a.shear_deg),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    p=a.p_affine,
                ),
                A.RandomBrightnessContrast(
                    brightness_limit=a.brightness, contrast_limit=a.contrast, p=a.p_color
                ),
            ]
            if a.hflip:
                steps.append(A.HorizontalFlip(p=0.5))
        self.pipeline = A.Compose(steps, seed=seed)

    def set_seed(self, seed: int) -> None:
        """Reseed the augmentation (used per item so runs are reproducible and resumable)."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        img = self.pipeline(image=np.ascontiguousarray(image, dtype=np.float32))["image"]
        img = np.clip(img, 0.0, 1.0)
        chans = np.repeat(img[None], self.in_chans, axis=0)
        return torch.from_numpy((chans - self.mean) / self.std)
