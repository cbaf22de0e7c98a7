"""The audit trail as a site runs it: the daemon, real HL7 over MLLP, DCMTK's findscu
and echoscu, a pynetdicom modality for MPPS, and a real rsyslog as the Audit Record
Repository (TLS, RFC 5425, and UDP, RFC 5426). Every event arrives exactly once, says
what happened, and is valid per the DICOM audit message schema; a repository outage
and a daemon restart lose nothing and duplicate nothing."""

from __future__ import annotations

import base64
import signal
import subprocess
import time
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from lxml import etree
from pydicom.filereader import read_dataset

from tests.audit.rsyslog import Rsyslog, summary, validate
from tests.outbound.mllp_receiver import MllpReceiver
from tests.tlscerts import make_pki

from .conftest import DCMTK, FIXTURES, dcmtk_env, start_daemon, stop_daemon, write_config
from .test_mpps_roundtrip import KEYS, MPPS_UID, modality_performs, outbound_config

# EventID/EventTypeCode/outcome of each event the scenario makes, and how many.
EXPECTED = Counter({
    "110100/110120/0": 1,  # application start
    "110109/RAD-4/0": 1,  # the order, applied
    "110109/RAD-4/4": 1,  # the order without a patient ID, rejected
    "110112/RAD-5/0": 1,  # the C-FIND
    "110111/RAD-6/0": 1,  # MPPS N-CREATE (IN PROGRESS)
    "110111/RAD-7/0": 1,  # MPPS N-SET (COMPLETED)
    "110113/110126/4": 2,  # the association refused (wrong called AE), the HL7 sender refused
    "110106//0": 2,  # the status messages IN PROGRESS and COMPLETED delivered to the RIS
    "110113/110131/0": 1,  # the mappings reloaded (SIGHUP)
    "110100/110121/0": 1,  # application stop
})


@pytest.fixture
def rsyslog(tmp_path) -> Rsyslog:
    r = Rsyslog(tmp_path / "rsyslog", make_pki(tmp_path / "pki"))
    r.folder.mkdir()
    r.start()
    yield r
    r.stop()


def audit_config(r: Rsyslog, *, udp: bool = True) -> str:
    return ("audit:\n  enabled: true\n  source_id: MWLBRIDGE-E2E\n"
            "  enterprise_site_id: SITE-1\n  retry_initial_s: 0.2\n  retry_max_s: 1\n"
            "  repositories:\n"
            f"    - {{name: arr, port: {r.tls_port}, transport: tls,\n"
            f"       tls: {{enabled: true, ca_file: {r.pki.ca}}}}}\n"
            + (f"    - {{name: arr-udp, port: {r.udp_port}, transport: udp}}\n" if udp else ""))


def by_kind(messages: list[etree._Element]) -> dict[str, list[etree._Element]]:
    out: dict[str, list[etree._Element]] = {}
    for m in messages:
        out.setdefault(summary(m), []).append(m)
    return out


def configure(tmp_path: Path, r: Rsyslog, ris_port: int, *, udp: bool = True) -> Path:
    """The daemon's config: the audit trail, a RIS for status messages, and an MLLP
    allow-list that only lets the RIS's application in."""
    config = write_config(tmp_path, audit_config(r, udp=udp) + outbound_config(ris_port))
    allow = "mllp:\n  allow:\n    senders: [{application: RIS}]\n"
    config.write_text(config.read_text(encoding="utf-8").replace("mllp:\n", allow, 1),
                      encoding="utf-8")
    return config


