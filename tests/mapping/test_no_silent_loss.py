"""No silent data loss: every segment an item reads one of is read, or the message is rejected.

A path without a selector (``OBR-18``) reads the first segment of its type that
an item sees. When an item sees two (a second OBR in an ORC group), or a segment
of such a type is seen by no item (a PID before the first ORC while another PID
sits inside an order), the engine rejects the message with 100 at the segment
that would be lost, instead of mapping the first and acknowledging the rest.
"""

from __future__ import annotations

import time

import pytest

from bridge.mapping import MappingError, MappingLoadError, MappingSet, load_mappings

from .mapping_helpers import MSH, er7, load_text, minimal

PID = "PID|1||PAT1^^^HOSP^MR||DOE^JOHN"
ORC1 = "ORC|NW|PLC1|FIL1"
OBR1 = "OBR|1|PLC1|FIL1|CT1^Head CT^L||||||||||||||ACC1|RP1|SPS1||||CT"
OBR2 = "OBR|2|PLC2|FIL2|CT2^Neck CT^L||||||||||||||ACC2|RP2|SPS2||||CT"


def rejected(mappings: MappingSet, *segments: str) -> MappingError:
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*segments))
    assert (info.value.code, info.value.ack_code) == (100, "AE")
    return info.value


# -- a second OBR in an ORC group ----------------------------------------------------

