"""The shipped IHE SWF ORM^O01 mapping against the HL7 fixtures."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from bridge.hl7.message import HL7ParseError, parse_message
from bridge.mapping import MappingError, MappingSet, load_mappings
from bridge.mapping.engine import derive_uid

from .mapping_helpers import DEFAULT_MAPPING, FIXTURES, MSH, er7, read_fixture


def one_step(mappings: MappingSet, fixture: str) -> Dataset:
    result = mappings.map(read_fixture(fixture))
    assert result.mapping == "ihe-swf-orm-v231"
    assert len(result.steps) == 1
    return result.items[0]


def sps(step: Dataset) -> Dataset:
    assert len(step.ScheduledProcedureStepSequence) == 1
    return step.ScheduledProcedureStepSequence[0]


def test_ihe_ct_order(default_set: MappingSet) -> None:
    step = one_step(default_set, "orm-o01-ihe-ct.hl7")
    assert step.PatientID == "PAT10001"
    assert step.IssuerOfPatientID == "HOSP"
    others = [(i.PatientID, i.IssuerOfPatientID, i.TypeOfPatientID)
              for i in step.OtherPatientIDsSequence]
    assert others == [("9876543210", "NHS", "TEXT"), ("A-77812", "OLDRIS", "TEXT")]
    assert step.PatientName == "DOE^JOHN^QUINCY^DR^JR"   # XPN suffix^prefix -> PN prefix^suffix
    assert step.PatientBirthDate == "19750312"
    assert step.PatientSex == "M"
    assert step.PatientAddress == "1 Main St, Apt 4, Springfield, IL, 62701, USA"
    assert step.MedicalAlerts == "Contrast allergy"
    assert step.ReferringPhysicianName == "SMITH^ALICE^B^DR"
    assert step.AdmissionID == "VN20261128001"
    assert step.AccessionNumber == "ACC20261128001"
    assert step.PlacerOrderNumberImagingServiceRequest == "PLC100001"
    assert step.FillerOrderNumberImagingServiceRequest == "FIL100001"
    assert step.RequestingPhysician == "JONES^ROBERT^^DR"
    assert step.InstitutionName == "St. Mary Radiology"
    assert step.RequestedProcedureID == "RP20261128001"
    assert step.StudyInstanceUID == "1.2.840.113619.2.55.3.604688119.969.1764318615.101"
    assert step.RequestedProcedureDescription == "CT Chest with contrast"
    code = step.RequestedProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "CTCHEST", "LOCAL", "CT Chest with contrast")
    assert step.RequestedProcedurePriority == "STAT"
    assert step.ReasonForTheRequestedProcedure == "Suspected pulmonary embolism"
    assert "TimezoneOffsetFromUTC" not in step        # no offset in the TS: omitted
    assert "PregnancyStatus" not in step
    assert "SpecificCharacterSet" not in step          # the SCP adds it per answer
    item = sps(step)
    assert item.ScheduledStationAETitle == "CT01"
    assert item.ScheduledProcedureStepStartDate == "20261128"
    assert item.ScheduledProcedureStepStartTime == "093000"
    assert item.Modality == "CT"
    assert item.ScheduledPerformingPhysicianName == "BROWN^CAROL"
    assert item.ScheduledProcedureStepID == "SPS20261128001"
    assert item.ScheduledProcedureStepDescription == "CT chest PE protocol"
    protocol = item.ScheduledProtocolCodeSequence[0]
    assert (protocol.CodeValue, protocol.CodeMeaning) == ("CTCH-P2", "CT chest PE protocol")
    assert item.ScheduledProcedureStepStatus == "SCHEDULED"


def test_latin1_mr_order(default_set: MappingSet) -> None:
    step = one_step(default_set, "orm-o01-latin1-mr.hl7")
    assert step.PatientName == "Müller^Jürgen^Heinz^Dr."
    assert step.PatientAddress == "Königstraße 12, Würzburg, BY, 97070, DEU"
    assert step.ReferringPhysicianName == "Weiß^Renate^^Dr. med."
    assert step.ReasonForTheRequestedProcedure == "Meniskusläsion?"
    assert step.InstitutionName == "KLINIKUM"                 # no ORC-17: MSH-4
    assert step.RequestedProcedurePriority == "ROUTINE"       # no ORC-7: OBR-27.6
    assert step.OtherPatientIDsSequence == []                  # Type 2: present, empty
    assert step.MedicalAlerts == ""
    item = sps(step)
    assert item.ScheduledStationAETitle == "UNASSIGNED"      # no ORC-18: configured default
    # No ORC-7: OBR-27.4 stands in.
    assert (item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime) == (
        "20261128", "141500")
    assert item.Modality == "MR"
    assert item.ScheduledProcedureStepDescription == "MRT Knie rechts"   # no OBR-4.5
    assert item.ScheduledProtocolCodeSequence == []


def test_utf8_greek_order_with_escape_sequences(default_set: MappingSet) -> None:
    step = one_step(default_set, "orm-o01-utf8-greek-escapes.hl7")
    assert step.PatientName == "Παπαδόπουλος^Γεώργιος"
    assert step.ReferringPhysicianName == "Νικολάου^Ελένη"
    # \T\ -> &, \F\ -> |, \S\ -> ^ : decoded after splitting, so they never split a value.
    assert step.RequestedProcedureDescription == "CT Thorax & Abdomen | Becken"
    assert sps(step).ScheduledProcedureStepDescription == "Protokoll ^ 2 Phasen"
    assert sps(step).ScheduledStationAETitle == "CT02"


def test_two_groups_make_two_steps(default_set: MappingSet) -> None:
    result = default_set.map(read_fixture("orm-o01-two-groups.hl7"))
    assert len(result.steps) == 2
    ct, mr = result.items
    for step in (ct, mr):                                      # patient level in both
        assert step.PatientID == "PAT30555"
        assert step.PatientName == "Wiśniewska^Zofia^Maria"
        assert step.PatientAddress == "ul. Łąkowa 7, Łódź, 90-562, POL"
    assert (ct.AccessionNumber, mr.AccessionNumber) == ("ACC20261129301", "ACC20261129302")
    assert (ct.RequestedProcedureID, mr.RequestedProcedureID) == ("RP20261129301",
                                                                  "RP20261129302")
    assert ct.StudyInstanceUID.endswith(".301") and mr.StudyInstanceUID.endswith(".302")
    assert (sps(ct).Modality, sps(mr).Modality) == ("CT", "MR")
    assert (sps(ct).ScheduledStationAETitle, sps(mr).ScheduledStationAETitle) == ("CT01", "MR01")
    assert (sps(ct).ScheduledProcedureStepStartTime,
            sps(mr).ScheduledProcedureStepStartTime) == ("080000", "103000")
    assert (ct.RequestedProcedurePriority, mr.RequestedProcedurePriority) == ("ROUTINE", "HIGH")
    assert (sps(ct).ScheduledProcedureStepID, sps(mr).ScheduledProcedureStepID) == (
        "SPS20261129301", "SPS20261129302")


def test_order_without_zds_gets_a_stable_derived_uid(default_set: MappingSet) -> None:
    step = one_step(default_set, "orm-o01-no-zds-tz.hl7")
    again = one_step(default_set, "orm-o01-no-zds-tz.hl7")
    assert step.StudyInstanceUID == again.StudyInstanceUID
    assert step.StudyInstanceUID == derive_uid("", ["WC55120", "WC55120-1"])
    assert step.StudyInstanceUID.startswith("2.25.")
    assert len(step.StudyInstanceUID) <= 64
    # A fresh load (a restart) derives the same UID.
    reloaded = load_mappings([DEFAULT_MAPPING], default_station_aet="UNASSIGNED")
    assert one_step(reloaded, "orm-o01-no-zds-tz.hl7").StudyInstanceUID == step.StudyInstanceUID


def test_order_with_timezone_change_control_and_fallbacks(default_set: MappingSet) -> None:
    step = one_step(default_set, "orm-o01-no-zds-tz.hl7")
    assert step.TimezoneOffsetFromUTC == "+0100"
    assert step.PatientID == "778812"                       # first PID-3 repetition
    assert [i.PatientID for i in step.OtherPatientIDsSequence] == ["PAT40123"]
    assert step.PatientName == "van Beethoven^Maria^^Mrs"
    assert step.PregnancyStatus == 3                        # PV1-15 repeats B1~B6
    assert step.RequestedProcedurePriority == "HIGH"        # P
    item = sps(step)
    assert item.ScheduledProcedureStepStatus == "SCHEDULED"    # XO
    assert item.ScheduledProcedureStepStartDate == "20261129"
    assert item.ScheduledProcedureStepStartTime == "081500"
    assert item.ScheduledProcedureStepID == "WC55120-1"       # no OBR-20: the RP ID
    assert item.Modality == "US"


def test_primary_authority_picks_the_matching_repetition(write_mapping) -> None:
    text = DEFAULT_MAPPING.read_text(encoding="utf-8").replace(
        "primary_authority: ~", "primary_authority: HOSP")
    mappings = load_mappings([write_mapping(text)], default_station_aet="UNASSIGNED")
    step = mappings.map(read_fixture("orm-o01-no-zds-tz.hl7")).items[0]
    assert (step.PatientID, step.IssuerOfPatientID) == ("PAT40123", "HOSP")


def test_every_step_carries_the_five_keys_and_the_completeness_minimum(
        default_set: MappingSet) -> None:
    for name in ("orm-o01-ihe-ct.hl7", "orm-o01-latin1-mr.hl7", "orm-o01-utf8-greek-escapes.hl7",
                 "orm-o01-two-groups.hl7", "orm-o01-no-zds-tz.hl7"):
        for step in default_set.map(read_fixture(name)).items:
            item = sps(step)
            for value in (step.PatientID, step.AccessionNumber, step.StudyInstanceUID,
                          step.RequestedProcedureID, item.ScheduledProcedureStepID,
                          item.ScheduledStationAETitle, item.ScheduledProcedureStepStartDate,
                          item.ScheduledProcedureStepStartTime, item.Modality,
                          step.PatientName):
                assert value, name


# -- rejected messages ---------------------------------------------------------------

def test_missing_pid3(default_set: MappingSet) -> None:
    with pytest.raises(MappingError) as info:
        default_set.map(read_fixture("orm-missing-pid3.hl7"))
    err = info.value
    assert (err.code, err.location, err.attribute, err.ack_code) == (
        101, "PID^1^3^1^1", "PatientID", "AE")
    assert err.text == "Patient ID missing (PID-3)"  # for a RIS operator (ERR-8)
    assert "PatientID is required" in err.log_text  # the log says which source


def test_accession_over_16_characters(default_set: MappingSet) -> None:
    with pytest.raises(MappingError) as info:
        default_set.map(read_fixture("orm-long-accession.hl7"))
    err = info.value
    assert (err.code, err.location, err.attribute, err.ack_code) == (
        102, "OBR^1^18", "AccessionNumber", "AE")
    assert "AccessionNumber (OBR-18) is 20 characters; VR SH allows 16" in err.text
    assert "ACC-2026112800000902" in err.text             # the ACK may quote the value ...
    assert "ACC-2026112800000902" not in err.log_text     # ... the log line may not
    assert err.log_text == "AccessionNumber (OBR-18) is 20 characters; VR SH allows 16"


def test_bad_birth_date(default_set: MappingSet) -> None:
    with pytest.raises(MappingError) as info:
        default_set.map(read_fixture("orm-bad-birthdate.hl7"))
    err = info.value
    assert (err.code, err.location, err.attribute) == (102, "PID^1^7", "PatientBirthDate")
    assert "not a real calendar date" in err.text
    assert "19751345" not in err.log_text


def test_order_control_is_left_to_the_order_lifecycle(default_set: MappingSet) -> None:
    # A cancel maps like any order; the order lifecycle (bridge.orders, tests/orders)
    # decides from ORC-1/ORC-5 what it does to the stored step.
    result = default_set.map(read_fixture("orm-cancel-ca.hl7"))
    assert [str(s.AccessionNumber) for s in result.items] == ["ACC20261128001"]


def test_unsupported_message_type(default_set: MappingSet) -> None:
    with pytest.raises(MappingError) as info:
        default_set.map(read_fixture("adt-a01.hl7"))
    err = info.value
    assert (err.code, err.location, err.ack_code) == (200, "MSH^1^9", "AR")
    assert "ADT^A01" in err.text


def test_unsupported_event(default_set: MappingSet) -> None:
    msg = er7(MSH.replace("ORM^O01", "ORM^O02"), "PID|1||P1")
    with pytest.raises(MappingError) as info:
        default_set.map(msg)
    assert (info.value.code, info.value.location, info.value.ack_code) == (201, "MSH^1^9", "AR")


def test_unsupported_version(default_set: MappingSet) -> None:
    msg = er7(MSH.replace("|2.3.1", "|2.2"), "PID|1||P1")
    with pytest.raises(MappingError) as info:
        default_set.map(msg)
    assert (info.value.code, info.value.location, info.value.ack_code) == (203, "MSH^1^12", "AR")


def test_later_versions_are_accepted(default_set: MappingSet) -> None:
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().decode("ascii")
    msg = parse_message(text.replace("|2.3.1|", "|2.5.1|"))
    assert default_set.map(msg).items[0].AccessionNumber == "ACC20261128001"


def test_order_without_orc(default_set: MappingSet) -> None:
    msg = er7(MSH, "PID|1||P1", "OBR|1||||||||||||||||||ACC1")
    with pytest.raises(MappingError) as info:
        default_set.map(msg)
    assert (info.value.code, info.value.location) == (100, "ORC^1")


def test_missing_accession_in_the_second_group(default_set: MappingSet) -> None:
    text = (FIXTURES / "orm-o01-two-groups.hl7").read_bytes().decode("utf-8")
    msg = parse_message(text.replace("ACC20261129302", ""))
    with pytest.raises(MappingError) as info:
        default_set.map(msg)
    err = info.value
    assert (err.code, err.location, err.attribute) == (101, "OBR^2^18", "AccessionNumber")


def test_not_hl7_is_refused_before_mapping() -> None:
    raw = (FIXTURES / "not-hl7.txt").read_bytes().decode("latin-1")
    with pytest.raises(HL7ParseError, match="message does not start with an MSH segment"):
        parse_message(raw)


def test_fixtures_are_in_the_bytes_their_msh18_declares() -> None:
    latin1 = (FIXTURES / "orm-o01-latin1-mr.hl7").read_bytes()
    assert b"|8859/1\n" in latin1 and b"M\xfcller^J\xfcrgen" in latin1 and b"\r" not in latin1
    with pytest.raises(UnicodeDecodeError, match="can't decode byte 0xfc"):
        latin1.decode("utf-8")
    greek = (FIXTURES / "orm-o01-utf8-greek-escapes.hl7").read_bytes()
    assert b"|UNICODE UTF-8\r\n" in greek and "Παπαδόπουλος".encode() in greek
    two = (FIXTURES / "orm-o01-two-groups.hl7").read_bytes()
    assert b"\n" not in two and two.count(b"\rORC|") == 2
    assert b"\rZDS|" not in (FIXTURES / "orm-o01-no-zds-tz.hl7").read_bytes()
