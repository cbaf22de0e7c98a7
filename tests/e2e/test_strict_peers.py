"""Issue 14, against the real tools: the daemon as a subprocess, HL7 over MLLP
(``mwl-bridge send``) and DCMTK's findscu as the console.

- ``\\Xhh...\\`` is decoded in the message's MSH-18 character set (item 3 of the
  issue): ``Caf\\XC3A9\\`` in a UTF-8 message reaches the console as "Café".
- A console with no per-AE character set that names ``ISO_IR 100`` in its query is
  answered in ISO_IR 100 when the item fits it; otherwise the ``unencodable`` policy
  applies, and is logged (item 4).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pydicom import Dataset

from tests.e2e.conftest import DCMTK, FIXTURES, RunningDaemon, dcmtk_env
from tests.findstatus import check_status

LATIN1_QUERY = ("-k", "SpecificCharacterSet=ISO_IR 100")


def _send(daemon: RunningDaemon, path: Path) -> None:
    res = daemon.send(path)
    assert res.returncode == 0 and ": AA" in res.stdout, res.stdout + res.stderr


def _raw(ds: Dataset, keyword: str) -> bytes:
    """The value's bytes as the console received them (findscu -X stores them as sent)."""
    elem = ds.get_item(keyword)
    assert elem is not None
    value = elem.value
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def test_hex_escape_is_decoded_in_the_messages_charset(daemon, tmp_path):
    text = (FIXTURES / "orm-o01-utf8-greek-escapes.hl7").read_bytes()
    # PID-5 "Café^Zoë", the é in one \X..\ and the ë split over two (UTF-8: C3 AB)
    escaped = text.replace("Παπαδόπουλος^Γεώργιος".encode(),
                           b"Caf\\XC3A9\\^Zo\\XC3\\\\XAB\\")
    assert escaped != text
    message = tmp_path / "hex-escapes.hl7"
    message.write_bytes(escaped)
    _send(daemon, message)
    (answer,) = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128077", "PatientName")
    assert str(answer.PatientName) == "Café^Zoë"  # not "CafÃ©"


def test_a_latin1_console_gets_latin1_answers_when_the_item_fits(daemon, tmp_path):
    _send(daemon, FIXTURES / "orm-o01-latin1-mr.hl7")
    (answer,) = daemon.findscu(tmp_path, "AccessionNumber=KL2026112800817", "PatientName",
                               extra=LATIN1_QUERY)
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert _raw(answer, "PatientName").startswith("Müller^Jürgen".encode("latin-1"))
    assert str(answer.PatientName) == "Müller^Jürgen^Heinz^Dr."  # DICOM PN order


def test_an_item_latin1_cannot_hold_follows_the_unencodable_policy_and_is_logged(
        daemon, tmp_path):
    _send(daemon, FIXTURES / "orm-o01-two-groups.hl7")  # Wiśniewska: ś is not Latin-1
    answers = daemon.findscu(tmp_path, "AccessionNumber=ACC20261129301", "PatientName",
                             extra=LATIN1_QUERY)
    (answer,) = answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"  # unencodable: utf8 (the default)
    assert str(answer.PatientName) == "Wiśniewska^Zofia^Maria"
    assert any("cannot be encoded in ISO_IR 100" in line and "unencodable: utf8" in line
               for line in daemon.log), "\n".join(daemon.log[-20:])
    assert not any("Wiśniewska" in line for line in daemon.log)  # no patient data logged


def test_a_console_that_names_no_set_still_gets_the_configured_one(daemon, tmp_path):
    _send(daemon, FIXTURES / "orm-o01-latin1-mr.hl7")
    (answer,) = daemon.findscu(tmp_path, "AccessionNumber=KL2026112800817", "PatientName")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert _raw(answer, "PatientName").startswith("Müller".encode())


