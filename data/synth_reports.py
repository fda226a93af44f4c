"""MIMIC-like radiology reports written to match a phantom's planted findings.

Every sentence is generated together with the CheXpert labels it expresses (1 positive,
0 negated, -1 uncertain), so the report-derived labels (as the CheXpert labeler would give,
from the IMPRESSION, else FINDINGS, else the whole text) are known exactly. Lateral findings
always name their side explicitly, so :func:`radalign.data.sections.flip_laterality` turns a report into one that
contradicts the image.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
from radalign.data.synth_anatomy import CHEXPERT_LABELS, Finding

Labels = dict[str, float]
Sentence = tuple[str, Labels]

STYLES = ("full", "findings_only", "impression_only", "no_headers")
STYLE_P = (0.935, 0.025, 0.025, 0.015)
WRAP = 77  # text columns after the one-space indent, as in MIMIC-CXR

_NOT_PATHOLOGY = {"No Finding", "Support Devices"}


@dataclass
class Report:
    text: str
    sections: dict[str, str]  # lower-case section name -> unwrapped text
    labels: dict[str, float | None]  # CheXpert-style labels derived from the text
    style: str
    sentences: list[Sentence] = field(default_factory=list)  # label-source sentences


# ----------------------------------------------------------------------------------------------
# small helpers


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _cm(x: float | None) -> str:
    x = 2.0 if x is None else float(x)
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def zone_phrase(side: str, zone: str | None, rng: np.random.Generator) -> str:
    """E.g. "right lower lobe", "left mid lung zone"; always names the side."""
    zone = zone or "lower"
    if zone == "upper":
        opts = [f"{side} upper lobe", f"{side} upper lung", f"{side} upper lung zone"]
    elif zone == "middle":
        opts = (
            ["right middle lobe", "right mid lung", "right mid lung zone"]
            if side == "right"
            else ["left mid lung", "left mid lung zone", "lingula of the left lung"]
        )
    else:
        opts = [f"{side} lower lobe", f"{side} lung base", f"{side} lower lung zone"]
    return _choice(rng, opts)


# ----------------------------------------------------------------------------------------------
# positive statements: (findings-section sentence, impression sentence)


#: Pleural effusion findings sentences, bilateral (True) or one-sided; ``{size}``/``{Size}`` and
#: ``{side}`` filled in.
_EFFUSION_TEXT: dict[bool, tuple[str, ...]] = {
    True: (
        "{Size} bilateral pleural effusions.",
        "There are {size} bilateral pleural effusions with blunting of both costophrenic angles.",
    ),
    False: (
        "{Size} {side} pleural effusion.",
        "There is a {size} {side}-sided pleural effusion with blunting of the costophrenic angle.",
        "{Size} {side} pleural effusion is present.",
        "Blunting of the {side} costophrenic angle is consistent with a {size} pleural effusion.",
    ),
}
#: Lung lesions by kind: findings-sentence and impression choices, with ``{cm}`` the size and
#: ``{zp}``/``{Zp}`` the zone phrase.
_LESION_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nodule": (
        (
            "A {cm} cm nodule in the {zp}.",
            "There is a {cm} cm rounded nodule projecting over the {zp}.",
            "{cm} cm pulmonary nodule in the {zp}.",
        ),
        (
            "{cm} cm {zp} nodule. Recommend chest CT for further evaluation.",
            "{Zp} nodule measuring {cm} cm.",
        ),
    ),
    "mass": (
        (
            "A {cm} cm mass in the {zp}.",
            "There is a {cm} cm mass in the {zp}, concerning for malignancy.",
            "Large {cm} cm rounded mass in the {zp}.",
        ),
        ("{cm} cm {zp} mass, concerning for malignancy.", "{Zp} mass measuring {cm} cm."),
    ),
}
#: Support devices by kind: findings-sentence choices and the impression sentence, with
#: ``{d}`` the tube tip's distance above the carina in cm and ``{side}``/``{Side}`` its side.
_DEVICE_TEXT: dict[str, tuple[tuple[str, ...], str]] = {
    "et_tube": (
        (
            "Endotracheal tube terminates {d} cm above the carina.",
            "The endotracheal tube tip is {d} cm above the carina.",
            "ET tube in standard position, {d} cm above the carina.",
        ),
        "Endotracheal tube {d} cm above the carina.",
    ),
    "central_line": (
        (
            "{Side} internal jugular central venous catheter terminates in the mid SVC.",
            "{Side} IJ central line with tip in the lower SVC.",
            "A {side}-sided central venous catheter ends in the SVC.",
        ),
        "{Side} IJ central line tip in the SVC.",
    ),
    "pacemaker": (
        (
            "{Side}-sided pacemaker with lead in standard position.",
            "{Side} chest wall pacemaker device with intact lead.",
            "Pacemaker generator overlies the {side} chest wall with the lead in the "
            "expected position.",
        ),
        "{Side}-sided pacemaker in place.",
    ),
    "enteric_tube": (
        (
            "Enteric tube courses below the diaphragm with tip in the stomach.",
            "Nasogastric tube terminates in the stomach.",
            "An orogastric tube extends into the stomach.",
        ),
        "Enteric tube in the stomach.",
    ),
}


def _positive(f: Finding, rng: np.random.Generator) -> tuple[Sentence, Sentence]:
    c = rng.integers
    side = f.laterality or ""
    n = f.name
    hedge = f.uncertain
    if n == "Pleural Effusion":
        lab = {n: -1.0 if hedge else 1.0}
        size = f.size or "small"
        bilateral = side == "bilateral"
        noun = "pleural effusions" if bilateral else "pleural effusion"
        if hedge:
            s = f"Possible {size} {side} {noun}."
            return (s, lab), (s, lab)
        options = _EFFUSION_TEXT[bilateral]
        fs = _choice(rng, options).format(size=size, Size=_cap(size), side=side)
        return (fs, lab), (f"{_cap(size)} {side} {noun}.", lab)

    if n == "Cardiomegaly":
        adj = {"mild": "mild", "moderate": "moderate", "severe": "marked"}[f.size or "mild"]
        adv = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[f.size or "mild"]
        if hedge:
            lab = {n: -1.0}
            return ("The heart size may be mildly enlarged.", lab), (
                "Possible mild cardiomegaly.",
                lab,
            )
        lab = {n: 1.0}
        k = int(c(5))
        if k == 4:
            fs = (
                "The cardiomediastinal silhouette is enlarged.",
                {"Enlarged Cardiomediastinum": 1.0},
            )
        else:
            fs = (
                [
                    f"{_cap(adj)} cardiomegaly.",
                    f"The heart is {adv} enlarged.",
                    "Enlarged cardiac silhouette.",
                    f"The cardiac silhouette is {adv} enlarged.",
                ][k],
                lab,
            )
        return fs, (_choice(rng, [f"{_cap(adj)} cardiomegaly.", "Cardiomegaly."]), lab)

    if n == "Consolidation":
        zp = zone_phrase(side, f.zone, rng)
        pneu = f.kind == "pneumonia"
        if hedge:
            s = f"Opacity in the {zp} may represent consolidation" + (
                " or pneumonia." if pneu else "."
            )
            lab = {n: -1.0, "Lung Opacity": 1.0}
            if pneu:
                lab["Pneumonia"] = -1.0
            return (s, lab), (s, lab)
        lab = {n: 1.0}
        pn = ""
        if pneu:
            pn, pv = _choice(
                rng,
                [
                    (" concerning for pneumonia", -1.0),
                    (", consistent with pneumonia", 1.0),
                    (", compatible with pneumonia", 1.0),
                ],
            )
            lab["Pneumonia"] = pv
        ab = " with air bronchograms" if f.extra.get("air_bronchograms") else ""
        k = int(c(4))
        if k == 3:
            fs = (
                f"Dense airspace opacity in the {zp}{ab} compatible with consolidation.",
                {n: 1.0, "Lung Opacity": 1.0},
            )
        else:
            fs = (
                [
                    f"Focal consolidation in the {zp}{pn}.",
                    f"There is a patchy consolidation in the {zp}{ab}{pn}.",
                    f"{_cap(zp)} consolidation{ab}{pn}.",
                ][k],
                lab,
            )
        imp = _choice(rng, [f"{_cap(zp)} consolidation{pn}.", f"Consolidation in the {zp}{pn}."])
        return fs, (imp, lab)

    if n == "Lung Opacity":
        zp = zone_phrase(side, f.zone, rng)
        if hedge:
            s = f"Possible subtle opacity in the {zp}."
            return (s, {n: -1.0}), (s, {n: -1.0})
        lab = {n: 1.0}
        fs = _choice(
            rng,
            [
                f"Hazy opacity in the {zp}.",
                f"There is an ill-defined opacity in the {zp}.",
                f"Faint ground-glass opacity projecting over the {zp}.",
                f"Patchy hazy opacity is seen in the {zp}.",
            ],
        )
        imp = _choice(rng, [f"{_cap(zp)} opacity.", f"Ill-defined opacity in the {zp}."])
        return (fs, lab), (imp, lab)

    if n == "Pneumothorax":
        size = f.size or "small"
        if hedge:
            s = f"Possible {size} {side} apical pneumothorax."
            return (s, {n: -1.0}), (s, {n: -1.0})
        lab = {n: 1.0}
        fs = _choice(
            rng,
            [
                f"{_cap(size)} {side} apical pneumothorax.",
                f"There is a {size} {side}-sided pneumothorax with a visible pleural line.",
                f"A {size} {side} pneumothorax is seen at the apex.",
                f"{_cap(size)} {side} pneumothorax with the visceral pleural line projecting "
                f"over the {side} upper hemithorax.",
            ],
        )
        imp = _choice(
            rng, [f"{_cap(size)} {side} pneumothorax.", f"{_cap(size)} {side} apical pneumothorax."]
        )
        return (fs, lab), (imp, lab)

    if n == "Edema":
        adj = f.size or "mild"
        if hedge:
            s = "Possible mild pulmonary edema."
            return (s, {n: -1.0}), (s, {n: -1.0})
        lab = {n: 1.0}
        fs = _choice(
            rng,
            [
                f"{_cap(adj)} pulmonary edema.",
                f"There is {adj} interstitial pulmonary edema with perihilar haziness.",
                f"Perihilar haziness and vascular congestion consistent with {adj} pulmonary edema.",
                f"{_cap(adj)} bilateral perihilar edema.",
            ],
        )
        return (fs, lab), (f"{_cap(adj)} pulmonary edema.", lab)

    if n == "Atelectasis":
        lower = (f.zone or "lower") == "lower"
        if side == "bilateral":
            opts = (
                ["Bibasilar atelectasis.", "Plate-like atelectasis at both lung bases."]
                if lower
                else ["Linear atelectasis in both mid lung zones."]
            )
            imp = "Bibasilar atelectasis." if lower else "Bilateral mid lung atelectasis."
            hs = "Possible bibasilar atelectasis." if lower else "Possible bilateral atelectasis."
        else:
            if lower:
                opts = [
                    f"Plate-like atelectasis at the {side} lung base.",
                    f"Linear {side} basilar atelectasis.",
                    f"Mild {side} lower lobe atelectasis with slight volume loss.",
                    f"Subsegmental atelectasis in the {side} lower lung zone.",
                ]
                imp = f"{_cap(side)} basilar atelectasis."
            else:
                opts = [
                    f"Linear atelectasis in the {side} mid lung zone.",
                    f"Plate-like atelectasis in the {side} mid lung.",
                ]
                imp = f"{_cap(side)} mid lung atelectasis."
            hs = f"Possible {side} {'basilar' if lower else 'mid lung'} atelectasis."
        if hedge:
            return (hs, {n: -1.0}), (hs, {n: -1.0})
        lab = {n: 1.0}
        return (_choice(rng, opts), lab), (imp, lab)

    if n == "Lung Lesion":
        zp = zone_phrase(side, f.zone, rng)
        cm = _cm(f.size_cm)
        word = "mass" if f.kind == "mass" else "nodule"
        if hedge:
            s = f"Possible {cm} cm {word} in the {zp}."
            return (s, {n: -1.0}), (s, {n: -1.0})
        lab = {n: 1.0}
        findings, impressions = _LESION_TEXT[word]
        words = {"cm": cm, "zp": zp, "Zp": _cap(zp)}
        fs = _choice(rng, findings).format(**words)
        imp = _choice(rng, impressions).format(**words)
        return (fs, lab), (imp, lab)

    if n == "Support Devices":
        lab = {n: 1.0}
        options, impression = _DEVICE_TEXT.get(f.kind, _DEVICE_TEXT["enteric_tube"])
        words = {"d": int(f.extra.get("tip_cm", 4)), "side": side, "Side": _cap(side)}
        return (_choice(rng, options).format(**words), lab), (impression.format(**words), lab)
    raise ValueError(f"no phrasing for {n!r}")


# ----------------------------------------------------------------------------------------------
# negative and normal statements


def _negations(names: set[str], rng: np.random.Generator) -> tuple[list[Sentence], list[Sentence]]:
    """(lung/pleura negatives, cardiac + osseous statements) for the absent findings."""
    r = rng.random
    lung: list[Sentence] = []
    other: list[Sentence] = []
    no_e, no_p, no_c = (
        "Pleural Effusion" not in names,
        "Pneumothorax" not in names,
        "Consolidation" not in names,
    )
    parenchymal = {"Consolidation", "Lung Opacity", "Edema", "Atelectasis", "Lung Lesion"}
    if not names & (parenchymal | {"Pleural Effusion", "Pneumothorax"}) and r() < 0.7:
        lung.append(
            (_choice(rng, ["The lungs are clear.", "Lungs are well expanded and clear."]), {})
        )
    if no_c and no_e and no_p and r() < 0.5:
        lung.append(
            (
                "There is no focal consolidation, pleural effusion, or pneumothorax.",
                {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
            )
        )
    else:
        if no_c and r() < 0.8:
            lung.append(
                (
                    _choice(rng, ["No focal consolidation.", "There is no focal consolidation."]),
                    {"Consolidation": 0.0},
                )
            )
        if no_e and no_p and r() < 0.8:
            lung.append(
                (
                    "No pleural effusion or pneumothorax.",
                    {"Pleural Effusion": 0.0, "Pneumothorax": 0.0},
                )
            )
        elif no_e and r() < 0.8:
            lung.append(
                (
                    _choice(rng, ["No pleural effusion.", "There is no pleural effusion."]),
                    {"Pleural Effusion": 0.0},
                )
            )
        elif no_p and r() < 0.8:
            lung.append(
                (
                    _choice(rng, ["No pneumothorax.", "There is no pneumothorax."]),
                    {"Pneumothorax": 0.0},
                )
            )
    if "Edema" not in names and r() < 0.4:
        lung.append(
            (
                _choice(rng, ["No pulmonary edema.", "There is no pulmonary edema."]),
                {"Edema": 0.0},
            )
        )
    if "Lung Lesion" not in names and r() < 0.15:
        lung.append(("No suspicious pulmonary nodules.", {"Lung Lesion": 0.0}))
    if "Cardiomegaly" not in names and r() < 0.85:
        other.append(
            _choice(
                rng,
                [
                    (
                        "The cardiomediastinal silhouette is within normal limits.",
                        {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
                    ),
                    ("Heart size is normal.", {"Cardiomegaly": 0.0}),
                    (
                        "The heart size is normal. The mediastinal contours are unremarkable.",
                        {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
                    ),
                ],
            )
        )
    if r() < 0.3:
        other.append(
            _choice(
                rng,
                [
                    ("No acute osseous abnormality.", {"Fracture": 0.0}),
                    ("The osseous structures are unremarkable.", {}),
                ],
            )
        )
    return lung, other


NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
)
COMPARISON_SENTENCES = (
    "Comparison is made to the prior study from ___.",
    "Compared to the prior study, the patient is slightly rotated.",
    "As compared to the previous radiograph, lung volumes are similar.",
)
COMPLAINTS = (
    "shortness of breath",
    "cough",
    "chest pain",
    "fever and cough",
    "dyspnea on exertion",
    "hypoxia",
    "weakness",
    "a fall",
    "tachycardia",
    "altered mental status",
)


# ----------------------------------------------------------------------------------------------
# labels and laterality


def aggregate_labels(sentences: list[Sentence]) -> dict[str, float | None]:
    """CheXpert aggregation: any positive -> 1, else any uncertain -> -1, else negated -> 0."""
    out: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    for _, lab in sentences:
        for k, v in lab.items():
            cur = out[k]
            if cur is None or v == 1.0 or (v == -1.0 and cur == 0.0):
                out[k] = v
    pathology = [k for k in CHEXPERT_LABELS if k not in _NOT_PATHOLOGY]
    if not any(out[k] in (1.0, -1.0) for k in pathology):
        out["No Finding"] = 1.0
    return out


# ----------------------------------------------------------------------------------------------
# the report


def _para(sentences: list[Sentence]) -> str:
    return " ".join(s for s, _ in sentences)


def _wrap(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, WRAP, break_on_hyphens=False)]


def write_report(
    findings: list[Finding],
    view: str,
    rng: np.random.Generator,
    *,
    has_prior: bool = False,
    style: str | None = None,
    sex: str | None = None,
) -> Report:
    """Write a MIMIC-CXR-like report for ``findings`` seen on a ``view`` ("PA"/"AP") study."""
    if style is None:
        style = STYLES[int(rng.choice(len(STYLES), p=STYLE_P))]
    names = {f.name for f in findings}
    devices = [f for f in findings if f.name == "Support Devices"]
    diseases = [f for f in findings if f.name != "Support Devices"]
    order = rng.permutation(len(diseases))
    diseases = [diseases[i] for i in order]
    pos_dev = [_positive(f, rng) for f in devices]
    pos_dis = [_positive(f, rng) for f in diseases]
    lung_neg, other_neg = _negations(names, rng)

    find: list[Sentence] = []
    if has_prior and rng.random() < 0.5:
        find.append((_choice(rng, COMPARISON_SENTENCES), {}))
    find += [p[0] for p in pos_dev]
    cardiac = [p for p, f in zip(pos_dis, diseases) if f.name == "Cardiomegaly"]
    find += [p[0] for p, f in zip(pos_dis, diseases) if f.name != "Cardiomegaly"]
    find += lung_neg
    find += [p[0] for p in cardiac]
    find += other_neg

    imp: list[Sentence] = [p[1] for p in pos_dis]
    if not diseases:
        imp.append((_choice(rng, NORMAL_IMPRESSIONS), {}))
    elif "Pneumothorax" not in names and rng.random() < 0.3:
        imp.append(("No pneumothorax.", {"Pneumothorax": 0.0}))
    imp += [p[1] for p in pos_dev]

    exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
    if sex not in ("F", "M"):
        sex = _choice(rng, ["F", "M"])
    who = "woman" if sex == "F" else "man"
    complaint = _choice(rng, COMPLAINTS)
    if any(f.kind == "et_tube" for f in devices) and rng.random() < 0.6:
        complaint = "intubation, evaluate tube position"
    indication = _choice(
        rng, [f"___-year-old {who} with {complaint}.", f"___{sex} with {complaint}."]
    )
    technique = (
        _choice(rng, ["Chest PA and lateral views.", "PA and lateral views of the chest."])
        if view == "PA"
        else _choice(rng, ["Portable AP chest radiograph.", "Single frontal view of the chest."])
    )
    comparison = (
        _choice(rng, ["___.", "Chest radiograph ___."])
        if has_prior
        else _choice(rng, ["None.", "None.", "___."])
    )

    sections: dict[str, str] = {}
    lines: list[str] = []
    if style != "no_headers":
        sections = {
            "examination": exam,
            "indication": indication,
            "technique": technique,
            "comparison": comparison,
        }
        lines = [" " * 33 + "FINAL REPORT", f" EXAMINATION:  {exam}", " "]
        lines += _wrap(f"INDICATION:  {indication}") + [" "]
        lines += _wrap(f"TECHNIQUE:  {technique}") + [" "]
        lines += _wrap(f"COMPARISON:  {comparison}") + [" "]
    if style in ("full", "findings_only"):
        sections["findings"] = _para(find)
        lines += [" FINDINGS: ", " "] + _wrap(sections["findings"]) + [" "]
    if style in ("full", "impression_only"):
        sections["impression"] = _para(imp)
        lines += [" IMPRESSION: ", " "] + _wrap(sections["impression"])
    if style == "no_headers":
        body = find + imp
        sections["body"] = _para(body)
        lines = _wrap(sections["body"])
        source = body
    else:
        source = imp if "impression" in sections else find
    while lines and not lines[-1].strip():
        lines.pop()
    text = "\n".join(lines) + "\n"
    return Report(text, sections, aggregate_labels(source), style, source)
