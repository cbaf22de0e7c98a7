"""shape_answer: requested keys only, empty when unknown, sequences, character sets."""

from __future__ import annotations

import logging
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import Tag
from pynetdicom.dsutils import decode, encode

from bridge.worklist import shape_answer
from bridge.worklist.answer import EXPANDED_SEQUENCES, python_codecs

SPS = Tag(0x0040, 0x0100)


def stored_item(name: str = "Müller^Hans") -> Dataset:
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "L"
    code.CodeMeaning = "CT Kopf"
    sps = Dataset()
    sps.ScheduledStationAETitle = ["CT01", "CT02"]
    sps.Modality = "CT"
    sps.ScheduledProcedureStepStartDate = "20261128"
    sps.ScheduledProcedureStepStartTime = "080000"
    sps.ScheduledProcedureStepID = "SPS1"
    sps.ScheduledProcedureStepDescription = "Schädel nativ"
    sps.ScheduledProtocolCodeSequence = [code]
    item = Dataset()
    item.PatientName = name
    item.PatientID = "P1"
    item.AccessionNumber = "A1"
    item.StudyInstanceUID = "1.2.3"
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepSequence = [sps]
    return item


def query(*keywords: str, sps: list[str] | None = None) -> Dataset:
    identifier = Dataset()
    for keyword in keywords:
        setattr(identifier, keyword, "")
    if sps is not None:
        item = Dataset()
        for keyword in sps:
            setattr(item, keyword, "" if keyword != "ScheduledProtocolCodeSequence" else [])
        identifier.ScheduledProcedureStepSequence = [item]
    return identifier


def roundtrip(answer: Dataset) -> tuple[Dataset, bytes]:
    """Encode as pynetdicom does for the wire, and decode again."""
    raw = encode(answer, True, True)
    assert raw is not None
    return decode(BytesIO(raw), True, True), raw


def test_answer_holds_exactly_the_requested_keys():
    answer = shape_answer(stored_item(), query("PatientName", "PatientID"), "ISO_IR 192")
    assert [e.keyword for e in answer] == ["SpecificCharacterSet", "PatientName", "PatientID"]
    assert answer.PatientName == "Müller^Hans"
    assert answer.PatientID == "P1"


def test_unknown_keys_are_answered_empty():
    identifier = query("PatientBirthDate", "PatientSex", "OtherPatientIDsSequence")
    identifier.add(DataElement(Tag(0x0010, 0x1030), "DS", None))  # Patient's Weight
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    assert answer["PatientBirthDate"].is_empty
    assert answer["PatientSex"].is_empty
    assert answer["OtherPatientIDsSequence"].VR == "SQ"
    assert len(answer.OtherPatientIDsSequence) == 0
    assert answer[Tag(0x0010, 0x1030)].value is None
    decoded, _ = roundtrip(answer)
    assert decoded.PatientBirthDate == ""


def test_empty_key_takes_the_dictionary_vr_over_the_scus():
    identifier = Dataset()
    identifier.add(DataElement(Tag(0x0010, 0x0040), "LO", ""))  # Patient's Sex is CS
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    assert answer["PatientSex"].VR == "CS"


def test_sps_sub_keys_are_shaped_recursively():
    identifier = query("PatientID", sps=["Modality", "ScheduledStationAETitle",
                                         "ScheduledPerformingPhysicianName"])
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    (sps,) = answer.ScheduledProcedureStepSequence
    assert [e.keyword for e in sps] == [
        "Modality", "ScheduledStationAETitle", "ScheduledPerformingPhysicianName"]
    assert sps.Modality == "CT"
    assert list(sps.ScheduledStationAETitle) == ["CT01", "CT02"]
    assert sps["ScheduledPerformingPhysicianName"].is_empty


def _expected_step() -> set[str]:
    """wlmscpfs's attributes of a step (answer.EXPANDED_SEQUENCES) and every stored one."""
    stored = stored_item().ScheduledProcedureStepSequence[0]
    return set(EXPANDED_SEQUENCES["ScheduledProcedureStepSequence"]) | {
        e.keyword for e in stored}


def test_empty_sequence_key_returns_every_attribute_of_its_item():
    identifier = Dataset()
    identifier.ScheduledProcedureStepSequence = []
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    (sps,) = answer.ScheduledProcedureStepSequence
    stored = stored_item().ScheduledProcedureStepSequence[0]
    for elem in stored:  # every stored value ...
        if elem.VR != "SQ":
            assert sps[elem.tag].value == elem.value
    assert {e.keyword for e in sps} == _expected_step()  # ... and the rest empty
    assert sps.PreMedication is None
    (code,) = sps.ScheduledProtocolCodeSequence
    assert code.CodeMeaning == "CT Kopf"
    assert "CodingSchemeVersion" in code and code.CodingSchemeVersion is None


def test_sequence_key_with_one_empty_item_returns_every_attribute_of_its_item():
    identifier = Dataset()
    identifier.ScheduledProcedureStepSequence = [Dataset()]
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    assert {e.keyword for e in answer.ScheduledProcedureStepSequence[0]} == _expected_step()


