"""Report text checks: malformed text (``entry_error``: bad encoding, truncated, template left
unfilled; ``missing``: placeholder-only sections) and report-stated facts that contradict the
metadata (``cross_modal``: sex, frontal projection, age)."""

from __future__ import annotations

import re

from radalign.audit.findings import Finding
from radalign.audit.table import AuditTable

__all__ = [
    "check_report_facts",
    "check_report_text",
    "stated_age",
    "stated_projection",
    "stated_sex",
]

_MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|â€[\u0080-\u00bf\u2122\u0153\u201d\u201c\u02dc]")
_PLACEHOLDER = re.compile(
    r"_{3,}|\bX{4,}\b|\[\s*(?:insert|blank|fill|tbd|todo)[^\]]*\]|"
    r"\[\*\*[^\]]*\*\*\]|\[[a-z]+(?:\s*/\s*[a-z]+)+\]|\bTEMPLATE\b|"
    r"\binsert \w+(?: \w+)? here\b|"
    r"\{\{[^}]*\}\}|<\s*(?:insert|blank|fill)[^>]*>|\bTBD\b|\bTODO\b",
    re.I,
)
_ONLY_FILLER = re.compile(
    r"^[\s._\-*:;,/()]*(?:(?:x{3,}|_{3,}|tbd|todo|-+|\.+|\?)"
    r"[\s._\-*:;,/()]*)+$",
    re.I,
)
_FEMALE = re.compile(r"\b(?:woman|women|female|she|her|hers|girl|lady|mrs|ms)\b", re.I)
_MALE = re.compile(r"\b(?:man|men|male|he|him|his|boy|gentleman|mr)\b", re.I)
_AGE = re.compile(
    r"\b(\d{1,3})[\s-]*(?:year|yr)s?[\s-]*old\b|\b(\d{1,3})\s*(?:yo|y/o|y\.o\.)\b|"
    r"\baged?\s+(\d{1,3})\b",
    re.I,
)
_AP = re.compile(r"\b(?:AP|antero-?posterior|portable|supine)\b(?!\s+and\s+lat)", re.I)
_PA = re.compile(r"\b(?:PA|postero-?anterior)\b", re.I)
#: A text that stops on a connective, article or preposition, or on a comma/hyphen, was cut off.
_CUT = re.compile(
    r"(?:\b(?:the|a|an|of|and|or|with|without|to|in|is|are|was|were|for|at|on|"
    r"by|from|which|that|there|no|of the|but|as|be|has|have)|[,\-/(])\s*$",
    re.I,
)
_TEXT_SECTIONS = ("FINDINGS", "IMPRESSION")
_SEX_CODE = re.compile(r"^\s*(?:_+\s*)?([FM])\b(?![-'.])")


def stated_sex(text: str) -> str | None:
    """``'F'``/``'M'`` when the text uses only female / only male words, else ``None``."""
    fem, mal = bool(_FEMALE.search(text)), bool(_MALE.search(text))
    if fem != mal:
        return "F" if fem else "M"
    return None


def _report_sex(sections: dict, text: str) -> str | None:
    """Sex from words in the text, or from MIMIC's ``INDICATION: ___F with ...`` shorthand."""
    said = stated_sex(text)
    for name in ("INDICATION", "HISTORY", "CLINICAL HISTORY"):
        m = _SEX_CODE.match(sections.get(name, "") or "")
        if m:
            code = m.group(1).upper()
            return code if said in (None, code) else None
    return said


def stated_age(text: str) -> float | None:
    """The one age the text states (``65-year-old``, ``65 yo``, ``aged 65``), else ``None``."""
    ages = {int(next(g for g in m.groups() if g)) for m in _AGE.finditer(text)}
    return float(ages.pop()) if len(ages) == 1 else None


def stated_projection(text: str) -> str | None:
    """``'AP'``/``'PA'`` when the text names only one frontal projection, else ``None``."""
    ap, pa = bool(_AP.search(text)), bool(_PA.search(text))
    if ap != pa:
        return "AP" if ap else "PA"
    return None


