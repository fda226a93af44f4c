"""Integrated gradients (Sundararajan et al. 2017) of the image–text cosine similarity.

For an input ``x``, a baseline ``x0`` and ``f`` the cosine between the image and text
embeddings, ``IG_i = (x_i - x0_i) · mean_k ∂f/∂x_i (x0 + α_k (x - x0))`` with the midpoint
Riemann rule ``α_k = (k + 1/2) / steps``. Completeness: ``Σ_i IG_i ≈ f(x) - f(x0)``, the
better the more steps; :attr:`Attribution.gap` is the difference, a check on ``steps``.

* Over the pixels (:func:`pixel_ig`): the scan as the model sees it (its transform), baseline a
  black scan (all zeros before normalisation), text vector fixed.
* Over the word embeddings (:func:`word_ig`): the report tower's input (token) embeddings of
  the report's kept words, baseline zero vectors (special tokens and punctuation stay as they
  are), image embedding fixed; token attributions summed into words.

The ``steps`` interpolated inputs are run ``batch_size`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attribution", "input_embedding", "pixel_ig", "word_ig"]


@dataclass
class Attribution:
    """``values`` (the input's shape, or ``[W]`` words), ``f_input`` = f(x), ``f_baseline``."""

    values: np.ndarray
    f_input: float
    f_baseline: float

    @property
    def gap(self) -> float:
        """``|Σ values − (f(x) − f(x0))|``: the completeness error of the Riemann sum."""
        return abs(float(self.values.sum(dtype=np.float64)) - (self.f_input - self.f_baseline))


def _alphas(steps: int) -> torch.Tensor:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return (torch.arange(steps, dtype=torch.float64) + 0.5) / steps


def pixel_ig(
    model,
    pixels: torch.Tensor,
    target: torch.Tensor,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
    batch_size: int = 16,
) -> Attribution:
    """IG of ``cos(encode_image(x), target)`` over ``pixels [C, S, S]`` (``target [E]``).

    ``baseline`` defaults to zeros of ``pixels``' shape; pass the transform of a black scan for
    "black" in the model's normalised input space. ``values`` is ``[C, S, S]``.
    """
    device = model.device
    x = pixels.to(device, torch.float32)
    x0 = torch.zeros_like(x) if baseline is None else baseline.to(device, torch.float32)
    if x0.shape != x.shape:
        raise ValueError(f"baseline shape {tuple(x0.shape)} != input shape {tuple(x.shape)}")
    t = F.normalize(target.to(device, torch.float32).reshape(1, -1), dim=-1)
    delta = x - x0
    total = torch.zeros_like(x, dtype=torch.float64)
    for chunk in _alphas(steps).split(max(1, int(batch_size))):
        a = chunk.to(device, torch.float32).reshape(-1, 1, 1, 1)
        xs = (x0 + a * delta).requires_grad_(True)
        f = (model.encode_image(xs) * t).sum(dim=-1)
        (grad,) = torch.autograd.grad(f.sum(), xs)
        total += grad.sum(dim=0, dtype=torch.float64)
    with torch.no_grad():
        ends = (model.encode_image(torch.stack([x, x0])) * t).sum(dim=-1)
    values = (delta.double() * total / steps).cpu().numpy()
    return Attribution(values, float(ends[0]), float(ends[1]))


def input_embedding(text_tower: nn.Module) -> nn.Module:
    """The token-embedding layer of a report tower (Hugging Face or open_clip)."""
    inner = getattr(text_tower, "model", None)
    if inner is not None and hasattr(inner, "get_input_embeddings"):
        layer = inner.get_input_embeddings()
        if layer is not None:
            return layer
    for owner in (text_tower, inner):
        layer = getattr(owner, "token_embedding", None)
        if isinstance(layer, nn.Module):
            return layer
    raise ValueError(
        f"cannot find the token embeddings of {type(text_tower).__name__} for word attributions"
    )


def word_ig(
    model,
    tokens: dict[str, torch.Tensor],
    image_embedding: torch.Tensor,
    *,
    steps: int = 32,
    batch_size: int = 16,
) -> Attribution:
    """IG of ``cos(image_embedding, encode_text(report))`` over the word embeddings of one
    tokenised report (``tokens`` with batch 1, from ``model.tokenize``). ``values`` is ``[W]``,
    one attribution per kept word (its tokens' attributions summed)."""
    device = model.device
    tokens = {k: v.to(device) for k, v in tokens.items()}
    if tokens["input_ids"].shape[0] != 1:
        raise ValueError("word_ig explains one report at a time")
    word_index = tokens["word_index"][0]
    n_words = int(word_index.max().item()) + 1
    if n_words < 1:
        raise ValueError("the report has no words to attribute")
    is_word = (word_index >= 0).to(torch.float32)[None, :, None]  # [1, T, 1]
    img = F.normalize(image_embedding.to(device, torch.float32).reshape(1, -1), dim=-1)
    layer = input_embedding(model.text_tower)
    state: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        base = output.detach()[:1].float()  # [1, T, H]: the report's token embeddings
        scale = state["alpha"].reshape(-1, 1, 1) * is_word + (1.0 - is_word)
        interp = (scale * base).to(output.dtype).requires_grad_(True)
        state["interp"], state["emb"] = interp, base
        return interp

    def similarity(alphas: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        state["alpha"] = alphas.to(device, torch.float32)
        batch = {k: v.expand(len(alphas), -1) for k, v in tokens.items()}
        with torch.enable_grad() if grad else torch.no_grad():
            f = (model.encode_text(batch) * img).sum(dim=-1)
            g = torch.autograd.grad(f.sum(), state["interp"])[0] if grad else None
        return f, g

    handle = layer.register_forward_hook(hook)
    try:
        emb_total = None
        for chunk in _alphas(steps).split(max(1, int(batch_size))):
            _, grad = similarity(chunk, grad=True)
            g = grad.double().sum(dim=0)  # [T, H]
            emb_total = g if emb_total is None else emb_total + g
        ends, _ = similarity(torch.tensor([1.0, 0.0]), grad=False)
    finally:
        handle.remove()
    delta = state["emb"][0].double() * is_word[0].double()  # x - x0, x0 = 0 on words
    per_token = (delta * emb_total / steps).sum(dim=-1)  # [T]
    slot = torch.where(word_index < 0, torch.full_like(word_index, n_words), word_index)
    per_word = torch.zeros(n_words + 1, dtype=torch.float64, device=device)
    per_word.scatter_add_(0, slot, per_token)
    return Attribution(per_word[:n_words].cpu().numpy(), float(ends[0]), float(ends[1]))
