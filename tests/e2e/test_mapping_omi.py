"""The shipped OMI^O23, OMG^O19 and "no IHE extras" profiles, end to end: HL7 over MLLP in,
DCMTK findscu out."""

from __future__ import annotations

from .conftest import FIXTURES

SPS = "ScheduledProcedureStepSequence[0]"
KEYS = ("AccessionNumber", "RequestedProcedureID", "StudyInstanceUID", "PatientName",
        f"{SPS}.ScheduledProcedureStepID", f"{SPS}.Modality", f"{SPS}.ScheduledStationAETitle",
        f"{SPS}.ScheduledStationName", f"{SPS}.ScheduledProcedureStepStartDate",
        f"{SPS}.ScheduledProcedureStepStartTime")


def test_omi_with_three_ipc_segments_makes_three_items_findscu_finds(daemon, tmp_path) -> None:
    res = daemon.send(FIXTURES / "omi-o23-three-ipc.hl7")
    assert res.returncode == 0, res.stdout + res.stderr
    assert ": AA" in res.stdout
    rsps = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128101", *KEYS)
    steps = sorted((str(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID), ds)
                   for ds in rsps)
    assert [sps_id for sps_id, _ in steps] == [
        "SPS20261128101A", "SPS20261128101B", "SPS20261128101C"]
    for _, ds in steps:
        assert ds.RequestedProcedureID == "RP20261128101"
        assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.20261128.101"
        assert str(ds.PatientName) == "Ødegård^Åsa^Marit"
    assert [(str(sps.Modality), str(sps.ScheduledStationAETitle), str(sps.ScheduledStationName))
            for sps in (ds.ScheduledProcedureStepSequence[0] for _, ds in steps)] == [
        ("CT", "PETCT01", "PETCT ROOM 1"), ("PT", "PETCT01", "PETCT ROOM 1"),
        ("CT", "CT02", "CT ROOM 2")]
    # A console at the PET-CT asks for its station's day and gets its two steps.
    at_station = daemon.findscu(tmp_path, f"{SPS}.ScheduledStationAETitle=PETCT01",
                                f"{SPS}.ScheduledProcedureStepStartDate=20261128", *KEYS)
    assert sorted(str(ds.ScheduledProcedureStepSequence[0].Modality) for ds in at_station) == [
        "CT", "PT"]


def test_omg_and_plain_orm_reach_the_worklist(daemon, tmp_path) -> None:
    res = daemon.send(FIXTURES / "omg-o19-ct.hl7", FIXTURES / "orm-noextras-two-procedures.hl7",
                      FIXTURES / "orm-noextras-unknown-code.hl7")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(str(FIXTURES))]
    assert [ln.rsplit(": ", 1)[1] for ln in lines] == ["AA", "AA", "AE"], res.stdout
    # A v2.3 message: the rejection names the field and the code in ERR-1 (ELD), the
    # table in MSA-3 (there is no ERR-8 before v2.5; hl7-interface.md section 6).
    [err] = [ln.strip() for ln in res.stdout.splitlines() if ln.strip().startswith("ERR|")]
    assert err == "ERR|OBR^1^4^103&Table value not found&HL70357"
    [msa] = [ln.strip() for ln in res.stdout.splitlines() if ln.strip().startswith("MSA|AE")]
    assert msa.split("|")[3] == ("Modality (OBR-4.1) is not a key of lookup table procedures "
                                 "(procedures.csv); got 'PET-BRAIN'")
    ct03 = daemon.findscu(tmp_path, f"{SPS}.ScheduledStationAETitle=CT03", *KEYS)
    assert [str(ds.AccessionNumber) for ds in ct03] == ["ACC20261128201"]
    plain = daemon.findscu(tmp_path, "AccessionNumber=N48*", *KEYS)
    found = {str(ds.AccessionNumber): ds.ScheduledProcedureStepSequence[0] for ds in plain}
    assert sorted(found) == ["N4802", "N4803"]
    assert (found["N4802"].Modality, found["N4802"].ScheduledStationAETitle) == ("MR", "MR01")
    assert found["N4803"].Modality == "US"
