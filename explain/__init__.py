"""``radalign.explain``: why the model said what it said: word-region attention maps and integrated-gradient maps, and their evaluation.

``explain(model, scan, report=..., finding=...) -> Explanation`` (see :mod:`.api`);
``Explanation.save(folder)`` writes PNGs, an HTML page, ``maps.npz`` and ``explain.json``.
"""

from radalign.explain.api import Explainer, Explanation, ImageMap, TextAttribution, explain

__all__ = ["Explainer", "Explanation", "ImageMap", "TextAttribution", "explain"]
