"""MPPS forwarding end to end inside one process: a modality (pynetdicom SCU) sends
N-CREATE/N-SET over a real association to the bridge's MPPS SCP, which queues them in
the MPPS's own transaction; the forwarder delivers them over real associations to a
pynetdicom MPPS SCP standing in for the PACS. SQLite and PostgreSQL (the store part
is the SQL). No timing assertions: each test waits for a state, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from bridge.mpps.forward import MppsForwarder
from bridge.mpps.service import MppsService
from bridge.mpps.settings import MppsForwardSettings, MppsSettings
from bridge.store import Store, mpps_forward_tx, mpps_tx
from bridge.telemetry import Metrics
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.waiting import until

from .conftest import MPPS, create_ds, final_ds, mapped_steps
from .mpps_pacs import PacsScp

UID_A = "1.2.826.0.1.3680043.8.498.77001"
UID_B = "1.2.826.0.1.3680043.8.498.77002"


def forward_settings(pacs: PacsScp, **kw: object) -> MppsForwardSettings:
    dest: dict[str, object] = dict(name="pacs", ae_title=pacs.ae_title, port=pacs.port,
                                   connect_timeout_s=2, response_timeout_s=5,
                                   backoff_initial_s=0.05, backoff_max_s=0.3)
    dest.update(kw)
    return MppsForwardSettings.model_validate({"poll_interval_s": 0.2,
                                               "destinations": [dest]})


def states(store: Store) -> list[tuple[str, str, str]]:
    return [(r.sop_instance_uid, r.operation, r.state)
            for r in mpps_forward_tx.list_rows(store, limit=1000)]


def pending(store: Store) -> int:
    return mpps_forward_tx.count_by_state(store).get("pending", 0)


@dataclass
class Site:
    """The bridge's MPPS SCP with forwarding, and a modality that talks to it."""

    store: Store
    scp: WorklistSCP
    forwarder: MppsForwarder
    steps: list[Dataset]
    _assocs: list[Association] = field(default_factory=list)

    def modality(self, calling: str = "CT01") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MPPS, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", self.scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        self._assocs.append(assoc)
        return assoc


@contextmanager
def site(store: Store, settings: MppsForwardSettings,
         metrics: Metrics | None = None) -> Iterator[Site]:
    """The bridge's MPPS SCP with forwarding (the forwarder not started)."""
    steps = mapped_steps("orm-o01-ihe-ct.hl7") + mapped_steps("orm-o01-two-groups.hl7")
    store.upsert_steps(steps)
    forwarder = MppsForwarder(store, settings, calling_ae="MWLBRIDGE", metrics=metrics)
    service = MppsService(store, MppsSettings(forward=settings),
                          forward_to=forwarder.destinations, notify_forward=forwarder.wake)
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings(), services=(service,))
    scp.start()
    s = Site(store, scp, forwarder, steps)
    try:
        yield s
    finally:
        for assoc in s._assocs:
            if assoc.is_established:
                assoc.release()
        scp.stop()


@asynccontextmanager
async def running(store: Store, settings: MppsForwardSettings,
                  metrics: Metrics | None = None) -> AsyncIterator[Site]:
    """``site`` with its forwarder running."""
    with site(store, settings, metrics) as s:
        await s.forwarder.start()
        try:
            yield s
        finally:
            await s.forwarder.stop()


def ok(status: Dataset) -> None:
    assert status.Status == 0x0000, status


def exam(s: Site, assoc: Association) -> dict[str, list[Dataset]]:
    """Two exams interleaved: N-CREATE A, N-CREATE B, N-SETs; returns what was sent."""
    a, b = s.steps[0], s.steps[1]
    sent: dict[str, list[Dataset]] = {UID_A: [], UID_B: []}
    for uid, step in ((UID_A, a), (UID_B, b)):
        ds = create_ds(step, PerformedProcedureStepID=uid[-5:])
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Müller^Jörg"  # Latin-1 on the wire, forwarded as it came
        ok(assoc.send_n_create(ds, MPPS, uid)[0])
        sent[uid].append(ds)
    note = Dataset()
    note.PerformedProcedureStepDescription = "CT CHEST"
    ok(assoc.send_n_set(note, MPPS, UID_A)[0])
    sent[UID_A].append(note)
    for uid, status in ((UID_B, "DISCONTINUED"), (UID_A, "COMPLETED")):
        final = final_ds(status)
        ok(assoc.send_n_set(final, MPPS, uid)[0])
        sent[uid].append(final)
    return sent


