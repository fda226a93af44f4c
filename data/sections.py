"""Split free-text radiology reports into sections and choose the text a model trains on.

:func:`split_sections` turns a MIMIC-CXR style report into ``{"HEADER": text}``;
:func:`select_report` picks the training text from it (``findings+impression`` by default).

What counts as a header
    A phrase at the start of a line (indentation allowed) followed by a colon, with or without
    text after the colon on the same line:

    * the usual section names in any letter case (``FINDINGS:``, ``Impression:``,
      ``INDICATION:``, ``CLINICAL HISTORY:``, ``REASON FOR EXAMINATION:``, ``COMPARISON:``,
      ``TECHNIQUE:``, ``EXAMINATION:``, ``WET READ:``, ``ADDENDUM:``, ``FINDINGS/IMPRESSION:``, ...);
    * any other phrase written wholly in upper case (``PA AND LATERAL VIEWS OF THE CHEST:``,
      ``UNDERLYING MEDICAL CONDITION:``);
    * a usual section name in upper case alone on its line, without colon (``IMPRESSION``);
    * the marker lines ``FINAL REPORT`` / ``PRELIMINARY REPORT`` (dropped; text after them and
      before the next header joins ``PREAMBLE``), ``FINAL ADDENDUM`` (starts ``ADDENDUM``) and
      ``WET READ`` / ``WET READ VERSION #n`` (colon optional).

    ``word:`` in the middle of a line is never a header, nor is a mixed-case phrase that is not a
    usual section name (``Heart: normal`` stays text).

Keys
    Upper case with single spaces; plurals and spellings of the same section are merged
    (``IMPRESSIONS`` -> ``IMPRESSION``, ``FINDINGS AND IMPRESSION`` -> ``FINDINGS/IMPRESSION``,
    ``WET READ VERSION #2`` -> ``WET READ``, ``INDICATIONS`` -> ``INDICATION``). Text before the
    first header is ``PREAMBLE``. A header that repeats has its texts joined in order. Sections
    left empty after cleaning are dropped.

Structure rules
    * Inside ``FINDINGS``/``IMPRESSION`` (or a body section such as ``PA AND LATERAL VIEWS OF
      THE CHEST``) an upper-case phrase that is neither a usual section name nor administrative
      (``LUNGS: clear.``, ``HEART: normal size.``) is a sub-heading and stays in the text.
    * A short administrative section (``INDICATION``, ``HISTORY``, ``COMPARISON``, ``TECHNIQUE``,
      ``EXAMINATION``, ``REASON ...``, ``... CONDITION``) ends at its first blank line once it has
      text; unheaded paragraphs after it are collected as ``BODY`` (MIMIC often writes the
      findings as a bare paragraph after the indication).
    * ``WET READ`` (the preliminary read placed above ``FINAL REPORT``) and ``ADDENDUM`` run to
      the next header or marker and are never part of findings or impression.

Cleaning (every section)
    De-identification placeholders are removed: runs of two or more underscores (MIMIC ``___``,
    also the ``_____`` rule lines) and IU X-ray's ``XXXX`` (four or more capital X as a word),
    together with a hyphen that touches them (``___-year-old`` -> ``year-old``,
    ``x-XXXX.`` -> ``x.``). Wrapped lines are joined, whitespace is collapsed to single spaces,
    empty brackets are dropped, a space before ``, . ; : ! ? )`` that ends a word is removed and a
    ``, ; :`` directly before other final punctuation is dropped (``Dr. ___ on ___.`` ->
    ``Dr. on.``); leading punctuation of a section is stripped.

    Guarantee (tested with hypothesis on arbitrary text): the non-space characters of every
    section are a subsequence of the input's non-space characters (cleaning only deletes and
    re-spaces), and every whitespace-separated token of every section, once the final
    punctuation ``.,;:!?)`` that cleaning may attach to it is stripped, is a substring of the
    input. :func:`split_sections` never raises.

Choosing the training text (:func:`select_report`)
    ``findings+impression`` (default): findings, then impression, joined by a space. Impression
    alone is short and often a verdict ("No acute process."), while findings carry the
    localised description (side, zone, size) that a word-region loss such as GLoRIA's can align
    with image regions; the impression adds the summary wording used by zero-shot prompts.
    When one of the two is missing the other is used alone.

    *findings* is ``FINDINGS``; else ``FINDINGS/IMPRESSION``; else the body text: sections under
    other non-administrative headers (``PA AND LATERAL VIEWS OF THE CHEST``) and ``BODY``
    paragraphs, in order. *impression* is ``IMPRESSION``, else ``CONCLUSION``, else ``SUMMARY``,
    else ``FINDINGS/IMPRESSION``.

    Reports with neither findings nor impression: if the report has no section header at all
    (only marker lines, a wet read or an addendum around it), the whole cleaned unheaded text
    (``PREAMBLE``) is the body and serves as findings; ``findings+impression`` then returns it.
    A report that has headers but only administrative ones (indication, comparison, history,
    wet read, addendum, ...) has no usable section: :class:`InputError` ``"no usable section"``.
    A report that is empty after cleaning raises ``"empty report"``.

    ``impression`` / ``findings`` return only that section (no fallback to the other);
    ``longest`` the one with more words (findings on a tie, either when only one exists);
    ``full`` the whole cleaned text, headers included.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from radalign.encoders.errors import InputError

__all__ = [
    "SECTION_CHOICES",
    "clean_text",
    "findings_text",
    "impression_text",
    "select_report",
    "select_sections",
    "split_sections",
]

SECTION_CHOICES: tuple[str, ...] = (
    "findings+impression",
    "impression",
    "findings",
    "longest",
    "full",
)

_KNOWN_NAMES = (
    r"findings?\s*(?:/|&|\band\b)\s*impressions?",
    r"impressions?\s*(?:/|&|\band\b)\s*findings?",
    r"findings?",
    r"impressions?",
    r"conclusions?",
    r"summary",
    r"clinical\s+indications?",
    r"indications?",
    r"clinical\s+history",
    r"clinical\s+information",
    r"history",
    r"reason\s+for\s+(?:this\s+)?(?:exam|examination|study)",
    r"comparisons?",
    r"techniques?",
    r"examination",
    r"exam",
    r"procedure",
    r"addendum",
    r"notifications?",
    r"recommendations?",
)
_KNOWN = "|".join(_KNOWN_NAMES)
_UPPER_PHRASE = r"[A-Z][A-Z /&(),'\-]{0,68}[A-Z)]"
_HEADER = re.compile(
    r"^[ \t]*(?=[A-Za-z])(?:"
    r"(?P<wet>WET[ \t]+READ(?:[ \t]+VERSION[ \t]*\#?[ \t]*\d+)?)[ \t]*:?"
    r"|(?P<marker>(?:FINAL|PRELIMINARY)[ \t]+(?:REPORT|ADDENDUM))[ \t]*$"
    rf"|(?P<known>(?i:{_KNOWN}))[ \t]*:"
    rf"|(?P<upper>{_UPPER_PHRASE})[ \t]*:"
    r"|(?P<bare>FINDINGS?(?:/IMPRESSIONS?)?|IMPRESSIONS?|CONCLUSIONS?|INDICATIONS?|HISTORY"
    r"|COMPARISONS?|TECHNIQUE|EXAMINATION|ADDENDUM)[ \t]*$"
    r")",
    re.MULTILINE,
)
# placeholders: split into literal-led patterns (a leading "-?" or "\b" makes re scan slowly)
_HYPHEN_BEFORE_PLACEHOLDER = re.compile(r"-(?=__|X{4,}(?!\w))")
_UNDERSCORES = re.compile(r"__+-?")
_XXXX = re.compile(r"X(?<!\wX)XXX+(?!\w)-?")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_EMPTY_BRACKETS = re.compile(r"[(\[]\s*[)\]]")
_SPACE_BEFORE_PUNCT = re.compile(r" (?=[,.;:!?)](?: |$))")
_PUNCT_BEFORE_PUNCT = re.compile(r"[,;:](?=[,.;:!?](?: |$))")

_CANONICAL = {
    "FINDING": "FINDINGS",
    "IMPRESSIONS": "IMPRESSION",
    "CONCLUSIONS": "CONCLUSION",
    "INDICATIONS": "INDICATION",
    "CLINICAL INDICATIONS": "CLINICAL INDICATION",
    "COMPARISONS": "COMPARISON",
    "TECHNIQUES": "TECHNIQUE",
    "NOTIFICATIONS": "NOTIFICATION",
    "RECOMMENDATIONS": "RECOMMENDATION",
}
_COMBINED = "FINDINGS/IMPRESSION"
_CONTENT_KEYS = frozenset({"FINDINGS", "IMPRESSION", "CONCLUSION", "SUMMARY", _COMBINED})
_IMPRESSION_KEYS = ("IMPRESSION", "CONCLUSION", "SUMMARY", _COMBINED)
#: Keys that are not a header of their own: a report with only these has "no header at all".
_HEADERLESS_KEYS = frozenset({"PREAMBLE", "WET READ", "ADDENDUM"})
#: Words that mark an administrative (non-body) section.
_ADMIN_WORDS = re.compile(
    r"INDICATION|HISTORY|REASON|CONDITION|COMPARISON|TECHNIQUE|EXAM|PROCEDURE|CLINICAL|"
    r"NOTIFICATION|RECOMMENDATION|ADDENDUM|WET READ|PREAMBLE|\bNOTE|\bDATE|\bTIME|REFERENCE|"
    r"DICTATED|SIGNED|ATTENDING|RADIOLOGIST|COMMUNICATION|DISCUSSED"
)
#: Administrative sections that end at their first blank line (once they hold text).
_SHORT_ADMIN = re.compile(r"INDICATION|HISTORY|REASON|CONDITION|COMPARISON|TECHNIQUE|EXAM")


def _strip_placeholders(text: str) -> str:
    under, xxxx = "__" in text, "XXXX" in text
    if not (under or xxxx):
        return text
    text = _HYPHEN_BEFORE_PLACEHOLDER.sub(" ", text)
    if under:
        text = _UNDERSCORES.sub(" ", text)
    if xxxx:
        text = _XXXX.sub(" ", text)
    return text


@functools.lru_cache(maxsize=4096)
def _canonical(name: str) -> str:
    key = " ".join(name.upper().split())
    if key.startswith(("FINDING", "IMPRESSION")) and ("/" in key or "&" in key or " AND " in key):
        return _COMBINED
    return _CANONICAL.get(key, key)


def _is_admin(key: str) -> bool:
    return key not in _CONTENT_KEYS and _ADMIN_WORDS.search(key) is not None


def clean_text(text: str) -> str:
    """Remove placeholders, join lines, collapse whitespace and orphan punctuation (see module)."""
    text = " ".join(_strip_placeholders(text).split())
    if not text:
        return ""
    if "(" in text or "[" in text:
        text = _EMPTY_BRACKETS.sub(" ", text)
        text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub("", text)
    text = _PUNCT_BEFORE_PUNCT.sub("", text)
    return text.lstrip(" ,.;:!?)").rstrip(" ,;:")


def split_sections(text: str | None) -> dict[str, str]:
    """``{"FINDINGS": ..., "IMPRESSION": ..., "PREAMBLE": ..., ...}`` of a report; never raises.

    See the module docstring for the header rules and the cleaning applied to each section.
    """
    if text is None:
        return {}
    if not isinstance(text, str):
        text = str(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _strip_placeholders(text)
    parts: list[tuple[str, str]] = []
    current, start = "PREAMBLE", 0
    for m in _HEADER.finditer(text):
        kind = m.lastgroup
        if kind == "upper":
            name = _canonical(m.group("upper"))
            inline = current != "PREAMBLE" and not _is_admin(current)
            if inline and not _is_admin(name) and name not in _CONTENT_KEYS:
                continue  # a sub-heading inside findings/impression/body ("LUNGS: clear.")
        elif kind == "marker":
            name = "ADDENDUM" if m.group("marker").upper().endswith("ADDENDUM") else "PREAMBLE"
        elif kind == "wet":
            name = "WET READ"
        else:
            name = _canonical(m.group(kind))
        parts.append((current, text[start : m.start()]))
        current, start = name, m.end()
    parts.append((current, text[start:]))

    collected: dict[str, list[str]] = {}
    for key, chunk in parts:
        if _SHORT_ADMIN.search(key) and key not in _CONTENT_KEYS:
            first = len(chunk) - len(chunk.lstrip())
            brk = _BLANK_LINE.search(chunk, first)
            if brk is not None:
                head = clean_text(chunk[: brk.start()])
                if head:
                    collected.setdefault(key, []).append(head)
                key, chunk = "BODY", chunk[brk.end() :]
        cleaned = clean_text(chunk)
        if cleaned:
            collected.setdefault(key, []).append(cleaned)
    # keep first-appearance order of keys, joining repeats
    return {key: " ".join(texts) for key, texts in collected.items()}


def findings_text(sections: Mapping[str, str]) -> str:
    """The findings of a sectioned report ('' if none); see the module docstring."""
    if sections.get("FINDINGS"):
        return sections["FINDINGS"]
    if sections.get(_COMBINED):
        return sections[_COMBINED]
    body = [t for k, t in sections.items() if t and k not in _CONTENT_KEYS and not _is_admin(k)]
    if body:
        return " ".join(body)
    if sections.get("PREAMBLE") and set(sections) <= _HEADERLESS_KEYS:
        return sections["PREAMBLE"]
    return ""


def impression_text(sections: Mapping[str, str]) -> str:
    """The impression of a sectioned report ('' if none)."""
    for key in _IMPRESSION_KEYS:
        if sections.get(key):
            return sections[key]
    return ""


def select_sections(
    sections: Mapping[str, str], section: str = "findings+impression", *, full_text: str = ""
) -> str:
    """The training text chosen from already split ``sections``; see :func:`select_report`."""
    if section not in SECTION_CHOICES:
        raise ValueError(f"section must be one of {', '.join(SECTION_CHOICES)}; got {section!r}")
    if section == "full":
        out = clean_text(full_text) if full_text else " ".join(t for t in sections.values() if t)
        if not out:
            raise InputError(None, "empty report")
        return out
    if not any(sections.values()):
        raise InputError(None, "empty report")
    find, imp = findings_text(sections), impression_text(sections)
    if section == "findings":
        out = find
    elif section == "impression":
        out = imp
    elif section == "longest":
        out = find if len(find.split()) >= len(imp.split()) else imp
    else:
        out = find if imp == find else " ".join(t for t in (find, imp) if t)
    if not out:
        raise InputError(None, "no usable section", f"section={section}; has {', '.join(sections)}")
    return out


def select_report(text: str | None, section: str = "findings+impression") -> str:
    """The text of ``text`` to train on, by ``section`` (see the module docstring).

    Raises :class:`InputError` ``"empty report"`` for blank text and ``"no usable section"`` when
    the chosen section(s) are absent.
    """
    if section not in SECTION_CHOICES:
        raise ValueError(f"section must be one of {', '.join(SECTION_CHOICES)}; got {section!r}")
    if text is None or not str(text).strip():
        raise InputError(None, "empty report")
    return select_sections(split_sections(text), section, full_text=str(text))


_SIDE_RE = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {
    "left": "right",
    "right": "left",
    "Left": "Right",
    "Right": "Left",
    "LEFT": "RIGHT",
    "RIGHT": "LEFT",
}


def flip_laterality(text: str) -> str:
    """Swap the words left and right (lower, Capitalised or UPPER case kept): a report that
    names the other side, for laterality hard negatives and planted-mismatch evaluation."""
    return _SIDE_RE.sub(lambda m: _SWAP[m.group(0)], text)
