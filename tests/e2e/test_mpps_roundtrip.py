"""The closed loop as a site runs it: an order in over MLLP, findscu (DCMTK) finds it,
a modality (pynetdicom; DCMTK 3.6.7 has no MPPS SCU) sends N-CREATE and N-SET, and a
real MLLP receiver standing in for the RIS gets IN PROGRESS then COMPLETED with the
order's own numbers. Also: the outbox survives a restart of the daemon."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.outbound.mllp_receiver import MllpReceiver, Received, reserve_port

from .conftest import FIXTURES, REPO, start_daemon, stop_daemon, write_config

SPS = "ScheduledProcedureStepSequence[0]"
MPPS_UID = "1.2.826.0.1.3680043.8.498.55001"
KEYS = ("AccessionNumber", "StudyInstanceUID", "RequestedProcedureID", "PatientID",
        "PatientName", "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest", f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.ScheduledStationAETitle=CT01", f"{SPS}.Modality")


def outbound_config(port: int) -> str:
    return ("outbound:\n"
            f"  profiles: [{REPO / 'mappings' / 'outbound'}]\n"
            "  sending_application: MWLBRIDGE\n"
            "  sending_facility: RADIOLOGY\n"
            "  poll_interval_s: 0.5\n"
            "  destinations:\n"
            f"    - {{name: ris, host: 127.0.0.1, port: {port}, message_type: ORM^O01,\n"
            "       receiving_application: RIS, receiving_facility: HOSP,\n"
            "       ack_timeout_s: 5, backoff_initial_s: 0.2, backoff_max_s: 1}\n")


def n_create(item: Dataset) -> Dataset:
    """What a CT console sends after picking ``item`` from the worklist."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ssa = Dataset()
    for keyword in ("StudyInstanceUID", "AccessionNumber", "RequestedProcedureID",
                    "PlacerOrderNumberImagingServiceRequest",
                    "FillerOrderNumberImagingServiceRequest"):
        setattr(ssa, keyword, item.get(keyword, ""))
    ssa.ScheduledProcedureStepID = item.ScheduledProcedureStepSequence[0] \
        .ScheduledProcedureStepID
    ds.ScheduledStepAttributesSequence = [ssa]
    ds.PatientName = item.PatientName
    ds.PatientID = item.PatientID
    ds.PerformedProcedureStepID = "PPS-E2E-1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261128"
    ds.PerformedProcedureStepStartTime = "093512"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    return ds


def n_set_completed() -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261128"
    ds.PerformedProcedureStepEndTime = "094230"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.55001.1"
    series.ProtocolName = "CT CHEST"
    series.ReferencedImageSequence = []
    ds.PerformedSeriesSequence = [series]
    return ds


def modality_performs(daemon, item: Dataset) -> None:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title=daemon.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(n_create(item), ModalityPerformedProcedureStep,
                                        MPPS_UID)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(n_set_completed(), ModalityPerformedProcedureStep,
                                     MPPS_UID)
        assert status.Status == 0x0000
    finally:
        assoc.release()


def assert_ip_then_cm(got: list[Received], item: Dataset) -> None:
    assert [m.field("ORC", 5) for m in got] == ["IP", "CM"]
    for m in got:
        assert m.field("MSH", 9) == "ORM" and m.field("MSH", 9, 2) == "O01"
        assert m.field("ORC", 1) == "SC"
        assert m.field("ORC", 2) == "PLC100001" == str(
            item.PlacerOrderNumberImagingServiceRequest)
        assert m.field("ORC", 3) == "FIL100001" == str(
            item.FillerOrderNumberImagingServiceRequest)
        assert m.field("OBR", 18) == "ACC20261128001" == str(item.AccessionNumber)
        assert m.field("OBR", 19) == "RP20261128001"
        assert m.field("ZDS", 1) == str(item.StudyInstanceUID) == \
            "1.2.840.113619.2.55.3.604688119.969.1764318615.101"
        assert m.field("PID", 3) == "PAT10001"
    assert got[0].control_id != got[1].control_id


def test_order_worklist_mpps_and_status_back_to_the_ris(tmp_path: Path):
    receiver = MllpReceiver()
    receiver.start()
    daemon = start_daemon(write_config(tmp_path, outbound_config(receiver.port)),
                          tmp_path / "data")
    try:
        res = daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        assert res.returncode == 0, res.stdout + res.stderr
        (item,) = daemon.findscu(tmp_path, *KEYS)
        assert item.AccessionNumber == "ACC20261128001"

        modality_performs(daemon, item)
        got = receiver.wait_for(2)
        assert_ip_then_cm(got, item)

        # The worklist no longer offers the completed step (hidden, kept).
        assert daemon.findscu(tmp_path, *KEYS) == []
        listing = daemon.cli("outbox", "list", "--state", "all")
        assert listing.returncode == 0, listing.stderr
        assert "(2 shown; 0 pending, 2 sent, 0 dead)" in listing.stdout
        assert all(f"{m.control_id}" in listing.stdout for m in got)
        # No patient data in the daemon's log.
        log = "\n".join(daemon.log)
        assert "DOE" not in log and "PAT10001" not in log
    finally:
        code = stop_daemon(daemon)
        receiver.stop()
    assert code == 0, "\n".join(daemon.log[-30:])


def test_a_restart_with_messages_still_in_the_outbox_delivers_them_once_in_order(
        tmp_path: Path):
    port = reserve_port()  # the RIS is down while the exam runs
    config = write_config(tmp_path, outbound_config(port))
    daemon = start_daemon(config, tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        (item,) = daemon.findscu(tmp_path, *KEYS)
        modality_performs(daemon, item)
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])

    listing = daemon.cli("outbox", "list")
    assert "(2 shown; 2 pending, 0 sent, 0 dead)" in listing.stdout, listing.stdout
    assert "cannot connect to 127.0.0.1" in listing.stdout

    receiver = MllpReceiver(port=port)
    receiver.start()
    daemon = start_daemon(config, tmp_path / "data")
    try:
        got = receiver.wait_for(2)
        assert_ip_then_cm(got, item)
        listing = daemon.cli("outbox", "list", "--state", "all")
        assert "(2 shown; 0 pending, 2 sent, 0 dead)" in listing.stdout, listing.stdout
    finally:
        code = stop_daemon(daemon)
        receiver.stop()
    assert code == 0
    assert len(receiver.messages) == 2  # delivered once each: nothing was ACKed before