@pytest.fixture
def pacs() -> Iterator[PacsScp]:
    p = PacsScp()
    yield p
    p.stop()


async def test_pacs_down_then_up_gets_everything_once_in_order(store, pacs):
    async with running(store, forward_settings(pacs)) as s:
        assoc = await asyncio.to_thread(s.modality)
        sent = await asyncio.to_thread(exam, s, assoc)
        # The PACS is down: every row is queued, the forwarder keeps retrying.
        await until(lambda: s.forwarder.stats.retries >= 3)
        assert states(store) == [
            (UID_A, "N-CREATE", "pending"), (UID_B, "N-CREATE", "pending"),
            (UID_A, "N-SET", "pending"), (UID_B, "N-SET", "pending"),
            (UID_A, "N-SET", "pending")]
        head = mpps_forward_tx.list_rows(store, limit=1)[0]
        assert head.attempts >= 1 and "cannot connect to PACS@127.0.0.1" in head.last_error
        pacs.start()
        await until(lambda: pending(store) == 0)
    assert {state for *_, state in states(store)} == {"sent"}
    assert pacs.count() == 5  # exactly once each
    assert pacs.operations(UID_A) == ["N-CREATE", "N-SET", "N-SET"]
    assert pacs.operations(UID_B) == ["N-CREATE", "N-SET"]
    # What the modality sent, byte for byte: the same syntax, the same bytes.
    from pynetdicom.dsutils import encode
    for uid in (UID_A, UID_B):
        got = [g for g in pacs.received if g.uid == uid]
        for g, ds in zip(got, sent[uid], strict=True):
            assert g.transfer_syntax == ExplicitVRLittleEndian
            assert g.raw == encode(ds, False, True)
            assert g.calling_ae == "MWLBRIDGE"
    first = pacs.received[0].ds
    assert first.SpecificCharacterSet == "ISO_IR 100"
    assert str(first.PatientName) == "Müller^Jörg"
    assert "SOPInstanceUID" not in first  # the bridge's own additions are not forwarded
    rows = mpps_forward_tx.list_rows(store, limit=10)
    assert all(r.peer_status == 0 and r.sent_at for r in rows)
    mpps_ids = {r.mpps_id for r in rows}
    assert None not in mpps_ids and len(mpps_ids) == 2


async def test_a_failure_status_is_a_dead_letter_with_the_status_not_retried(
        store, pacs):
    def refuse_a(operation: str, uid: str) -> tuple[int, str]:
        if uid == UID_A and operation == "N-CREATE":
            return 0x0106, "Invalid attribute value: Modality"
        if uid == UID_A:
            return 0x0112, ""  # the PACS never got A: its N-SETs fail too
        return 0x0000, ""

    pacs.answer = refuse_a
    pacs.start()
    async with running(store, forward_settings(pacs)) as s:
        assoc = await asyncio.to_thread(s.modality)
        await asyncio.to_thread(exam, s, assoc)
        await until(lambda: pending(store) == 0)
    assert s.forwarder.stats.retries == 0
    assert pacs.count() == 5  # each once: a failure status is not retried
    rows = {(r.sop_instance_uid, r.id): r for r in mpps_forward_tx.list_rows(store)}
    a_rows = [r for (uid, _), r in sorted(rows.items()) if uid == UID_A]
    assert [r.state for r in a_rows] == ["dead", "dead", "dead"]
    assert a_rows[0].peer_status == 0x0106 and a_rows[0].attempts == 1
    assert a_rows[0].last_error == ("0x0106 Failure (Invalid Attribute Value): Invalid "
                                    "attribute value: Modality")
    assert a_rows[1].last_error.startswith("0x0112 Failure")
    assert {r.state for (uid, _), r in rows.items() if uid == UID_B} == {"sent"}


