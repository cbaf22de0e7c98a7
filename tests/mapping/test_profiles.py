"""The shipped profiles besides IHE ORM: OMI^O23 (SWF.b), OMG^O19 and "no IHE extras" ORM.

Their golden cases (mappings/cases/, test_golden_cases.py) pin every attribute;
these tests state the intent of each profile in a few readable assertions.
"""

from __future__ import annotations

import pytest
from pydicom import Dataset

from bridge.mapping import MappingError, MappingSet, load_mappings
from bridge.mapping.engine import derive_uid

from .mapping_helpers import MAPPINGS, read_fixture


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")


def steps(mappings: MappingSet, fixture: str, mapping: str) -> list[Dataset]:
    result = mappings.map(read_fixture(fixture))
    assert result.mapping == mapping
    return result.items


def sps(ds: Dataset) -> Dataset:
    return ds.ScheduledProcedureStepSequence[0]


def test_omi_makes_one_item_per_ipc_with_its_own_keys(shipped) -> None:
    items = steps(shipped, "omi-o23-three-ipc.hl7", "ihe-swfb-omi-v251")
    assert len(items) == 3
    # One requested procedure, three steps: the order's keys are shared ...
    assert {(ds.AccessionNumber, ds.RequestedProcedureID, ds.StudyInstanceUID) for ds in items} \
        == {("ACC20261128101", "RP20261128101", "1.2.826.0.1.3680043.8.498.20261128.101")}
    # ... each step has its own ID, modality, protocol and station (IPC-4..9).
    assert [sps(ds).ScheduledProcedureStepID for ds in items] == [
        "SPS20261128101A", "SPS20261128101B", "SPS20261128101C"]
    assert [sps(ds).Modality for ds in items] == ["CT", "PT", "CT"]
    assert [sps(ds).ScheduledStationAETitle for ds in items] == ["PETCT01", "PETCT01", "CT02"]
    assert [sps(ds).ScheduledStationName for ds in items] == [
        "PETCT ROOM 1", "PETCT ROOM 1", "CT ROOM 2"]
    assert [len(sps(ds).ScheduledProtocolCodeSequence) for ds in items] == [1, 2, 1]
    first = items[0]
    # TQ1-7 start and TQ1-9 priority (SWF.b), the order's NTEs and the patient's NTE.
    assert (sps(first).ScheduledProcedureStepStartDate,
            sps(first).ScheduledProcedureStepStartTime) == ("20261128", "110000")
    assert first.RequestedProcedurePriority == "STAT"
    assert first.RequestedProcedureComments == ("Fasting since midnight\n"
                                                "Glucose below 11 mmol/l required")
    assert first.PatientComments == "Hearing impaired: use written instructions"
    assert str(first.PatientName) == "Ødegård^Åsa^Marit"


def test_omi_with_two_orders_groups_ipcs_by_order(shipped) -> None:
    mr, us = steps(shipped, "omi-o23-two-orders.hl7", "ihe-swfb-omi-v251")
    assert (mr.PlacerOrderNumberImagingServiceRequest,
            us.PlacerOrderNumberImagingServiceRequest) == ("PLC300201", "PLC300202")
    assert (sps(mr).Modality, sps(us).Modality) == ("MR", "US")
    assert (mr.RequestedProcedurePriority, us.RequestedProcedurePriority) == ("ROUTINE", "HIGH")
    assert us.TimezoneOffsetFromUTC == "-0500" and "TimezoneOffsetFromUTC" not in mr
    # No IPC-9: the site default; IPC-7 still names the station.
    assert (sps(us).ScheduledStationAETitle, sps(us).ScheduledStationName) == ("UNASSIGNED", "")
    assert sps(us).ScheduledProcedureStepLocation == "US ROOM 3"
    # No IPC-3: a UID derived from each order's own keys.
    assert mr.StudyInstanceUID == derive_uid("", ["ACC20261129201", "RP20261129201"])
    assert us.StudyInstanceUID == derive_uid("", ["ACC20261129202", "RP20261129202"])


