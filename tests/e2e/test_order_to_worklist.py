"""An HL7 order over MLLP becomes a worklist item that DCMTK's findscu finds."""

from __future__ import annotations

import socket
import sqlite3

from bridge.hl7 import encode_frame, parse_message

from .conftest import FIXTURES, start_daemon, stop_daemon, write_config

GOOD = [
    "orm-o01-ihe-ct.hl7",
    "orm-o01-latin1-mr.hl7",
    "orm-o01-utf8-greek-escapes.hl7",
    "orm-o01-two-groups.hl7",
    "orm-o01-no-zds-tz.hl7",
]
SPS = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription",
    "StudyInstanceUID", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", f"{SPS}.ScheduledStationAETitle",
    f"{SPS}.Modality", f"{SPS}.ScheduledProcedureStepStartDate",
    f"{SPS}.ScheduledProcedureStepStartTime", f"{SPS}.ScheduledProcedureStepID",
    f"{SPS}.ScheduledProcedureStepDescription",
)


def send_all(daemon) -> None:
    res = daemon.send(*(FIXTURES / f for f in GOOD))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": AA") == len(GOOD)


def by_accession(rsps) -> dict[str, object]:
    return {str(ds.AccessionNumber): ds for ds in rsps}


def test_orders_are_found_by_station_and_day(daemon, tmp_path):
    send_all(daemon)
    rsps = daemon.findscu(tmp_path, f"{SPS}.ScheduledStationAETitle=CT01",
                          f"{SPS}.ScheduledProcedureStepStartDate=20261128", *RETURN_KEYS)
    assert list(by_accession(rsps)) == ["ACC20261128001"]
    (ds,) = rsps
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientID == "PAT10001"
    assert ds.IssuerOfPatientID == "HOSP"
    assert str(ds.PatientName) == "DOE^JOHN^QUINCY^DR^JR"  # XPN suffix/prefix reordered
    assert ds.PatientBirthDate == "19750312"
    assert ds.PatientSex == "M"
    assert ds.RequestedProcedureID == "RP20261128001"
    assert ds.StudyInstanceUID == "1.2.840.113619.2.55.3.604688119.969.1764318615.101"
    assert ds.PlacerOrderNumberImagingServiceRequest == "PLC100001"
    assert ds.FillerOrderNumberImagingServiceRequest == "FIL100001"
    sps = ds.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "CT01"
    assert sps.Modality == "CT"
    assert sps.ScheduledProcedureStepStartDate == "20261128"
    assert sps.ScheduledProcedureStepStartTime == "093000"
    assert sps.ScheduledProcedureStepID == "SPS20261128001"
    # Exactly the requested keys come back, plus the character set.
    requested = {k.split(".")[0].split("[")[0] for k in RETURN_KEYS}
    requested.add("SpecificCharacterSet")
    assert {e.keyword for e in ds} == requested


def test_each_orc_obr_group_is_its_own_item_and_date_ranges_match(daemon, tmp_path):
    send_all(daemon)
    rsps = daemon.findscu(tmp_path, f"{SPS}.Modality=MR",
                          f"{SPS}.ScheduledProcedureStepStartDate=20261128-20261129",
                          *RETURN_KEYS)
    found = by_accession(rsps)
    assert sorted(found) == ["ACC20261129302", "KL2026112800817"]
    # Ordered by start date/time.
    assert [str(ds.AccessionNumber) for ds in rsps] == ["KL2026112800817", "ACC20261129302"]
    assert found["ACC20261129302"].ScheduledProcedureStepSequence[0] \
        .ScheduledStationAETitle == "MR01"
    everything = daemon.findscu(tmp_path, "AccessionNumber")
    assert len(everything) == 6  # five messages, one of them with two groups


def test_latin1_and_utf8_names_arrive_intact(daemon, tmp_path):
    send_all(daemon)
    (latin,) = daemon.findscu(tmp_path, "AccessionNumber=KL2026112800817", *RETURN_KEYS)
    assert str(latin.PatientName) == "Müller^Jürgen^Heinz^Dr."
    # No station in the message: the configured default, never empty.
    assert latin.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "UNASSIGNED"
    # No ORC-7 start: OBR-27.4 is the fallback.
    assert latin.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "141500"
    (greek,) = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128077", *RETURN_KEYS)
    assert str(greek.PatientName) == "Παπαδόπουλος^Γεώργιος"
    assert greek.RequestedProcedureDescription == "CT Thorax & Abdomen | Becken"


def test_wildcard_name_query_ignores_case_and_accents(daemon, tmp_path):
    send_all(daemon)
    rsps = daemon.findscu(tmp_path, "SpecificCharacterSet=ISO_IR 192", "PatientName=muLL*",
                          "AccessionNumber")
    assert [str(ds.AccessionNumber) for ds in rsps] == ["KL2026112800817"]


def test_missing_study_uid_is_derived_deterministically(daemon, tmp_path):
    send_all(daemon)
    (first,) = daemon.findscu(tmp_path, "AccessionNumber=WC55120", "StudyInstanceUID")
    assert first.StudyInstanceUID.startswith("2.25.")
    # The same order again (a resend) keeps the same UID and creates nothing new.
    res = daemon.send(FIXTURES / "orm-o01-no-zds-tz.hl7")
    assert ": AA" in res.stdout
    again = daemon.findscu(tmp_path, "AccessionNumber=WC55120", "StudyInstanceUID")
    assert [ds.StudyInstanceUID for ds in again] == [first.StudyInstanceUID]


