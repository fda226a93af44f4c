"""The report sectioner: a dozen hand-written MIMIC-style reports, IU X-ray XML, and properties."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radalign.data.sections import (
    clean_text,
    findings_text,
    impression_text,
    select_report,
    select_sections,
    split_sections,
)
from radalign.encoders.errors import InputError


def _m(text: str) -> str:
    """MIMIC text files hold space-only lines and trailing spaces; written here as ``~``."""
    return text.replace("~", " ")


REPORTS = {
    "standard": _m("""                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
~
 INDICATION:  ___F with new onset ascites  // eval for infection
~
 TECHNIQUE:  Chest PA and lateral
~
 COMPARISON:  None.
~
 FINDINGS:~
~
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Clips project over the left lung,
 potentially within the breast. The imaged upper abdomen is unremarkable.
~
 IMPRESSION:~
~
 No acute cardiopulmonary process.
"""),
    "no_headers": _m("""                                 FINAL REPORT
 Portable AP chest radiograph demonstrates low lung volumes.  There is mild
 pulmonary vascular congestion without frank edema.  No pneumothorax.
 Heart size is top normal.
"""),
    "only_impression": _m("""                                 FINAL REPORT
 HISTORY:  ___-year-old man with chest pain.
~
 IMPRESSION:  Stable mild cardiomegaly.  No acute cardiopulmonary process.
"""),
    "wet_read_first": _m(""" WET READ: ___ ___ 3:27 PM
  Right PICC tip at the cavoatrial junction.  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Line placement.
~
 FINDINGS:  Right-sided PICC terminates at the cavoatrial junction.  Lungs are
 clear.  No pleural effusion or pneumothorax.
~
 IMPRESSION:  Right PICC tip at the cavoatrial junction.
"""),
    "lowercase_headers": _m("""Indication: Cough for two weeks.
Findings: The lungs are clear. The heart is normal in size.
Impression: Normal chest radiograph.
"""),
    "combined": _m("""                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___
~
 COMPARISON:  Prior exam from ___.
~
 FINDINGS/IMPRESSION:  Left basilar opacity may reflect atelectasis, though
 infection cannot be excluded.  No pneumothorax.
"""),
    "addendum": _m("""                                 FINAL ADDENDUM
 ADDENDUM:  Findings were discussed with Dr. ___ by Dr. ___ at 10:15 on ___.
~
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Fever.
~
 FINDINGS:  New right lower lobe consolidation.
~
 IMPRESSION:  Right lower lobe pneumonia.
"""),
    "numbered": _m("""                                 FINAL REPORT
 EXAMINATION:  Chest radiograph, portable AP.
~
 FINDINGS:
~
 Endotracheal tube terminates 4 cm above the carina.  Enteric tube courses
 below the diaphragm.  Bilateral pleural effusions, moderate on the right.
~
 IMPRESSION:
~
 1.  Endotracheal tube in standard position.
 2.  Moderate right and small left pleural effusions, increased since ___.
"""),
    "old_style": _m("""                                 FINAL REPORT
 UNDERLYING MEDICAL CONDITION:
  ___ year old man with COPD.
 REASON FOR THIS EXAMINATION:
  eval for pneumonia
~
 PA AND LATERAL VIEWS OF THE CHEST:  The lungs are hyperinflated.  There is no
 focal consolidation.  Heart size is normal.
~
 IMPRESSION:  COPD without acute process.
"""),
    "bare_paragraph": _m("""                                 FINAL REPORT
 INDICATION:  Shortness of breath.
~
 Lungs are clear.  No effusion.  Normal cardiomediastinal silhouette.
~
 IMPRESSION:  No acute process.
"""),
    "colon_not_header": _m(""" FINDINGS:  The following was noted on the left: small effusion.  Comparison
 with ___: unchanged.
 Heart: normal size.
 LUNGS:  Clear.
~
 IMPRESSION
 Small left effusion, unchanged.