def test_nested_empty_sequence_returns_the_code_item_attributes():
    # (0008,0103) Coding Scheme Version too, as wlmscpfs (PS3.4 C.2.2.2.6)
    identifier = query(sps=["ScheduledProtocolCodeSequence"])
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    (code,) = answer.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("CTHEAD", "L")
    assert [e.keyword for e in code] == ["CodeValue", "CodingSchemeDesignator",
                                         "CodingSchemeVersion", "CodeMeaning"]


def test_a_sequence_wlmscpfs_does_not_expand_returns_its_stored_items_whole():
    item = stored_item()
    other = Dataset()
    other.CodeValue = "X"
    item.ProcedureCodeSequence = [other]
    identifier = Dataset()
    identifier.ProcedureCodeSequence = []
    (code,) = shape_answer(item, identifier, "ISO_IR 192").ProcedureCodeSequence
    assert [e.keyword for e in code] == ["CodeValue"]


def test_private_keys_are_not_answered():
    identifier = query("PatientID")
    identifier.add(DataElement(Tag(0x0009, 0x0010), "LO", ""))
    identifier.add(DataElement(Tag(0x0009, 0x1001), "LO", ""))
    answer = shape_answer(stored_item(), identifier, "ISO_IR 192")
    assert [e.keyword for e in answer] == ["SpecificCharacterSet", "PatientID"]


def test_default_character_set_is_utf8_and_written_as_such():
    answer = shape_answer(stored_item("山田^太郎"), query("PatientName"), "ISO_IR 192")
    decoded, raw = roundtrip(answer)
    assert decoded.SpecificCharacterSet == "ISO_IR 192"
    assert decoded.PatientName == "山田^太郎"
    assert "山田^太郎".encode() in raw


def test_latin1_answer_is_encoded_in_latin1():
    identifier = query("PatientName", sps=["ScheduledProcedureStepDescription"])
    answer = shape_answer(stored_item(), identifier, "ISO_IR 100")
    decoded, raw = roundtrip(answer)
    assert decoded.SpecificCharacterSet == "ISO_IR 100"
    assert b"M\xfcller^Hans" in raw
    assert "Schädel nativ".encode("latin-1") in raw
    assert decoded.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == (
        "Schädel nativ")


def test_value_decoded_from_another_character_set_is_re_encoded():
    source = Dataset()
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName = "Müller^Hans"
    stored = decode(BytesIO(encode(source, True, True)), True, True)
    assert stored.PatientName == "Müller^Hans"  # decoded, with UTF-8 bytes cached inside
    del stored.SpecificCharacterSet
    answer = shape_answer(stored, query("PatientName"), "ISO_IR 100")
    _, raw = roundtrip(answer)
    assert b"M\xfcller^Hans" in raw


def test_unencodable_value_falls_back_to_utf8_and_logs_no_phi(caplog):
    caplog.set_level(logging.DEBUG, logger="bridge.worklist")
    answer = shape_answer(stored_item("山田^太郎"), query("PatientName"), "ISO_IR 100")
    decoded, _ = roundtrip(answer)
    assert decoded.SpecificCharacterSet == "ISO_IR 192"
    assert decoded.PatientName == "山田^太郎"
    assert "(0010,0010)" in caplog.text
    assert "山田" not in caplog.text


def test_unencodable_value_inside_a_sequence_falls_back_too():
    item = stored_item()
    item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription = "Грудь"
    identifier = query("PatientName", sps=["ScheduledProcedureStepDescription"])
    answer = shape_answer(item, identifier, "ISO_IR 100")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert shape_answer(item, query("PatientName"), "ISO_IR 100").SpecificCharacterSet == (
        "ISO_IR 100")


def test_iso2022_code_extensions_mix_sets_per_character():
    charset = "ISO 2022 IR 6\\ISO 2022 IR 87"
    answer = shape_answer(stored_item("Yamada^Tarou=山田^太郎"), query("PatientName"), charset)
    assert list(answer.SpecificCharacterSet) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    decoded, raw = roundtrip(answer)
    assert decoded.PatientName == "Yamada^Tarou=山田^太郎"
    assert b"\x1b$B" in raw  # escape to JIS X 0208
    fallback = shape_answer(stored_item("Müller^Hans"), query("PatientName"), charset)
    assert fallback.SpecificCharacterSet == "ISO_IR 192"


def test_jis_x_0201_alone_does_not_take_kanji():
    answer = shape_answer(stored_item("山田^太郎"), query("PatientName"), "ISO_IR 13")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    answer = shape_answer(stored_item("ﾔﾏﾀﾞ^ﾀﾛｳ"), query("PatientName"), "ISO_IR 13")
    assert answer.SpecificCharacterSet == "ISO_IR 13"


def test_default_repertoire_is_strict_ascii():
    assert python_codecs("") == ("ascii",)
    assert shape_answer(stored_item(), query("PatientName"), "").SpecificCharacterSet == (
        "ISO_IR 192")
    ascii_answer = shape_answer(stored_item("Muller^Hans"), query("PatientName"), "")
    assert ascii_answer["SpecificCharacterSet"].is_empty


def test_unknown_character_set_is_an_error():
    with pytest.raises(ValueError, match="ISO_IR 999"):
        shape_answer(stored_item(), query("PatientName"), "ISO_IR 999")