async def test_warnings_and_a_duplicate_create_count_as_delivered(store, pacs):
    pacs.answer = lambda op, uid: (0x0111, "exists") if op == "N-CREATE" else (0x0001, "")
    pacs.start()
    async with running(store, forward_settings(pacs)) as s:
        assoc = await asyncio.to_thread(s.modality)
        await asyncio.to_thread(exam, s, assoc)
        await until(lambda: pending(store) == 0)
    rows = mpps_forward_tx.list_rows(store)
    assert {r.state for r in rows} == {"sent"}
    create = next(r for r in rows if r.operation == "N-CREATE")
    assert create.peer_status == 0x0111 and "0x0111" in create.last_error
    assert next(r for r in rows if r.operation == "N-SET").peer_status == 0x0001


async def test_network_errors_end_in_a_dead_letter_after_max_attempts(sqlite_store, pacs):
    async with running(sqlite_store, forward_settings(pacs, max_attempts=2)) as s:
        assoc = await asyncio.to_thread(s.modality)
        ok((await asyncio.to_thread(assoc.send_n_create, create_ds(s.steps[0]), MPPS,
                                    UID_A))[0])
        await until(lambda: pending(sqlite_store) == 0)
    (row,) = mpps_forward_tx.list_rows(sqlite_store)
    assert row.state == "dead" and row.attempts == 2 and row.peer_status is None
    assert row.last_error.startswith("gave up after 2 attempt(s): cannot connect to PACS@")


async def test_a_wrong_called_ae_title_is_retried_with_the_rejection_named(sqlite_store,
                                                                         pacs):
    pacs.start()
    async with running(sqlite_store, forward_settings(pacs, ae_title="NOTPACS")) as s:
        assoc = await asyncio.to_thread(s.modality)
        ok((await asyncio.to_thread(assoc.send_n_create, create_ds(s.steps[0]), MPPS,
                                    UID_A))[0])
        await until(lambda: s.forwarder.stats.retries >= 1)
    (row,) = mpps_forward_tx.list_rows(sqlite_store)
    assert row.state == "pending"
    assert "association rejected by NOTPACS@127.0.0.1" in row.last_error
    assert "Called AE title not recognised" in row.last_error
    assert pacs.count() == 0


async def test_a_refused_mpps_is_not_forwarded_and_a_missing_uid_gets_the_bridges(
        sqlite_store, pacs):
    pacs.start()
    async with running(sqlite_store, forward_settings(pacs)) as s:
        assoc = await asyncio.to_thread(s.modality)
        # N-SET of an unknown instance: refused by the bridge, nothing forwarded.
        status, _ = await asyncio.to_thread(assoc.send_n_set, final_ds(), MPPS, UID_B)
        assert status.Status == 0x0112
        status, _ = await asyncio.to_thread(assoc.send_n_create, create_ds(s.steps[0]), MPPS)
        ok(status)
        await until(lambda: pacs.count() == 1 and pending(sqlite_store) == 0)
    (stored,) = [m for m in _mpps_uids(sqlite_store)]
    assert pacs.received[0].uid == stored  # the UID the bridge made, also at the PACS
    assert pacs.received[0].operation == "N-CREATE"


def _mpps_uids(store: Store) -> list[str]:
    (uids,) = store.write([lambda tx: [u for u in (
        mpps_tx.find_mpps(tx, r.sop_instance_uid) for r in
        mpps_forward_tx.list_rows(store)) if u is not None]])
    return [u.sop_instance_uid for u in uids]


def test_the_forward_rows_are_in_the_mpps_transaction(sqlite_store, monkeypatch):
    """Failure injection: when queueing the forward fails, the MPPS is not stored
    either, and the modality is told to retry (0x0110)."""
    def broken(tx, rows):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mpps_forward_tx, "enqueue", broken)
    with site(sqlite_store, forward_settings(PacsScp())) as s:
        status, _ = s.modality().send_n_create(create_ds(s.steps[0]), MPPS, UID_A)
    assert status.Status == 0x0110
    (found,) = sqlite_store.write([lambda tx: mpps_tx.find_mpps(tx, UID_A)])
    assert found is None
    assert mpps_forward_tx.list_rows(sqlite_store) == []