def drive(daemon, tmp_path: Path) -> None:
    """An order, a rejected order, a C-FIND, an MPPS cycle, a refused association, a
    refused HL7 sender and a mapping reload."""
    res = daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    assert res.returncode == 0, res.stdout + res.stderr
    rejected = daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    assert "#1: AE" in rejected.stdout or "#1: AR" in rejected.stdout, rejected.stdout
    (item,) = daemon.findscu(tmp_path, *KEYS)
    modality_performs(daemon, item)
    refused = subprocess.run([str(DCMTK / "echoscu"), "-aec", "NOTTHISAE", "127.0.0.1",
                              str(daemon.dicom_port)], capture_output=True, timeout=30,
                             env=dcmtk_env())
    assert refused.returncode != 0
    rogue = tmp_path / "rogue.hl7"
    rogue.write_bytes((FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(
        b"|RIS|HOSP|", b"|ROGUE|HOSP|", 1))
    assert "#1: AR" in daemon.send(rogue).stdout
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for_log(daemon, "mappings reloaded")


def wait_for_log(daemon, text: str) -> None:
    deadline = time.monotonic() + 30
    while not any(text in line for line in daemon.log):
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.1)


def participants(m: etree._Element) -> list[tuple[str | None, str | None, str | None]]:
    return [(p.get("UserID"), p.get("UserIsRequestor"), p.get("NetworkAccessPointID"))
            for p in m.findall("ActiveParticipant")]


def test_each_event_reaches_the_repository_once_and_is_a_valid_audit_message(
        tmp_path, rsyslog):
    ris = MllpReceiver()
    ris.start()
    daemon = start_daemon(configure(tmp_path, rsyslog, ris.port), tmp_path / "data")
    try:
        drive(daemon, tmp_path)
        ris.wait_for(2)
    finally:
        code = stop_daemon(daemon)
        ris.stop()
    assert code == 0, "\n".join(daemon.log[-30:])

    for which in ("tls", "udp"):
        got = rsyslog.wait_for(lambda got: len(got) >= sum(EXPECTED.values()), which)
        assert Counter(summary(m) for m in got) == EXPECTED, which
        for m in got:
            validate(m)
            source = m.find("AuditSourceIdentification")
            assert source.get("AuditSourceID") == "MWLBRIDGE-E2E"
            assert source.get("AuditEnterpriseSiteID") == "SITE-1"

    kinds = by_kind(rsyslog.messages())
    (order,) = kinds["110109/RAD-4/0"]
    assert order.find("EventIdentification").get("EventActionCode") == "C"
    assert participants(order)[0] == ("RIS|HOSP", "true", "127.0.0.1")
    (patient,) = order.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC20261128001"
    detail = patient.find("ParticipantObjectDetail")
    assert base64.b64decode(detail.get("value")) == b"MSG-20261128-0001"

    (rejected,) = kinds["110109/RAD-4/4"]
    assert "PID-3" in rejected.find("EventIdentification/EventOutcomeDescription").text

    (query,) = kinds["110112/RAD-5/0"]
    assert participants(query)[0] == ("FINDSCU", "true", "127.0.0.1")
    assert participants(query)[1][0] == "MWLBRIDGE"
    asked = query.find("ParticipantObjectIdentification/ParticipantObjectQuery").text
    syntax = query.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert syntax.get("type") == "TransferSyntax"
    implicit = base64.b64decode(syntax.get("value")) == b"1.2.840.10008.1.2"
    identifier = read_dataset(BytesIO(base64.b64decode(asked)), is_implicit_VR=implicit,
                              is_little_endian=True)
    assert "AccessionNumber" in identifier and "ScheduledProcedureStepSequence" in identifier

    for kind, action in (("110111/RAD-6/0", "C"), ("110111/RAD-7/0", "U")):
        (mpps,) = kinds[kind]
        assert mpps.find("EventIdentification").get("EventActionCode") == action
        assert participants(mpps)[0] == ("CT01", "true", "127.0.0.1")
        (patient,) = mpps.findall("ParticipantObjectIdentification")
        assert patient.get("ParticipantObjectID") == "PAT10001"
        assert patient.find("MPPS").get("UID") == MPPS_UID
        assert patient.find("Accession").get("Number") == "ACC20261128001"

    association, sender = sorted(kinds["110113/110126/4"], key=lambda m: m.find(
        "EventIdentification/EventOutcomeDescription").text)
    assert participants(association)[0][2] == "127.0.0.1"
    assert "NOTTHISAE" in association.find("EventIdentification/EventOutcomeDescription").text
    assert "mllp.allow.senders" in sender.find("EventIdentification/EventOutcomeDescription").text
    assert participants(sender)[0][2] == "127.0.0.1"

    exports = kinds["110106//0"]
    for export in exports:
        assert participants(export)[1][:2] == ("ris", "false")
        assert export.find("ParticipantObjectIdentification").get("ParticipantObjectID") \
            == "PAT10001"
    assert len({e.find("ParticipantObjectIdentification/ParticipantObjectDetail").get("value")
                for e in exports}) == 2  # two messages, two control IDs

    # Patient identifiers go to the audit trail, never to the application log.
    assert "PAT10001" not in "\n".join(daemon.log)

    # The local copy, by patient, by AE and by event.
    for args, count, names in ((("--patient", "PAT10001"), 5, ("Order Record",
                                                                 "Procedure Record", "Export")),
                               (("--ae", "CT01"), 2, ("Procedure Record",)),
                               (("--ae", "FINDSCU", "--days", "1"), 1, ("Query",)),
                               (("--event", "110113"), 3, ("Security Alert",)),
                               (("--user", "nobody"), 0, ())):
        listing = daemon.cli("audit", "list", *args)
        assert listing.returncode == 0, listing.stderr
        assert f"({count} of {count} event(s))" in listing.stdout, (args, listing.stdout)
        assert all(n in listing.stdout for n in names), listing.stdout
    first = daemon.cli("audit", "show", "1")
    assert first.returncode == 0 and first.stdout.startswith("<AuditMessage>"), first.stdout
    assert daemon.cli("audit", "show", "9999").returncode == 1


