"""Commands run outside the daemon leave their audit events in the configured store's
spool and local copy when ``audit.enabled`` is set (bridge/audit/offline.py), with the
OS user (getpass.getuser()) as the active participant: ``import`` one Order Record per
run and format, ``messages replay``, ``outbox retry`` and ``mpps forward retry`` an
operator action each. In process, on a real SQLite store; every message checked
against the DICOM audit message schema; with audit off, nothing is recorded."""

from __future__ import annotations

import base64
import getpass
from pathlib import Path

import pytest
from lxml import etree
from pydicom import Dataset
from pynetdicom.dsutils import encode

from bridge.app.cli import main
from bridge.store import SqliteStore, atna_tx, mpps_forward_tx, outbox_tx
from bridge.store.mpps_forward_tx import N_CREATE, NewForward
from tests.orders.wlfiles import wl_item, write_wl
from tests.outbound.conftest import queue

from .rsyslog import summary, validate

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "hl7"
USER = getpass.getuser()


def _config(tmp_path: Path, *, enabled: bool = True) -> Path:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"mapping:\n  paths: [{REPO / 'mappings'}]\n  default_station_aet: UNASSIGNED\n"
        f"audit:\n  enabled: {'true' if enabled else 'false'}\n  source_id: CLI-TEST\n"
        "  repositories: [{name: arr, host: 127.0.0.1, port: 5514, transport: udp}]\n",
        encoding="utf-8")
    return cfg


def _store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    return store


def _events(tmp_path: Path) -> list[etree._Element]:
    """The local copy, oldest first, each valid per the schema and still waiting for
    the repository (the daemon's delivery thread sends it)."""
    store = _store(tmp_path)
    try:
        stored, _ = atna_tx.search(store, limit=1000)
    finally:
        store.close()
    out = []
    for e in reversed(stored):
        assert e.pending == ("arr",)
        m = etree.fromstring(e.message)
        validate(m)
        out.append(m)
    return out


def _operator(m: etree._Element) -> etree._Element:
    first = m.find("ActiveParticipant")
    assert first is not None
    assert (first.get("UserID"), first.get("UserIsRequestor"), first.get("AlternativeUserID")) \
        == (USER, "true", "cli")
    return first


def _detail(obj: etree._Element, kind: str) -> str:
    for d in obj.findall("ParticipantObjectDetail"):
        if d.get("type") == kind:
            return base64.b64decode(d.get("value")).decode()
    raise AssertionError(f"no {kind} detail")


def test_outbox_retry_is_an_operator_action_of_the_os_user(tmp_path, capsys):
    cfg = _config(tmp_path)
    store = _store(tmp_path)
    queue(store, "ris", [("A", "IP"), ("B", "IP")])
    ids = [m.id for m in outbox_tx.list_messages(store)]
    for i in ids:
        store.write([lambda tx, i=i: outbox_tx.mark_dead(tx, i, "AE", b"MSH|...\r")])
    store.close()
    assert main(["--config", str(cfg), "outbox", "retry", "--dead"]) == 0
    assert main(["--config", str(cfg), "outbox", "retry", "99"]) == 1  # nothing re-queued
    capsys.readouterr()
    (m,) = _events(tmp_path)
    assert summary(m) == "110113/110132/0"
    _operator(m)
    assert m.find("AuditSourceIdentification").get("AuditSourceID") == "CLI-TEST"
    obj = m.find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == f"outbox:{ids[0]},{ids[1]}"
    assert _detail(obj, "action") == "outbox.retry"


def test_mpps_forward_retry_is_an_operator_action_of_the_os_user(tmp_path, capsys):
    cfg = _config(tmp_path)
    store = _store(tmp_path)
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    (ids,) = store.write([lambda tx: mpps_forward_tx.enqueue(tx, [NewForward(
        "pacs", "1.2.3.4", N_CREATE, "1.2.840.10008.1.2.1", encode(ds, False, True))])])
    store.write([lambda tx: mpps_forward_tx.mark_dead(tx, ids[0], "refused", 0x0110)])
    store.close()
    assert main(["--config", str(cfg), "mpps", "forward", "retry", str(ids[0])]) == 0
    capsys.readouterr()
    (m,) = _events(tmp_path)
    assert summary(m) == "110113/110132/0"
    _operator(m)
    obj = m.find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == f"mpps-forward:{ids[0]}"
    assert _detail(obj, "action") == "mpps.forward.retry"