def test_a_second_obr_in_an_orc_group_is_rejected_at_that_obr(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    error = rejected(mappings, MSH, PID, ORC1, OBR1, OBR2)
    assert error.location == "OBR^2"
    assert error.text == (
        "ORC group 1 has 2 OBR segments; mapping test reads one OBR per worklist item "
        "(one item per ORC), so the 2nd OBR of the message would be lost; send each OBR "
        "with its own ORC")
    assert error.log_text == error.text  # segment names only: no patient data


def test_the_second_obr_of_a_later_order_is_named(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    error = rejected(mappings, MSH, PID, ORC1, OBR1, "ORC|NW|PLC2|FIL2", OBR2,
                     "OBR|3|||||||||||||||||ACC3", "NTE|1||note")
    assert error.location == "OBR^3"
    assert error.text.startswith("ORC group 2 has 2 OBR segments;")


def test_ten_thousand_obrs_are_rejected_at_the_second_quickly(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    many = [f"OBR|{n}|||||||||||||||||ACC{n}||||||CT" for n in range(1, 10_001)]
    message = er7(MSH, PID, ORC1, *many)
    started = time.perf_counter()
    with pytest.raises(MappingError) as info:
        mappings.map(message)
    assert time.perf_counter() - started < 1.0
    assert info.value.location == "OBR^2"
    assert "has 10000 OBR segments" in info.value.text


def test_pairs_of_orc_and_obr_are_one_item_each(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    items = mappings.map(er7(MSH, PID, ORC1, OBR1, "ORC|NW|PLC2|FIL2", OBR2)).items
    assert [i.AccessionNumber for i in items] == ["ACC1", "ACC2"]


def test_group_by_orc_and_obr_makes_one_item_per_obr(write_mapping) -> None:
    text = minimal("""
        PlacerOrderNumberImagingServiceRequest: ORC-2.1
        RequestedProcedureComments: {from: 'NTE(after OBR)-3', join: ' / ', omit_empty: true}
    """).replace("group_by: ORC", "group_by: [ORC, OBR]")
    mappings = load_text(write_mapping, text)
    result = mappings.map(er7(MSH, PID, ORC1, OBR1, "NTE|1||first", OBR2, "NTE|1||second",
                              "ORC|NW|PLC3|FIL3", "OBR|3|||||||||||||||||ACC3||||||MR"))
    assert [(i.AccessionNumber, i.PlacerOrderNumberImagingServiceRequest,
             i.get("RequestedProcedureComments")) for i in result.items] == [
        ("ACC1", "PLC1", "first"), ("ACC2", "PLC1", "second"), ("ACC3", "PLC3", None)]
    assert [s.group for s in result.steps] == ["ORC^1 > OBR^1", "ORC^1 > OBR^2",
                                               "ORC^2 > OBR^3"]
    # Each step belongs to its order: ORC-1/ORC-5 of the ORC the OBR follows.
    assert [s.order_control.orc_seq for s in result.steps] == [1, 1, 2]


# -- an ORC without its OBR ------------------------------------------------------------

def test_an_orc_without_obr_is_located_at_that_orc_not_at_another_groups_obr(
        write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace(
        "AccessionNumber: OBR-18", "AccessionNumber: {from: OBR-18, required: true}"))
    error = rejected(mappings, MSH, PID, ORC1, OBR1, "ORC|NW|PLC2|FIL2")
    assert (error.location, error.attribute) == ("ORC^2", "AccessionNumber")
    assert error.text == ("AccessionNumber is required but ORC group 2 has no OBR segment "
                          "(for OBR-18)")


def test_provenance_of_a_value_from_a_missing_segment_names_the_group(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace(
        "group_by: ORC", "group_by: ORC\nstudy_uid: {missing: generate}"))
    steps = mappings.map(er7(MSH, PID, ORC1, OBR1, "ORC|NW|PLC2|FIL2")).steps
    assert [s.locate("AccessionNumber") for s in steps] == ["OBR^1^18", "ORC^2"]


def test_a_segment_missing_from_the_whole_message_keeps_its_field_location(
        write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    with pytest.raises(MappingError) as info:
        mappings.map(er7(MSH, ORC1, OBR1))
    assert (info.value.code, info.value.location) == (101, "PID^1^3^1^1")


def test_group_by_orc_and_obr_rejects_an_orc_without_obr(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace("group_by: ORC", "group_by: [ORC, OBR]"))
    error = rejected(mappings, MSH, PID, ORC1, OBR1, "ORC|NW|PLC2|FIL2")
    assert error.location == "ORC^2"
    assert error.text == ("ORC group 2 has no OBR segment; mapping test makes one worklist "
                          "item per OBR")


# -- segments outside the groups: a second patient ------------------------------------

def test_a_second_pid_is_rejected(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal())
    error = rejected(mappings, MSH, PID, "PID|2||PAT2^^^HOSP^MR||ROE^RICHARD", ORC1, OBR1)
    assert error.location == "PID^2"
    assert error.text == (
        "the message has 2 PID segments; mapping test reads one PID per worklist item "
        "(one item per ORC), so the 2nd PID of the message would be lost; send one PID "
        "per message")


def test_a_pid_that_no_group_sees_is_rejected(write_mapping) -> None:
    """Groups look up a type that occurs inside them in their own segments only: with
    a second PID inside an order, the first PID would be read by no item at all."""
    mappings = load_text(write_mapping, minimal())
    error = rejected(mappings, MSH, PID, ORC1, OBR1, "PID|2||PAT2^^^HOSP^MR||ROE^RICHARD",
                     "ORC|NW|PLC2|FIL2", OBR2)
    assert error.location == "PID^1"
    assert "the message has 2 PID segments" in error.text


# -- nested groups (OMI) ----------------------------------------------------------------

OMI_MAPPING = """
name: omi
match:
  message_type: OMI^O23
  versions: ["2.5.1"]
group_by: [ORC, IPC]
attributes:
  PatientID: PID-3.1
  RequestedProcedureDescription: OBR-4.2
  AccessionNumber: IPC-1.1
  RequestedProcedureID: IPC-2.1
  ScheduledProcedureStepSequence:
    - ScheduledProcedureStepID: IPC-4.1
      ScheduledProcedureStepStartDate: {from: TQ1-7, as: DA}
"""
OMI_MSH = "MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RAD|20261128083015||OMI^O23^OMI_O23|C9|P|2.5.1"
TQ1 = "TQ1|1||||||202611281000"
OMI_OBR1 = "OBR|1|PLC1|FIL1|CTA^CT Angio^L"
OMI_OBR2 = "OBR|2|PLC2|FIL2|CTN^CT Neck^L"
IPC1 = "IPC|ACC1|RP1|1.2.3.1|SPS1|CT"
IPC2 = "IPC|ACC2|RP2|1.2.3.2|SPS2|CT"


def test_omi_several_ipc_in_one_order_are_several_items(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    items = mappings.map(er7(OMI_MSH, PID, ORC1, TQ1, OMI_OBR1, IPC1, IPC2)).items
    assert [i.AccessionNumber for i in items] == ["ACC1", "ACC2"]


def test_omi_a_second_obr_before_the_ipcs_is_rejected(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    error = rejected(mappings, OMI_MSH, PID, ORC1, TQ1, OMI_OBR1, OMI_OBR2, IPC1, IPC2)
    assert error.location == "OBR^2"
    assert error.text == (
        "ORC group 1 has 2 OBR segments; mapping omi reads one OBR per worklist item "
        "(one item per IPC), so the 2nd OBR of the message would be lost; send each OBR "
        "with its own ORC")


def test_omi_an_obr_between_ipcs_is_rejected(write_mapping) -> None:
    """ORC OBR IPC OBR IPC: the IPC groups would see the second OBR (the first item) or
    none (the second), and the first OBR would be read by no item."""
    mappings = load_text(write_mapping, OMI_MAPPING)
    error = rejected(mappings, OMI_MSH, PID, ORC1, TQ1, OMI_OBR1, IPC1, OMI_OBR2, IPC2)
    assert error.location == "OBR^1"
    assert error.text.startswith("ORC group 1 has 2 OBR segments;")


def test_omi_a_second_timing_is_rejected(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    error = rejected(mappings, OMI_MSH, PID, ORC1, TQ1, "TQ1|2||||||202611291000", OMI_OBR1,
                     IPC1)
    assert error.location == "TQ1^2"


# -- what may repeat ------------------------------------------------------------------

def test_segments_read_with_a_selector_or_not_at_all_may_repeat(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        RequestedProcedureComments: {from: 'NTE(after OBR)-3', join: ' / '}
        PatientComments: {from: 'OBX(*)-5', join: ', '}
        ReasonForTheRequestedProcedure: {from: 'DG1(where -6 = A)-4'}
    """))
    [item] = mappings.map(er7(MSH, PID, ORC1, OBR1, "NTE|1||one", "NTE|2||two",
                              "DG1|1|||first||A", "DG1|2|||second||F",
                              "OBX|1|NM|w||70", "OBX|2|NM|h||180",
                              "ZXX|unread", "ZXX|unread too")).items
    assert item.RequestedProcedureComments == "one / two"
    assert item.PatientComments == "70, 180"
    assert item.ReasonForTheRequestedProcedure == "first"


def test_take_first_reads_the_first_of_a_repeating_segment_on_purpose(write_mapping) -> None:
    segments = (MSH, PID, ORC1, OBR1, "OBX|1|NM|w||70", "OBX|2|NM|h||180")
    plain = minimal("PatientComments: OBX-5")
    error = rejected(load_text(write_mapping, plain), *segments)
    assert error.location == "OBX^2"
    mappings = load_text(write_mapping, plain.replace("group_by: ORC",
                                                      "group_by: ORC\ntake_first: [OBX]"))
    assert mappings.map(er7(*segments)).items[0].PatientComments == "70"


def test_routing_conditions_do_not_count_as_reads(write_mapping) -> None:
    text = minimal().replace("message_type: ORM^O01",
                             "message_type: ORM^O01\n  when: 'PV1-2 = O'")
    mappings = load_text(write_mapping, text)
    assert mappings.mappings[0].one_per_item == ("OBR", "ORC", "PID")
    assert len(mappings.map(er7(MSH, PID, "PV1|1|O", "PV1|2|I", ORC1, OBR1)).items) == 1


def test_orc_is_always_one_per_item_for_the_order_control(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace("group_by: ORC\n", ""))
    assert "ORC" in mappings.mappings[0].one_per_item
    error = rejected(mappings, MSH, PID, ORC1, OBR1, "ORC|CA|PLC1|FIL1")
    assert error.location == "ORC^2"


def test_take_first_must_name_a_segment_read_without_a_selector(write_mapping) -> None:
    path = write_mapping(minimal().replace("group_by: ORC", "group_by: ORC\ntake_first: [ZDS]"))
    with pytest.raises(MappingLoadError) as info:
        load_mappings([path], default_station_aet="UNASSIGNED")
    [error] = info.value.errors
    assert (error.line, error.key) == (5, "take_first[0]")
    assert "no path reads ZDS without a selector" in error.problem