async def test_metrics_count_deliveries_and_read_the_queue(sqlite_store, pacs):
    from bridge.mpps.forward import queue_reader

    metrics = Metrics(forward_destinations=["pacs"])
    metrics.watch_forward(queue_reader(sqlite_store))
    async with running(sqlite_store, forward_settings(pacs), metrics=metrics) as s:
        assoc = await asyncio.to_thread(s.modality)
        await asyncio.to_thread(exam, s, assoc)
        body = metrics.render()[0].decode()
        assert 'mwl_bridge_mpps_forward_pending{destination="pacs"} 5.0' in body
        pacs.start()
        await until(lambda: pending(sqlite_store) == 0)
    body = metrics.render()[0].decode()
    assert 'mwl_bridge_mpps_forward_pending{destination="pacs"} 0.0' in body
    assert 'mwl_bridge_mpps_forward_delivered_total{destination="pacs"} 5.0' in body
    assert 'mwl_bridge_mpps_forward_failed_total{destination="pacs"} 0.0' in body


async def test_mutual_tls_to_the_pacs(sqlite_store, tmp_path):
    from bridge.tls import TlsSettings, server_context
    from tests.tlscerts import make_pki

    pki = make_pki(tmp_path)
    pacs = PacsScp(ssl_context=server_context(TlsSettings(
        enabled=True, cert_file=pki.server.cert, key_file=pki.server.key, ca_file=pki.ca),
        "pacs"))
    pacs.start()
    tls = {"enabled": True, "ca_file": str(pki.ca), "cert_file": str(pki.client.cert),
           "key_file": str(pki.client.key)}
    async with running(sqlite_store, forward_settings(pacs, tls=tls)) as s:
        try:
            assoc = await asyncio.to_thread(s.modality)
            await asyncio.to_thread(exam, s, assoc)
            await until(lambda: pending(sqlite_store) == 0)
        finally:
            pacs.stop()
    assert pacs.count() == 5
    assert {state for *_, state in states(sqlite_store)} == {"sent"}


async def test_tls_without_our_certificate_is_refused_and_retried(sqlite_store, tmp_path):
    from bridge.tls import TlsSettings, server_context
    from tests.tlscerts import make_pki

    pki = make_pki(tmp_path)
    pacs = PacsScp(ssl_context=server_context(TlsSettings(
        enabled=True, cert_file=pki.server.cert, key_file=pki.server.key, ca_file=pki.ca),
        "pacs"))
    pacs.start()
    try:
        async with running(sqlite_store, forward_settings(
                pacs, tls={"enabled": True, "ca_file": str(pki.ca)})) as s:
            assoc = await asyncio.to_thread(s.modality)
            ok((await asyncio.to_thread(assoc.send_n_create, create_ds(s.steps[0]), MPPS,
                                        UID_A))[0])
            await until(lambda: s.forwarder.stats.retries >= 1)
    finally:
        pacs.stop()
    assert pacs.count() == 0
    (row,) = mpps_forward_tx.list_rows(sqlite_store)
    assert row.state == "pending" and "PACS@127.0.0.1" in row.last_error, row.last_error


def test_an_unreadable_ca_file_stops_start_up_naming_the_setting(sqlite_store, tmp_path):
    from bridge.tls import TlsConfigError

    settings = forward_settings(PacsScp(), tls={"enabled": True,
                                               "ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(TlsConfigError, match=r"mpps\.forward\.destinations\[0\]\.tls\.ca_file"):
        MppsForwarder(sqlite_store, settings, calling_ae="MWLBRIDGE")


async def test_a_deflated_request_is_forwarded_deflated_when_the_pacs_takes_it(
        sqlite_store, pacs):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    pacs.start()
    async with running(sqlite_store, forward_settings(pacs)) as s:
        ae = AE(ae_title="US01")
        ae.add_requested_context(MPPS, [DeflatedExplicitVRLittleEndian])
        assoc = await asyncio.to_thread(ae.associate, "127.0.0.1", s.scp.port,
                                        ae_title="MWLBRIDGE")
        assert assoc.is_established
        s._assocs.append(assoc)
        ds = create_ds(s.steps[0])
        ok((await asyncio.to_thread(assoc.send_n_create, ds, MPPS, UID_A))[0])
        await until(lambda: pacs.count() == 1 and pending(sqlite_store) == 0)
    (row,) = mpps_forward_tx.list_rows(sqlite_store)
    assert row.transfer_syntax == DeflatedExplicitVRLittleEndian
    got = pacs.received[0]
    assert got.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert got.raw == row.payload
    assert got.ds.PerformedProcedureStepID == ds.PerformedProcedureStepID