def test_an_outage_and_a_restart_lose_nothing_and_duplicate_nothing(tmp_path, rsyslog):
    ris = MllpReceiver()
    ris.start()
    config = configure(tmp_path, rsyslog, ris.port, udp=False)
    rsyslog.stop()  # the repository is down while the clinical work happens
    daemon = start_daemon(config, tmp_path / "data")
    try:
        drive(daemon, tmp_path)
        ris.wait_for(2)
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
        ris.stop()
    assert rsyslog.messages() == []

    daemon = start_daemon(config, tmp_path / "data")  # restarted, still down
    rsyslog.start()
    try:
        expected = EXPECTED + Counter({"110100/110120/0": 1})
        got = rsyslog.wait_for(lambda got: len(got) >= sum(expected.values()))
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
    got = rsyslog.wait_for(lambda got: len(got) >= sum(expected.values()) + 1)
    assert Counter(summary(m) for m in got) == expected + Counter({"110100/110121/0": 1})
    for m in got:
        validate(m)


def test_console_logins_logouts_and_operator_actions_are_audited(tmp_path, rsyslog):
    from tests.console.conftest import PASSWORDS, Console, admin_config, console_url

    config = write_config(tmp_path, audit_config(rsyslog, udp=False) + admin_config())
    daemon = start_daemon(config, tmp_path / "data")
    try:
        c = Console(daemon, console_url(daemon))
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        op = c.client("operator")
        (row,) = op.post("/api/worklist/search", json={"accession": "ACC20261128001"}
                         ).json()["items"]
        step = row["id"]
        assert op.post(f"/api/worklist/{step}/cancel", json={}).status_code == 200
        session, csrf = c.login("alice")
        assert session.post("/logout", data={"csrf_token": csrf}).status_code == 303
        wrong = c.client()
        page = wrong.get("/login")
        form = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        assert wrong.post("/login", data={"name": "alice", "password": PASSWORDS["vera"],
                                          "csrf_token": form}).status_code == 401
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
    got = rsyslog.wait_for(lambda got: any(summary(m) == "110100/110121/0" for m in got))
    for m in got:
        validate(m)
    kinds = by_kind(got)
    assert len(kinds["110114/110122/0"]) == 1  # alice's login
    assert len(kinds["110114/110123/0"]) == 1  # and her logout
    assert len(kinds["110114/110122/4"]) == 1  # the wrong password
    assert participants(kinds["110114/110122/0"][0])[0][:2] == ("alice", "true")
    cancels = [m for m in kinds["110109//0"]
               if m.find("EventIdentification").get("EventActionCode") == "D"]
    (cancel,) = cancels
    assert participants(cancel)[0][:2] == ("token:operator-script", "true")
    patient = cancel.find("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC20261128001"


def test_a_failed_tls_handshake_is_a_security_alert_in_the_local_copy(tmp_path):
    pki = make_pki(tmp_path / "pki")
    tls = (f"  tls:\n    enabled: true\n    cert_file: {pki.server.cert}\n"
           f"    key_file: {pki.server.key}\n    ca_file: {pki.ca}\n")
    config = write_config(tmp_path, "audit:\n  enabled: true\n")  # no repository: local only
    config.write_text(config.read_text(encoding="utf-8").replace(
        "  ae_title: MWLBRIDGE\n", "  ae_title: MWLBRIDGE\n" + tls, 1), encoding="utf-8")
    daemon = start_daemon(config, tmp_path / "data")
    try:
        plain = subprocess.run([str(DCMTK / "echoscu"), "-aec", daemon.ae_title, "127.0.0.1",
                                str(daemon.dicom_port)], capture_output=True, timeout=30,
                               env=dcmtk_env())
        assert plain.returncode != 0
        wait_for_log(daemon, "TLS handshake with 127.0.0.1")
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
    listing = daemon.cli("audit", "list", "--event", "Security Alert")
    assert "(1 of 1 event(s))" in listing.stdout, listing.stdout
    (row,) = [line for line in listing.stdout.splitlines() if "Security Alert" in line]
    assert "110126" in row and "minor failure" in row and "ae=127.0.0.1" in row
    (event_id,) = [line.split()[0] for line in listing.stdout.splitlines()
                   if "Security Alert" in line]
    xml = etree.fromstring(daemon.cli("audit", "show", event_id).stdout.encode())
    validate(xml)
    assert summary(xml) == "110113/110126/4"
    assert xml.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "DICOM"
    everything = daemon.cli("audit", "list").stdout
    assert "(3 of 3 event(s))" in everything and "-\n" in everything  # nothing pending


def test_a_failed_mllp_tls_handshake_is_a_security_alert_in_the_local_copy(tmp_path):
    """The MLLP listener's TLS failures are audited like the DICOM ones: the hl7 layer
    calls the hook bridge.app passes in (bridge/hl7/server.py ``on_tls_failed``)."""
    pki = make_pki(tmp_path / "pki")
    tls = (f"  tls:\n    enabled: true\n    cert_file: {pki.server.cert}\n"
           f"    key_file: {pki.server.key}\n    ca_file: {pki.ca}\n")
    config = write_config(tmp_path, "audit:\n  enabled: true\n")  # no repository: local only
    config.write_text(config.read_text(encoding="utf-8").replace(
        "mllp:\n  host: 127.0.0.1\n  port: 0\n", "mllp:\n  host: 127.0.0.1\n  port: 0\n" + tls,
        1), encoding="utf-8")
    daemon = start_daemon(config, tmp_path / "data")
    try:
        plain = daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")  # plain MLLP on the TLS port
        assert "#1: AA" not in plain.stdout
        wait_for_log(daemon, "TLS handshake with 127.0.0.1")
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
    listing = daemon.cli("audit", "list", "--event", "Security Alert")
    assert "(1 of 1 event(s))" in listing.stdout, listing.stdout
    (row,) = [line for line in listing.stdout.splitlines() if "Security Alert" in line]
    assert "110126" in row and "minor failure" in row and "ae=127.0.0.1" in row
    xml = etree.fromstring(daemon.cli("audit", "show", row.split()[0]).stdout.encode())
    validate(xml)
    assert summary(xml) == "110113/110126/4"
    assert xml.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "MLLP"
    assert xml.find("EventIdentification/EventOutcomeDescription").text