def _findscu_log(daemon: RunningDaemon, *args: str) -> str:
    res = subprocess.run(
        [str(DCMTK / "findscu"), "-d", "-W", "-aec", daemon.ae_title, *args,
         "-k", "PatientName", "127.0.0.1", str(daemon.dicom_port)],
        capture_output=True, timeout=60, env=dcmtk_env())
    log = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0, log
    check_status(log)  # findscu exits 0 on a failed query too
    return log


def _accepted_syntax(log: str) -> str:
    """The transfer syntax of the accepted context, from findscu's A-ASSOCIATE-AC dump."""
    ac = log[log.index("A-ASSOCIATE-AC"):]
    match = re.search(r"Accepted Transfer Syntax: =(\S+)", ac)
    assert match, ac[:3000]
    return match[1]


def test_the_scus_preferred_transfer_syntax_is_accepted(daemon):
    # findscu's default proposal: Explicit VR LE first, then Big Endian, then Implicit
    assert _accepted_syntax(_findscu_log(daemon)) == "LittleEndianExplicit"
    # -xi proposes Implicit VR LE only
    assert _accepted_syntax(_findscu_log(daemon, "-xi")) == "LittleEndianImplicit"


def test_an_empty_sequence_key_returns_every_attribute_of_its_item_as_wlmscpfs_does(
        daemon, tmp_path):
    _send(daemon, FIXTURES / "orm-o01-ihe-ct.hl7")
    # An empty ScheduledProtocolCodeSequence inside the step (PS3.4 C.2.2.2.6)
    (answer,) = daemon.findscu(
        tmp_path, "AccessionNumber=ACC20261128001",
        "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence")
    codes = answer.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert codes, "the stored protocol code is returned"
    for code in codes:
        assert "CodingSchemeVersion" in code  # (0008,0103), empty: not stored
        assert code.CodeValue and code.CodingSchemeDesignator and code.CodeMeaning
    # An empty ScheduledProcedureStepSequence: wlmscpfs's list of step attributes
    (answer,) = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128001",
                               "ScheduledProcedureStepSequence")
    step = answer.ScheduledProcedureStepSequence[0]
    for keyword in ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "Modality", "ScheduledPerformingPhysicianName", "PreMedication",
                    "RequestedContrastAgent", "ScheduledProcedureStepStatus",
                    "ScheduledProcedureStepEndDate", "CommentsOnTheScheduledProcedureStep"):
        assert keyword in step, keyword
    assert step.ScheduledStationAETitle == "CT01"
    assert all("CodingSchemeVersion" in c for c in step.ScheduledProtocolCodeSequence)


def _with_pid5(tmp_path: Path, pid5: bytes, msh18: bytes = b"") -> Path:
    """orm-o01-ihe-ct.hl7 with another PID-5 (and MSH-18)."""
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
    changed = text.replace(b"DOE^JOHN^QUINCY^JR^DR", pid5).replace(b"|AL|NE||", b"|AL|NE||" + msh18)
    assert changed != text
    path = tmp_path / "pid5.hl7"
    path.write_bytes(changed)
    return path


def test_iso_2022_switch_escapes_are_decoded(daemon, tmp_path):
    # An ASCII frame with the JIS name in \M2442\ (ESC $ B) ... \C2842\ (ESC ( B) runs
    name = b"\\M2442\\;3ED\\C2842\\^\\M2442\\B@O:\\C2842\\"
    _send(daemon, _with_pid5(tmp_path, name, b"ASCII~ISO IR87"))
    (answer,) = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128001", "PatientName")
    assert str(answer.PatientName) == "山田^太郎"


def test_a_control_character_escape_in_a_name_is_refused_naming_the_field(daemon, tmp_path):
    res = daemon.send(_with_pid5(tmp_path, b"DOE^JOHN\\X0D\\"))
    assert ": AE" in res.stdout, res.stdout + res.stderr
    assert "PID^1^5" in res.stdout and "control character" in res.stdout, res.stdout
    # nothing was stored under the accession
    assert daemon.findscu(tmp_path, "AccessionNumber=ACC20261128001") == []