"""),
    "admin_only": _m("""                                 FINAL REPORT
 INDICATION:  ___ with fever.
~
 COMPARISON:  ___.
"""),
    "conclusion": _m("""EXAM: Chest, two views.
CLINICAL HISTORY: Trauma.
Impressions: No acute fracture.
Conclusion: see above.
"""),
}

EXPECTED = {
    "standard": {
        "EXAMINATION": "CHEST (PA AND LAT)",
        "INDICATION": "F with new onset ascites // eval for infection",
        "TECHNIQUE": "Chest PA and lateral",
        "COMPARISON": "None.",
        "FINDINGS": "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral "
        "nodular opacities that most likely represent nipple shadows. The cardiomediastinal "
        "silhouette is normal. Clips project over the left lung, potentially within the breast. "
        "The imaged upper abdomen is unremarkable.",
        "IMPRESSION": "No acute cardiopulmonary process.",
    },
    "no_headers": {
        "PREAMBLE": "Portable AP chest radiograph demonstrates low lung volumes. There is mild "
        "pulmonary vascular congestion without frank edema. No pneumothorax. Heart size is top "
        "normal."
    },
    "only_impression": {
        "HISTORY": "year-old man with chest pain.",
        "IMPRESSION": "Stable mild cardiomegaly. No acute cardiopulmonary process.",
    },
    "wet_read_first": {
        "WET READ": "3:27 PM Right PICC tip at the cavoatrial junction. No pneumothorax.",
        "INDICATION": "Line placement.",
        "FINDINGS": "Right-sided PICC terminates at the cavoatrial junction. Lungs are clear. "
        "No pleural effusion or pneumothorax.",
        "IMPRESSION": "Right PICC tip at the cavoatrial junction.",
    },
    "lowercase_headers": {
        "INDICATION": "Cough for two weeks.",
        "FINDINGS": "The lungs are clear. The heart is normal in size.",
        "IMPRESSION": "Normal chest radiograph.",
    },
    "combined": {
        "PREAMBLE": "CHEST RADIOGRAPH PERFORMED ON",
        "COMPARISON": "Prior exam from.",
        "FINDINGS/IMPRESSION": "Left basilar opacity may reflect atelectasis, though infection "
        "cannot be excluded. No pneumothorax.",
    },
    "addendum": {
        "ADDENDUM": "Findings were discussed with Dr. by Dr. at 10:15 on.",
        "INDICATION": "Fever.",
        "FINDINGS": "New right lower lobe consolidation.",
        "IMPRESSION": "Right lower lobe pneumonia.",
    },
    "numbered": {
        "EXAMINATION": "Chest radiograph, portable AP.",
        "FINDINGS": "Endotracheal tube terminates 4 cm above the carina. Enteric tube courses "
        "below the diaphragm. Bilateral pleural effusions, moderate on the right.",
        "IMPRESSION": "1. Endotracheal tube in standard position. 2. Moderate right and small "
        "left pleural effusions, increased since.",
    },
    "old_style": {
        "UNDERLYING MEDICAL CONDITION": "year old man with COPD.",
        "REASON FOR THIS EXAMINATION": "eval for pneumonia",
        "PA AND LATERAL VIEWS OF THE CHEST": "The lungs are hyperinflated. There is no focal "
        "consolidation. Heart size is normal.",
        "IMPRESSION": "COPD without acute process.",
    },
    "bare_paragraph": {
        "INDICATION": "Shortness of breath.",
        "BODY": "Lungs are clear. No effusion. Normal cardiomediastinal silhouette.",
        "IMPRESSION": "No acute process.",
    },
    "colon_not_header": {
        "FINDINGS": "The following was noted on the left: small effusion. Comparison with: "
        "unchanged. Heart: normal size. LUNGS: Clear.",
        "IMPRESSION": "Small left effusion, unchanged.",
    },
    "admin_only": {"INDICATION": "with fever."},
    "conclusion": {
        "EXAM": "Chest, two views.",
        "CLINICAL HISTORY": "Trauma.",
        "IMPRESSION": "No acute fracture.",
        "CONCLUSION": "see above.",
    },
}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_sections_of_hand_written_reports(name):
    got = split_sections(REPORTS[name])
    assert got == EXPECTED[name]
    assert list(got) == list(EXPECTED[name])  # first-appearance order


def test_findings_plus_impression_joins_both_and_skips_wet_read_and_addendum():
    r = REPORTS["wet_read_first"]
    assert select_report(r) == (
        "Right-sided PICC terminates at the cavoatrial junction. Lungs are clear. "
        "No pleural effusion or pneumothorax. Right PICC tip at the cavoatrial junction."
    )
    text = select_report(REPORTS["addendum"])
    assert text == "New right lower lobe consolidation. Right lower lobe pneumonia."
    assert "discussed" not in text


def test_section_choices():
    r = REPORTS["standard"]
    assert select_report(r, "impression") == "No acute cardiopulmonary process."
    assert select_report(r, "findings").startswith("There is no focal consolidation")
    assert select_report(r, "longest") == select_report(r, "findings")
    full = select_report(r, "full")
    assert full.startswith("FINAL REPORT EXAMINATION: CHEST (PA AND LAT) INDICATION: F with")
    assert "___" not in full and "  " not in full
    # one section missing: findings+impression uses the other, the single choice is strict
    only = REPORTS["only_impression"]
    assert select_report(only) == "Stable mild cardiomegaly. No acute cardiopulmonary process."
    assert select_report(only, "longest") == select_report(only)
    with pytest.raises(InputError) as err:
        select_report(only, "findings")
    assert err.value.reason == "no usable section"
    with pytest.raises(ValueError):
        select_report(only, "abstract")


def test_fallbacks_and_failures():
    # no headers at all: the whole body is the text
    assert select_report(REPORTS["no_headers"]) == EXPECTED["no_headers"]["PREAMBLE"]
    # body under a non-administrative header or after the indication serves as findings
    assert select_report(REPORTS["old_style"]) == (
        "The lungs are hyperinflated. There is no focal consolidation. Heart size is normal. "
        "COPD without acute process."
    )
    assert select_report(REPORTS["bare_paragraph"], "findings") == (
        "Lungs are clear. No effusion. Normal cardiomediastinal silhouette."
    )
    # sub-headings inside a body section stay in its text
    assert split_sections(
        "INDICATION: x\nPA AND LATERAL VIEWS OF THE CHEST: Lungs clear.\nHEART: Normal.\n"
    ) == {"INDICATION": "x", "PA AND LATERAL VIEWS OF THE CHEST": "Lungs clear. HEART: Normal."}
    # combined section: used once, for findings and for impression
    combined = EXPECTED["combined"]["FINDINGS/IMPRESSION"]
    assert select_report(REPORTS["combined"]) == combined
    assert select_report(REPORTS["combined"], "impression") == combined
    # CONCLUSION stands in for a missing IMPRESSION only
    assert impression_text({"CONCLUSION": "x."}) == "x."
    assert select_report(REPORTS["conclusion"]) == "No acute fracture."
    # only administrative sections -> no usable section; blank -> empty report
    with pytest.raises(InputError) as err:
        select_report(REPORTS["admin_only"])
    assert err.value.reason == "no usable section"
    for blank in ("", "   \n", None, " ___ \n ____________ "):
        with pytest.raises(InputError) as err:
            select_report(blank)
        assert err.value.reason == "empty report"


def test_cleaning():
    assert clean_text("Dr. ___ was paged at ___ on ___.") == "Dr. was paged at on."
    assert clean_text("___-year-old man ( ___ ), stable") == "year-old man, stable"
    assert clean_text("There are no XXXX of a pleural effusion. Normal chest x-XXXX.") == (
        "There are no of a pleural effusion. Normal chest x."
    )
    assert clean_text("  heart size\n   is normal .  ") == "heart size is normal."
    assert clean_text("XXXXL stays, XXX stays") == "XXXXL stays, XXX stays"


def test_header_must_start_a_line():
    text = "The tube is in place. IMPRESSION: should not split here.\nFINDINGS: real."
    assert split_sections(text) == {
        "PREAMBLE": "The tube is in place. IMPRESSION: should not split here.",
        "FINDINGS": "real.",
    }
    # mixed-case words that are not section names are text, not headers
    assert split_sections("Lungs: clear.\nHeart: normal.") == {
        "PREAMBLE": "Lungs: clear. Heart: normal."
    }


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR1"/>
   <pmcId id="1"/>
   <docSource>CXR</docSource>
   <IUXRId id="1"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleURL/>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <note>The data are drawn from multiple hospital systems.</note>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Journal>
            <JournalIssue>
               <PubDate>
                  <Year>2013</Year>
                  <Month>08</Month>
                  <Day>01</Day>
               </PubDate>
            </JournalIssue>
         </Journal>
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Positive TB test</AbstractText>
            <AbstractText Label="FINDINGS">The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. There is no focal consolidation. There are no XXXX of a pleural effusion. There is no evidence of pneumothorax.</AbstractText>
            <AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
         </Abstract>
         <Affiliation>Indiana University School of Medicine</Affiliation>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>normal</major>
   </MeSH>
   <parentImage id="CXR1_1_IM-0001-3001">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/CXR1_1_IM-0001-3001.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>
</eCitation>
"""


