"""Prompt sets for zero-shot classification: per class, positive and negative sentences.

A prompt set is a JSON (or YAML) file::

    {
      "name": "chexpert",
      "templates": {"positive": ["{}.", "There is {}."], "negative": ["No {}."]},   # optional
      "classes": {
        "Pleural Effusion": {
          "positive": ["Moderate left pleural effusion."],
          "negative": ["No pleural effusion."],
          "terms": ["pleural effusion"]                                          # optional
        }
      }
    }

Each class needs at least one positive and one negative sentence after expansion: every
``terms`` entry is put into each ``templates`` sentence (the ``{}`` slot) and appended to the
written sentences. Built-in sets ship as package data next to this module
(:func:`builtin_prompt_sets`); any other set is a file path, so users can add their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radalign.encoders.errors import InputError

__all__ = ["PromptSet", "PromptSetError", "builtin_prompt_sets", "load_prompt_set"]

POLARITIES: tuple[str, str] = ("positive", "negative")
_CLASS_KEYS = frozenset({"positive", "negative", "terms"})
_TOP_KEYS = frozenset({"name", "description", "templates", "classes"})
_BUILTIN_SUFFIX = "_prompts.json"


class PromptSetError(InputError):
    """A prompt set file that is missing, unreadable or malformed (reason ``"invalid prompt set"``
    or ``"prompt set not found"``)."""


def _err(where: str, detail: str, reason: str = "invalid prompt set") -> PromptSetError:
    return PromptSetError(where, reason, detail)


@dataclass(frozen=True)
class PromptSet:
    """Named classes, each with ``{"positive": [...], "negative": [...]}`` sentence lists."""

    name: str
    classes: dict[str, dict[str, list[str]]]
    description: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_classes(self.classes, self.source or self.name)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def positive(self, cls: str) -> list[str]:
        return list(self.classes[cls]["positive"])

    def negative(self, cls: str) -> list[str]:
        return list(self.classes[cls]["negative"])

    def subset(self, classes: list[str]) -> PromptSet:
        """The same set restricted to ``classes`` (in that order); KeyError names unknown ones."""
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            raise KeyError(f"prompt set {self.name!r} has no class(es) {unknown}")
        return PromptSet(
            self.name, {c: self.classes[c] for c in classes}, self.description, self.source
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "classes": self.classes}


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with radalign (``<name>_prompts.json`` files)."""
    here = Path(__file__).parent
    return sorted(p.name[: -len(_BUILTIN_SUFFIX)] for p in here.glob(f"*{_BUILTIN_SUFFIX}"))


def load_prompt_set(name_or_path: str | os.PathLike) -> PromptSet:
    """A built-in set by name (e.g. ``"chexpert"``) or a user ``.json``/``.yaml`` file."""
    text = str(name_or_path)
    builtin = Path(__file__).parent / f"{text}{_BUILTIN_SUFFIX}"
    if os.sep not in text and "/" not in text and builtin.is_file():
        path = builtin
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise _err(
                text,
                "no such file, and not a built-in set "
                f"(built-in: {', '.join(builtin_prompt_sets())})",
                reason="prompt set not found",
            )
    data = _read(path)
    return prompt_set_from_dict(data, source=str(path), default_name=path.stem)


def prompt_set_from_dict(
    data: Any, *, source: str = "<dict>", default_name: str = "custom"
) -> PromptSet:
    """Validate a parsed prompt-set document and expand its ``terms`` with its ``templates``."""
    if not isinstance(data, Mapping):
        raise _err(source, "a prompt set must be a mapping with a 'classes' key")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _err(source, f"unknown top-level key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    classes = data.get("classes")
    if not isinstance(classes, Mapping) or not classes:
        raise _err(source, "'classes' must be a non-empty mapping of class -> prompts")
    templates = _templates(data.get("templates"), source)
    out: dict[str, dict[str, list[str]]] = {}
    for cls, entry in classes.items():
        where = f"class {cls!r}"
        if not isinstance(cls, str) or not cls.strip():
            raise _err(source, f"class names must be non-empty strings, got {cls!r}")
        if not isinstance(entry, Mapping):
            raise _err(source, f"{where}: expected a mapping with 'positive' and 'negative'")
        bad = sorted(set(entry) - _CLASS_KEYS)
        if bad:
            raise _err(source, f"{where}: unknown key(s) {bad}; allowed: {sorted(_CLASS_KEYS)}")
        terms = _strings(entry.get("terms", []), source, f"{where} 'terms'")
        prompts = {}
        for pol in POLARITIES:
            written = _strings(entry.get(pol, []), source, f"{where} {pol!r}")
            expanded = [t.replace("{}", term) for term in terms for t in templates[pol]]
            prompts[pol] = list(dict.fromkeys(written + [_sentence(s) for s in expanded]))
        out[cls] = prompts
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _err(source, "'name' must be a non-empty string")
    return PromptSet(name, out, str(data.get("description", "")), source)


# ---------------------------------------------------------------------- helpers
def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _err(path, f"cannot read prompt set ({e})") from e
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise _err(path, f"invalid YAML ({e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _err(path, f"invalid JSON ({e})") from e


def _templates(raw: Any, source: str) -> dict[str, list[str]]:
    if raw is None:
        return {pol: [] for pol in POLARITIES}
    if not isinstance(raw, Mapping):
        raise _err(source, "'templates' must map positive/negative to lists")
    bad = sorted(set(raw) - set(POLARITIES))
    if bad:
        raise _err(source, f"unknown template key(s) {bad}; allowed: positive, negative")
    out = {}
    for pol in POLARITIES:
        items = _strings(raw.get(pol, []), source, f"templates {pol!r}")
        missing = [t for t in items if t.count("{}") != 1]
        if missing:
            raise _err(source, f"templates {pol!r} need exactly one '{{}}' slot each: {missing}")
        out[pol] = items
    return out


def _strings(raw: Any, source: str, what: str) -> list[str]:
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        raise _err(source, f"{what}: expected a list of strings, got {type(raw).__name__}")
    out = []
    for item in raw:
        if not isinstance(item, str) or not item.strip():
            raise _err(source, f"{what}: entries must be non-empty strings, got {item!r}")
        out.append(item.strip())
    return out


def _sentence(text: str) -> str:
    """Capitalise the first letter of an expanded template (``"{}."`` -> ``"Pneumonia."``)."""
    return text[:1].upper() + text[1:]


def _check_classes(classes: Any, where: str) -> None:
    if not isinstance(classes, Mapping) or not classes:
        raise _err(where, "a prompt set needs at least one class")
    for cls, entry in classes.items():
        if not isinstance(entry, Mapping) or set(entry) != set(POLARITIES):
            raise _err(where, f"class {cls!r} must have exactly 'positive' and 'negative' lists")
        for pol in POLARITIES:
            items = entry[pol]
            if not isinstance(items, list) or not items:
                raise _err(
                    where,
                    f"class {cls!r} has an empty {pol!r} prompt list "
                    "(give sentences, or 'terms' with top-level 'templates')",
                )
            if not all(isinstance(s, str) and s.strip() for s in items):
                raise _err(where, f"class {cls!r} {pol!r} has a blank prompt")
