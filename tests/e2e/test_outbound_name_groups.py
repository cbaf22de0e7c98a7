"""A Japanese name in three component groups, there and back: the order comes in over
MLLP with PID-5 repeated A/I/P (XPN-8), findscu (DCMTK) finds the item, a modality
(pynetdicom) runs the MPPS cycle, and the RIS (a real MLLP receiver) gets IN PROGRESS
and COMPLETED with PID-5 as three repetitions again, in the destination's ISO IR87
(ISO-2022-JP) bytes. python-hl7 parses what arrived."""

from __future__ import annotations

from pathlib import Path

import hl7

from tests.e2e.test_mpps_roundtrip import modality_performs
from tests.e2e.test_mpps_roundtrip import outbound_config as roundtrip_config
from tests.outbound.mllp_receiver import MllpReceiver

from .conftest import FIXTURES, start_daemon, stop_daemon, write_config

JAPANESE = FIXTURES / "orm-o01-japanese-name-groups.hl7"
ACCESSION = "ACC20261129401"
SPS = "ScheduledProcedureStepSequence[0]"
KEYS = (f"AccessionNumber={ACCESSION}", "StudyInstanceUID", "RequestedProcedureID",
        "PatientID", "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest", f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.Modality")
# PS3.5 Annex H's name as the three XPN repetitions, in ISO 2022 IR 87 bytes.
PID5_BYTES = (b"|Yamada^Tarou^^^^^L^A~\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B^^^^^L^I"
              b"~\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B^^^^^L^P|")


def outbound_config(port: int) -> str:
    """test_mpps_roundtrip's ORM^O01 destination, in ISO IR87 (ISO-2022-JP)."""
    config = roundtrip_config(port)
    assert "receiving_facility: HOSP,\n" in config
    return config.replace("receiving_facility: HOSP,\n",
                          "receiving_facility: HOSP, charset: ISO IR87,\n")


def test_a_japanese_order_comes_back_to_the_ris_with_three_pid5_repetitions(tmp_path: Path):
    receiver = MllpReceiver()
    receiver.start()
    daemon = start_daemon(write_config(tmp_path, outbound_config(receiver.port)),
                          tmp_path / "data")
    try:
        res = daemon.send(JAPANESE)
        assert res.returncode == 0 and ": AA" in res.stdout, res.stdout + res.stderr
        (item,) = daemon.findscu(tmp_path, *KEYS)
        assert item.PatientID == "PAT40101"
        # What the console shows and sends back in the MPPS (ISO_IR 192 there).
        item.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"

        modality_performs(daemon, item)
        got = receiver.wait_for(2)
        for m in got:
            assert PID5_BYTES in m.payload
            message = hl7.parse(m.payload.decode("iso2022_jp"))
            assert str(message.segment("MSH")[18]) == "ISO IR87"
            pid5 = message.segment("PID")[5]
            assert [(str(r[0]), str(r[1]), str(r[6]), str(r[7])) for r in pid5] == [
                ("Yamada", "Tarou", "L", "A"), ("山田", "太郎", "L", "I"),
                ("やまだ", "たろう", "L", "P")]
        assert [str(hl7.parse(m.payload.decode("iso2022_jp")).segment("ORC")[5])
                for m in got] == ["IP", "CM"]
        # No patient data in the daemon's log.
        log = "\n".join(daemon.log)
        assert "Yamada" not in log and "山田" not in log and "PAT40101" not in log
    finally:
        code = stop_daemon(daemon)
        receiver.stop()
    assert code == 0, "\n".join(daemon.log[-30:])
