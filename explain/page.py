"""Write an :class:`~radalign.explain.api.Explanation` to a folder: ``index.html`` (jinja2,
autoescaped, images embedded as data URIs), one PNG per map and per text, ``maps.npz`` (the
scan, every raw map and heatmap) and ``explain.json``; the folder is written atomically."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from radalign.explain.render import overlay_figure, words_figure

if TYPE_CHECKING:
    from radalign.explain.api import Explanation

TEMPLATE = "explain.html.j2"


@cache
def _template():
    from importlib.resources import files

    import jinja2

    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(files("radalign.explain").joinpath(TEMPLATE).read_text("utf-8"))


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_folder(e: Explanation, out: Path) -> Path:
    """See the module docstring; returns ``out / "index.html"``."""
    from radalign.encoders.atomic import atomic_dir
    from radalign.explain.api import _key

    doc = e.to_json()
    pngs: dict[str, bytes] = {}
    arrays: dict[str, np.ndarray] = {"image": e.image.astype(np.float32)}
    maps = []
    for i, m in enumerate(e.maps):
        key = _key(i, m)
        what = "word–region attention" if m.kind == "attention" else "integrated gradients"
        png = overlay_figure(e.image, m.heat, m.regions, f"{what}: {m.name}")
        pngs[f"{key}.png"] = png
        arrays[f"{key}.raw"] = m.raw.astype(np.float32)
        arrays[f"{key}.heat"] = m.heat.astype(np.float32)
        maps.append({"kind": what, "name": m.name, "label": m.label or "", "src": _uri(png),
                     "file": f"{key}.png", "regions": len(m.regions)})  # fmt: skip
    texts = []
    for j, t in enumerate(e.texts):
        values = t.ig if np.isfinite(t.ig).all() else t.attention_score
        label = "integrated gradients" if values is t.ig else "word–context score"
        png = words_figure(t.words, values, f"{label} per word")
        pngs[f"text-{j:02d}.png"] = png
        arrays[f"text-{j:02d}.ig"] = np.asarray(t.ig, dtype=np.float32)
        arrays[f"text-{j:02d}.score"] = np.asarray(t.attention_score, dtype=np.float32)
        rows = [(w, f"{a:+.4f}", f"{s:.3f}") for w, a, s in zip(t.words, t.ig, t.attention_score)]
        texts.append({"text": t.text, "src": _uri(png), "rows": rows,
                      "total": f"{t.ig_total:+.4f}", "gap": f"{t.ig_gap:.2g}"})  # fmt: skip
    html = _template().render(e=doc, maps=maps, texts=texts, similarity=f"{e.similarity:.4f}")
    with atomic_dir(out) as tmp:
        for name, png in pngs.items():
            (tmp / name).write_bytes(png)
        np.savez_compressed(tmp / "maps.npz", **arrays)
        (tmp / "explain.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        (tmp / "index.html").write_text(html, encoding="utf-8")
    return out / "index.html"