def test_missing_patient_id_gets_ae_with_err_and_nothing_is_stored(daemon, tmp_path):
    res = daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    assert res.returncode == 1
    ack = _ack_from_cli(res.stdout)
    assert ack.first("MSA").value(1) == "AE"
    assert ack.first("MSA").value(2) == "MSG-20261128-0901"
    err = ack.first("ERR")
    assert err is not None
    # v2.3.1: ERR-1 (ELD) only, the sentence in MSA-3 (docs/hl7-interface.md, section 6)
    assert [err.value(1, c) for c in (1, 2, 3)] == ["PID", "1", "3"]
    assert err.value(1, 4) == "101"
    assert ack.first("MSA").value(3) == "Patient ID missing (PID-3)"
    assert daemon.findscu(tmp_path, "AccessionNumber=ACC20261128901") == []
    assert daemon.alive() and daemon.echoscu() == 0
    # The rejected message is kept whole, with its reason.
    row = _message_log(daemon, "MSG-20261128-0901")
    assert row["ack_code"] == "AE" and "101" in row["error"]
    assert row["raw"] == (FIXTURES / "orm-missing-pid3.hl7").read_bytes().replace(b"\n", b"\r")


def test_value_too_long_for_its_vr_is_rejected_naming_field_and_attribute(daemon):
    res = daemon.send(FIXTURES / "orm-long-accession.hl7")
    assert res.returncode == 1
    ack = _ack_from_cli(res.stdout)
    err = ack.first("ERR")
    assert ack.first("MSA").value(1) == "AE"
    assert err.raw(1).startswith("OBR^1^18^")  # v2.3.1: ERR-1 (ELD), text in MSA-3
    assert "AccessionNumber" in ack.first("MSA").raw(3)


def test_frame_that_is_not_hl7_is_closed_and_the_daemon_keeps_serving(daemon):
    with socket.create_connection(("127.0.0.1", daemon.mllp_port), timeout=10) as s:
        s.sendall(encode_frame((FIXTURES / "not-hl7.txt").read_bytes()))
        assert s.recv(1024) == b""  # closed cleanly, no reply
    with socket.create_connection(("127.0.0.1", daemon.mllp_port), timeout=10) as s:
        s.sendall(encode_frame((FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
                               .replace(b"\n", b"\r")))
        assert b"MSA|AA|MSG-20261128-0001" in _read_frame(s)
    assert daemon.alive()
    assert _message_log(daemon, "")["error"].startswith("not HL7")


def test_unknown_character_set_gets_ar_at_msh18(daemon):
    msg = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(b"\n", b"\r")
    msg = msg.replace(b"||AL|NE||", b"||AL|NE||KLINGON", 1)
    with socket.create_connection(("127.0.0.1", daemon.mllp_port), timeout=10) as s:
        s.sendall(encode_frame(msg))
        ack = parse_message(_read_frame(s).decode("ascii"))
    assert ack.first("MSA").value(1) == "AR"
    # v2.3.1: ERR-1 (ELD) only: segment ^ sequence ^ field ^ code (hl7-interface.md 6)
    assert [ack.first("ERR").value(1, c) for c in (1, 2, 3, 4)] == ["MSH", "1", "18", "103"]


def test_accepted_orders_survive_a_restart(tmp_path):
    cfg = write_config(tmp_path)
    d = start_daemon(cfg, tmp_path / "data")
    try:
        send_all(d)
    finally:
        assert stop_daemon(d) == 0
    d = start_daemon(cfg, tmp_path / "data")
    try:
        assert len(d.findscu(tmp_path, "AccessionNumber")) == 6
        listing = d.cli("worklist")
        assert listing.returncode == 0
        assert "ACC20261128001" in listing.stdout and "(6 of 6 item(s))" in listing.stdout
    finally:
        assert stop_daemon(d) == 0


def test_logs_hold_no_patient_data(daemon, tmp_path):
    send_all(daemon)
    daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    daemon.findscu(tmp_path, "PatientName=DOE*", "PatientID")
    log = "\n".join(daemon.log)
    for phi in ("DOE", "PAT10001", "Müller", "ROE^RICHARD", "19750312"):
        assert phi not in log


def _ack_from_cli(stdout: str):
    lines = [ln.strip() for ln in stdout.splitlines() if ln.startswith("    ")]
    return parse_message("\r".join(lines))


def _read_frame(s: socket.socket) -> bytes:
    buf = b""
    while b"\x1c" not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a reply"
        buf += chunk
    return buf[buf.index(b"\x0b") + 1:buf.index(b"\x1c")]


def _message_log(daemon, control_id: str) -> dict:
    con = sqlite3.connect(daemon.data_dir / "bridge.sqlite3")
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM message_log WHERE control_id = ? ORDER BY id DESC",
                          (control_id,)).fetchone()
    finally:
        con.close()
    assert row is not None, f"no message_log row for {control_id!r}"
    return dict(row)