def test_iu_xml_abstract_sections():
    doc = ET.fromstring(IU_XML.encode())
    sections = {
        at.get("Label"): clean_text("".join(at.itertext())) for at in doc.iter("AbstractText")
    }
    text = "\n".join(f"{k}: {v}" for k, v in sections.items())
    assert split_sections(text) == {
        "COMPARISON": "None.",
        "INDICATION": "Positive TB test",
        "FINDINGS": sections["FINDINGS"],
        "IMPRESSION": "Normal chest x.",
    }
    assert select_sections(sections) == sections["FINDINGS"] + " Normal chest x."
    assert findings_text(sections).endswith("There is no evidence of pneumothorax.")


# ------------------------------------------------------------------ properties (hypothesis)

_FRAGMENTS = [
    "FINDINGS:",
    "IMPRESSION:",
    "Impression:",
    " INDICATION:  ",
    "WET READ: ___ ___ 3:27 PM",
    "FINAL REPORT",
    "FINAL ADDENDUM",
    "PA AND LATERAL VIEWS OF THE CHEST:",
    "FINDINGS/IMPRESSION:",
    "IMPRESSION",
    "___",
    "XXXX",
    "x-XXXX.",
    "___-year-old",
    " . ",
    " , ",
    "( )",
    "1. ",
    "\n",
    "\n\n",
    "\r\n",
    "  ",
    "No acute process.",
    "LUNGS: clear.",
]
_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=40).map(
        "".join
    ),
)
_TRAILING = ".,;:!?)"


def _nonspace(s: str) -> str:
    return "".join(s.split())


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


def _assert_from_input(out: str, text: str) -> None:
    for token in out.split():
        core = token.rstrip(_TRAILING)
        assert core in text, (core, text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_split_sections_never_raises_and_invents_nothing(text):
    sections = split_sections(text)
    for key, value in sections.items():
        assert key == key.upper() and value
        assert value == " ".join(value.split())  # whitespace normalised
        assert _is_subsequence(_nonspace(value), _nonspace(text))
        _assert_from_input(value, text)
        assert "___" not in value and not re.search(r"\bXXXX\b", value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT, st.sampled_from(["findings+impression", "impression", "findings", "longest", "full"]))
def test_select_report_only_raises_input_error_and_invents_nothing(text, section):
    try:
        out = select_report(text, section)
    except InputError as err:
        assert err.reason in ("empty report", "no usable section")
        return
    assert out.strip()
    _assert_from_input(out, text)