def test_omi_order_without_ipc_is_a_segment_error(shipped) -> None:
    with pytest.raises(MappingError) as info:
        shipped.map(read_fixture("omi-o23-no-ipc.hl7"))
    assert (info.value.code, info.value.location, info.value.ack_code) == (100, "ORC^1", "AE")
    assert "ORC group 1 has no IPC segment" in info.value.text


def test_omg_uses_tq1_and_the_order_station(shipped) -> None:
    [ds] = steps(shipped, "omg-o19-ct.hl7", "omg-o19-v251")
    assert str(ds.PatientName) == "Lefèvre^Hélène^^Mme"      # decoded from ISO 8859-1
    assert (sps(ds).ScheduledStationAETitle, sps(ds).Modality) == ("CT03", "CT")
    assert (sps(ds).ScheduledProcedureStepStartTime, ds.TimezoneOffsetFromUTC) == (
        "150000", "+0100")
    assert ds.RequestedProcedurePriority == "STAT"
    assert ds.InstitutionName == "Hôpital Saint-Louis"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.20261128.201"
    assert sps(ds).ScheduledProtocolCodeSequence[0].CodeValue == "CTABD-P1"
    assert ds.RequestedProcedureComments == "Premedicate per allergy protocol"


def test_omg_without_accession_is_rejected(shipped) -> None:
    with pytest.raises(MappingError) as info:
        shipped.map(read_fixture("omg-o19-no-accession.hl7"))
    assert (info.value.code, info.value.location, info.value.attribute) == (
        101, "OBR^1^18", "AccessionNumber")


def test_no_extras_profile_fills_the_gaps_from_lookup_tables(shipped) -> None:
    [ds] = steps(shipped, "orm-noextras-ct.hl7", "orm-no-ihe-extras")
    # The filler order number stands in for the three keys; the UID is derived from it.
    assert (ds.AccessionNumber, ds.RequestedProcedureID, sps(ds).ScheduledProcedureStepID) == (
        "N4711", "N4711", "N4711")
    assert ds.StudyInstanceUID == derive_uid("orm-no-ihe-extras", ["N4711"])
    assert (sps(ds).Modality, sps(ds).ScheduledStationAETitle, sps(ds).ScheduledStationName) \
        == ("CT", "CT01", "CT Room 1")
    # OBR-36 (scheduled date/time) is the start.
    assert (sps(ds).ScheduledProcedureStepStartDate,
            sps(ds).ScheduledProcedureStepStartTime) == ("20261128", "103000")


def test_no_extras_station_by_modality_table_when_the_procedure_names_none(shipped) -> None:
    mr, us = steps(shipped, "orm-noextras-two-procedures.hl7", "orm-no-ihe-extras")
    assert (sps(mr).ScheduledStationAETitle, sps(mr).ScheduledStationName) == (
        "MR01", "MRI Suite 1")
    # US-ABD has no station in procedures.csv: the modality table gives two stations.
    assert (list(sps(us).ScheduledStationAETitle), sps(us).ScheduledStationName) == (
        ["US01", "US02"], "Ultrasound")
    assert us.RequestedProcedureDescription == "US ABDOMEN COMPLETE"   # from the table
    assert mr.RequestedProcedureDescription == "MR KNEE LEFT"         # from OBR-4.2
    assert mr.RequestedProcedureComments == "Metal implant in right knee: check MR safety"
    assert "RequestedProcedureComments" not in us


def test_no_extras_rejects_a_code_missing_from_the_table(shipped) -> None:
    with pytest.raises(MappingError) as info:
        shipped.map(read_fixture("orm-noextras-unknown-code.hl7"))
    err = info.value
    assert (err.code, err.location, err.attribute) == (103, "OBR^1^4^1^1", "Modality")
    assert "is not a key of lookup table procedures (procedures.csv)" in err.text


def test_an_ihe_order_still_goes_to_the_ihe_profile(shipped) -> None:
    # The no-extras profile only takes an ORM without OBR-18.
    assert shipped.map(read_fixture("orm-o01-ihe-ct.hl7")).mapping == "ihe-swf-orm-v231"
    with pytest.raises(MappingError) as info:
        shipped.map(read_fixture("orm-long-accession.hl7"))
    assert info.value.attribute == "AccessionNumber"
