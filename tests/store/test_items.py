"""The stored item format is standard DICOM JSON and round-trips every value type."""

from __future__ import annotations

import json

from pydicom import Dataset

from bridge.store.items import dumps_item, index_values, loads_item, pad_time


def rich_item() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.PatientID = "P1"
    ds.OtherPatientIDsSequence = []
    ds.PatientWeight = "72.5"            # DS
    ds.PatientSize = None                # empty DS
    ds.AdmittingDiagnosesDescription = ["a", "b"]  # LO, VM 1-n
    ds.PregnancyStatus = 4               # US
    ds.PatientComments = "line 1\nline 2 with ümlaut"  # LT
    ds.AccessionNumber = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = ["CT01", "CT02"]  # AE, VM 1-n
    sps.ScheduledProcedureStepStartDate = "20261128"
    sps.ScheduledProcedureStepStartTime = "0930"
    sps.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = [sps]
    ds.add_new(0x00091010, "OB", b"\x00\x01binary")
    return ds


def test_output_is_the_same_json_pydicom_writes():
    ds = rich_item()
    assert json.loads(dumps_item(ds)) == ds.to_json_dict()


def test_round_trip_keeps_every_value():
    ds = rich_item()
    back = loads_item(dumps_item(ds))
    assert back == ds
    assert back.PatientName.ideographic == "山田^太郎"
    assert list(back.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == [
        "CT01", "CT02"]
    assert back.PregnancyStatus == 4 and float(back.PatientWeight) == 72.5
    assert back.PatientSize is None


def test_reads_what_pydicom_wrote():
    ds = rich_item()
    assert loads_item(json.dumps(ds.to_json_dict())) == ds


def test_equal_items_give_equal_text():
    a, b = rich_item(), rich_item()
    assert dumps_item(a) == dumps_item(b)


def test_index_values_take_the_first_station_and_pad_times():
    idx = index_values(rich_item())
    assert idx.station_aet == "CT01"
    assert (idx.sps_start_date, idx.sps_start_time, idx.sps_start) == (
        "20261128", "093000", "20261128093000")
    assert idx.patient_name_norm == "yamada^tarou=山田^太郎=やまだ^たろう"
    assert pad_time("08") == "080000" and pad_time("101530.123") == "101530"
    assert pad_time("") == ""


def test_name_folding_is_for_latin_greek_cyrillic_accents_only():
    from bridge.store.names import normalise_name

    assert normalise_name("Müller^Jürgen") == normalise_name("MULLER^JURGEN") == "muller^jurgen"
    assert normalise_name("Παπαδόπουλος") == "παπαδοπουλοσ"  # casefold: final sigma too
    assert normalise_name("Ёлкин") == "елкин"
    assert normalise_name("だ*") == "だ*"  # kana keep their voicing mark
    assert normalise_name("ＤＯＥ") == "doe"  # full-width letters fold to ASCII