def check_report_text(table: AuditTable, *, min_words: int = 3) -> list[Finding]:
    """Bad encoding, truncated text, unfilled template placeholders in the findings/impression,
    and sections holding nothing but placeholders."""
    out: list[Finding] = []
    for row in table.frame.itertuples(index=False):
        raw, rep = row.report_raw or "", row.report or ""
        if not raw.strip():
            continue
        ids, paths = (row.id,), (row.image_path,)
        if _MOJIBAKE.search(raw):
            out.append(
                Finding(
                    "entry_error",
                    "malformed_encoding",
                    "high",
                    "report text has undecodable or double-encoded characters",
                    ids,
                    paths,
                )
            )
        secs = row.sections or {}
        body = " ".join(secs[k] for k in _TEXT_SECTIONS if secs.get(k)) if secs else rep
        if _PLACEHOLDER.search(body):
            n = len(_PLACEHOLDER.findall(body))
            out.append(
                Finding(
                    "entry_error",
                    "template_unfilled",
                    "medium",
                    f"{n} unfilled placeholder(s) in the findings/impression text",
                    ids,
                    paths,
                    score=float(n),
                )
            )
        for name in _TEXT_SECTIONS:
            text = secs.get(name, "")
            if text.strip() and _ONLY_FILLER.match(text):
                out.append(
                    Finding(
                        "missing",
                        "placeholder_section",
                        "medium",
                        f"section {name} holds only a placeholder ({text.strip()[:20]!r})",
                        ids,
                        paths,
                    )
                )
        last = (secs.get("IMPRESSION") or secs.get("FINDINGS") or rep).strip()
        if len(last.split()) >= min_words and _CUT.search(last):
            out.append(
                Finding(
                    "entry_error",
                    "truncated_report",
                    "medium",
                    f"report ends mid-sentence: ...{last[-30:]!r}",
                    ids,
                    paths,
                )
            )
    return out


def check_report_facts(table: AuditTable, *, age_tolerance: float = 2.0) -> list[Finding]:
    """Sex, frontal projection and age stated in the report against the metadata. The
    projection is compared with the frontal views of the whole study (a lateral image's report
    names the study's frontal view)."""
    f = table.frame
    out: list[Finding] = []
    frontal_of: dict[str, set] = {}
    for sid, view in zip(f["study_id"], f["view"]):
        if sid and view in ("AP", "PA"):
            frontal_of.setdefault(sid, set()).add(view)
    for row in f.itertuples(index=False):
        text = row.report_raw or row.report or ""
        if not text.strip():
            continue
        ids, paths = (row.id,), (row.image_path,)
        if row.sex:
            said = _report_sex(row.sections or {}, text)
            if said and said != row.sex:
                out.append(
                    Finding(
                        "cross_modal",
                        "report_sex_mismatch",
                        "high",
                        f"report speaks of a {'female' if said == 'F' else 'male'} "
                        f"patient, metadata sex is {row.sex}",
                        ids,
                        paths,
                    )
                )
        if row.view in ("AP", "PA"):
            said = stated_projection(row.report or "")  # header sections hold order templates
            views = frontal_of.get(row.study_id, {row.view}) if row.study_id else {row.view}
            if said and said not in views:
                out.append(
                    Finding(
                        "cross_modal",
                        "report_view_mismatch",
                        "medium",
                        f"report names an {said} view, the image is {row.view}"
                        if said == "AP"
                        else f"report names a {said} view, the image is {row.view}",
                        ids,
                        paths,
                    )
                )
        if row.age_valid == row.age_valid:
            said_age = stated_age(text)
            if said_age is not None and abs(said_age - row.age_valid) > age_tolerance:
                out.append(
                    Finding(
                        "cross_modal",
                        "report_age_mismatch",
                        "medium",
                        f"report states age {said_age:g}, metadata age {row.age:g}",
                        ids,
                        paths,
                    )
                )
    return out
