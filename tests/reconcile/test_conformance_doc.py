"""docs/conformance-statement.md, sections 9 (IAN SCP) and 10 (Study Root C-FIND SCU),
against the code: the SOP classes, the attributes and every status documented."""

from __future__ import annotations

from pathlib import Path

from pydicom.datadict import dictionary_description, tag_for_keyword

from bridge.reconcile import ian
from bridge.reconcile.query import STUDY_ROOT_FIND, identifier
from tests.doctables import markdown_table, tag_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance-statement.md"


def test_the_ian_sop_class_is_the_one_served():
    (row,) = markdown_table(DOC, "| IAN SOP class | UID | Role |")
    assert row[1] == ian.IAN_SOP_CLASS and row[2] == "SCP"
    assert ian.IanService.supported_contexts == (row[1],)


def test_the_documented_ian_attributes_are_the_ones_read():
    rows = markdown_table(DOC, "| Attribute | Tag | Use |")
    for name, tag_text, _ in rows:
        assert dictionary_description(tag_of(tag_text)) == name.lstrip("> ")
    read = {"StudyInstanceUID", "ReferencedSeriesSequence", "ReferencedSOPSequence",
            "InstanceAvailability"}
    assert {tag_of(r[1]) for r in rows} == {tag_for_keyword(k) for k in read}


def test_every_ian_status_sent_is_documented_and_every_documented_one_is_sent():
    rows = markdown_table(DOC, "| IAN status | Meaning | When |")
    documented = {int(r[0], 16) for r in rows}
    sent = {ian.SUCCESS, ian.INVALID_VALUE, ian.PROCESSING_FAILURE, ian.INVALID_INSTANCE,
            ian.MISSING_ATTRIBUTE, ian.MISSING_VALUE}
    assert documented == sent


def test_the_scu_section_names_the_model_and_the_keys():
    (row,) = markdown_table(DOC, "| SCU SOP class | UID | Role |")
    assert row[1:] == [STUDY_ROOT_FIND, "SCU"]
    keys = set(identifier(study_uid="1.2.3").keys())
    text = DOC.read_text(encoding="utf-8").split("## 10.")[1]
    for keyword in ("AccessionNumber", "PatientID", "ModalitiesInStudy",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"):
        assert tag_for_keyword(keyword) in keys
        assert dictionary_description(tag_for_keyword(keyword)) in text