def test_import_is_one_order_record_per_run_and_replay_an_operator_action(tmp_path, capsys):
    cfg = _config(tmp_path)
    folder = tmp_path / "wl"
    folder.mkdir()
    for n in range(3):
        write_wl(folder / f"{n}.wl", wl_item(n))
    batch = tmp_path / "orders.hl7"
    fixture = (FIXTURES / "orm-missing-pid3.hl7").read_bytes()
    batch.write_bytes(fixture.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    main(["--config", str(cfg), "import", "--no-progress", "--workers", "1", str(folder),
          str(batch)])
    capsys.readouterr()
    wl, hl7 = _events(tmp_path)
    for m, fmt in ((wl, "wl"), (hl7, "hl7")):
        assert summary(m).startswith("110109//")
        assert m.find("EventIdentification").get("EventActionCode") == "C"
        op = _operator(m)
        assert op.find("RoleIDCode").get("csd-code") == "110151"  # Application Launcher
        job, *sources = m.findall("ParticipantObjectIdentification")
        assert (job.get("ParticipantObjectID"), job.get("ParticipantObjectTypeCodeRole")) \
            == (f"import:{fmt}", "20")
        assert [s.get("ParticipantObjectID") for s in sources] == \
            [str(folder.resolve()), str(batch.resolve())]
    job = wl.find("ParticipantObjectIdentification")
    assert _detail(job, "loaded") == "3" and _detail(job, "rejected") == "0"
    assert summary(wl) == "110109//0"
    hl7_job = hl7.find("ParticipantObjectIdentification")
    assert _detail(hl7_job, "loaded") == "0" and _detail(hl7_job, "rejected") == "1"
    assert summary(hl7) == "110109//4"
    assert _detail(hl7_job, "dead-letters").endswith(".jsonl")

    main(["--config", str(cfg), "messages", "replay", "1"])  # still rejected: still audited
    capsys.readouterr()
    *_, replay = _events(tmp_path)
    assert summary(replay) == "110113/110132/0"
    _operator(replay)
    obj = replay.find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID").startswith("message:1,")
    assert _detail(obj, "action") == "message.replay"


def test_with_audit_off_the_commands_record_nothing(tmp_path, capsys):
    cfg = _config(tmp_path, enabled=False)
    store = _store(tmp_path)
    queue(store, "ris", [("A", "IP")])
    (m,) = outbox_tx.list_messages(store)
    store.write([lambda tx: outbox_tx.mark_dead(tx, m.id, "AE", b"MSH|...\r")])
    store.close()
    assert main(["--config", str(cfg), "outbox", "retry", "--dead"]) == 0
    folder = tmp_path / "wl"
    folder.mkdir()
    write_wl(folder / "0.wl", wl_item(0))
    assert main(["--config", str(cfg), "import", "--no-progress", str(folder)]) == 0
    capsys.readouterr()
    store = _store(tmp_path)
    try:
        assert atna_tx.search(store)[1] == 0
    finally:
        store.close()


@pytest.mark.parametrize("rejected", [0, 2])
def test_the_import_event_is_a_valid_message_either_way(rejected):
    from bridge.audit import events
    from bridge.audit.events import Local
    from bridge.audit.message import AuditSource, render

    event = events.bulk_import(Local("MWL", "1", "h"), user="ops", host="h", paths=("/x",),
                               fmt="wl", loaded=5, unchanged=1, rejected=rejected,
                               dead_letters="/d.jsonl" if rejected else "")
    m = etree.fromstring(render(event, AuditSource("S")))
    validate(m)
    assert m.find("EventIdentification").get("EventOutcomeIndicator") == \
        ("4" if rejected else "0")
