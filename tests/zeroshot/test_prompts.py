"""Prompt sets: the built-in CheXpert set, user files (JSON/YAML), and validation errors."""

from __future__ import annotations

import json

import pytest
from radalign.encoders.errors import InputError
from radalign.encoders.labels import CHEXPERT_LABELS
from radalign.zeroshot.prompts import (
    PromptSet,
    PromptSetError,
    builtin_prompt_sets,
    load_prompt_set,
)

CHEXPERT = list(CHEXPERT_LABELS)


def test_builtin_chexpert_has_all_findings_with_several_prompts():
    assert "chexpert" in builtin_prompt_sets()
    ps = load_prompt_set("chexpert")
    assert ps.name == "chexpert"
    assert sorted(ps.class_names) == sorted(CHEXPERT)
    for c in ps.class_names:
        pos, neg = ps.positive(c), ps.negative(c)
        assert len(pos) >= 3 and len(neg) >= 2, c
        assert not set(pos) & set(neg), c
        assert len(set(pos)) == len(pos)
        assert all("{}" not in s for s in pos + neg)


def test_chexpert_templates_are_expanded_and_no_finding_is_inverted():
    ps = load_prompt_set("chexpert")
    assert "Moderate left pleural effusion." in ps.positive("Pleural Effusion")
    assert "No pleural effusion." in ps.negative("Pleural Effusion")
    assert "There is no pneumothorax." in ps.negative("Pneumothorax")
    assert "Findings consistent with pneumonia." in ps.positive("Pneumonia")  # from a template
    # "No Finding": normal-study sentences are its positives, abnormal statements its negatives
    assert "No acute cardiopulmonary process." in ps.positive("No Finding")
    assert "The lungs are clear." in ps.positive("No Finding")
    assert not any(s.lower().startswith("no ") for s in ps.negative("No Finding"))


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_user_json_file_with_templates(tmp_path):
    f = _write(
        tmp_path / "mine.json",
        {
            "templates": {"positive": ["{} is present."], "negative": ["No {}."]},
            "classes": {
                "Nodule": {"positive": ["A lung nodule."], "negative": [], "terms": ["nodule"]},
                "Mass": {"positive": ["A mass."], "negative": ["No mass."]},
            },
        },
    )
    ps = load_prompt_set(f)
    assert ps.name == "mine"  # defaults to the file stem
    assert ps.classes == {
        "Nodule": {
            "positive": ["A lung nodule.", "Nodule is present."],
            "negative": ["No nodule."],
        },
        "Mass": {"positive": ["A mass."], "negative": ["No mass."]},
    }
    assert ps.subset(["Mass"]).class_names == ["Mass"]
    with pytest.raises(KeyError, match="Hernia"):
        ps.subset(["Hernia"])


def test_user_yaml_file(tmp_path):
    f = tmp_path / "set.yaml"
    f.write_text(
        "name: tiny-set\nclasses:\n  Edema:\n    positive: [Pulmonary edema.]\n"
        "    negative: [No pulmonary edema.]\n"
    )
    ps = load_prompt_set(str(f))
    assert ps.name == "tiny-set"
    assert ps.positive("Edema") == ["Pulmonary edema."]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"classes": {"Edema": {"positive": ["Edema."], "negative": []}}}, "empty 'negative'"),
        ({"classes": {"Edema": {"positive": [], "negative": ["No edema."]}}}, "empty 'positive'"),
        (
            {"classes": {"Edema": {"positve": ["x"], "positive": ["a"], "negative": ["b"]}}},
            r"unknown key\(s\) \['positve'\]",
        ),
        ({"clases": {}}, "unknown top-level key"),
        ({"classes": {}}, "non-empty mapping"),
        ({"classes": {"Edema": {"positive": "Edema.", "negative": ["b"]}}}, "list of strings"),
        ({"classes": {"Edema": {"positive": ["  "], "negative": ["b"]}}}, "non-empty strings"),
        (
            {
                "templates": {"positive": ["no slot"]},
                "classes": {"E": {"positive": ["a"], "negative": ["b"]}},
            },
            "exactly one",
        ),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_files_give_clear_errors(tmp_path, data, message):
    f = _write(tmp_path / "bad.json", data)
    with pytest.raises(PromptSetError, match=message) as info:
        load_prompt_set(f)
    assert isinstance(info.value, InputError)
    assert info.value.reason == "invalid prompt set"
    assert str(f) in str(info.value)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(PromptSetError, match="not a built-in set") as info:
        load_prompt_set("no-such-set")
    assert info.value.reason == "prompt set not found"
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(PromptSetError, match="invalid JSON"):
        load_prompt_set(bad)


def test_promptset_constructor_validates():
    with pytest.raises(PromptSetError, match="empty 'negative'"):
        PromptSet("x", {"A": {"positive": ["a"], "negative": []}})
    with pytest.raises(PromptSetError, match="exactly 'positive' and 'negative'"):
        PromptSet("x", {"A": {"positive": ["a"]}})
