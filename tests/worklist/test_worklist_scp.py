"""WorklistSCP with a pynetdicom SCU: failure statuses, C-CANCEL, lifecycle, sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pynetdicom import AE, Association
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from bridge.store.base import StoreError
from bridge.store.items import StoredItem
from bridge.store.query import WorklistQuery
from bridge.store.sqlite import SqliteStore
from bridge.worklist import WorklistSCP
from bridge.worklist.scp import FLOW_WINDOW, NoDelayAssociationServer
from bridge.worklist.settings import DicomSettings, WorklistSettings

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

MWL = ModalityWorklistInformationFind


def items(make: Callable[..., Dataset], count: int) -> list[Dataset]:
    return [make(f"Name{i:03}^Test", f"P{i}", f"A{i:03}", f"1.2.3.{i}", "CT01", "CT",
                 "20261128", f"{8 + i // 60:02}{i % 60:02}00") for i in range(count)]


@pytest.fixture
def scu() -> Iterator[Callable[[int], Association]]:
    opened: list[Association] = []

    def associate(port: int) -> Association:
        ae = AE(ae_title="CONSOLE")
        ae.add_requested_context(MWL)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        opened.append(assoc)
        return assoc

    yield associate
    for assoc in opened:
        if assoc.is_established:
            assoc.release()


def find(assoc: Association, identifier: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    return list(assoc.send_c_find(identifier, MWL))


def sps_query(**keys: str) -> Dataset:
    sps = Dataset()
    for keyword, value in keys.items():
        setattr(sps, keyword, value)
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.AccessionNumber = ""
    identifier.ScheduledProcedureStepSequence = [sps]
    return identifier


# --- failures keep the association usable ---

def test_malformed_identifier_fails_with_comment_and_association_stays(
        new_store, start_scp, scu, item):
    scp = start_scp(new_store(items(item, 2)))
    assoc = scu(scp.port)
    (status, answer), = find(assoc, sps_query(ScheduledProcedureStepStartDate="28.11.2026x"))
    assert status.Status == 0xC000
    assert "(0040,0002)" in status.ErrorComment
    assert answer is None
    responses = find(assoc, sps_query(ScheduledProcedureStepStartDate="20261128"))
    assert [s.Status for s, _ in responses] == [0xFF00, 0xFF00, 0x0000]


def test_undecodable_identifier_is_unable_to_process(new_store, start_scp, item, tmp_path):
    # pynetdicom won't encode a broken value, so DCMTK sends it: a DS that is no number.
    scp = start_scp(new_store(items(item, 1)))
    dump = tmp_path / "bad.dump"
    dump.write_text("(0010,1030) DS [heavy]\n(0010,0020) LO []\n")
    query = tmp_path / "bad.dcm"
    subprocess.run(["/usr/bin/dump2dcm", "--write-dataset", str(dump), str(query)],
                   check=True, capture_output=True, timeout=30)
    done = subprocess.run(["/usr/bin/findscu", "-v", "-W", "-aec", "MWLBRIDGE", "127.0.0.1",
                           str(scp.port), str(query)], env={**os.environ, "TCP_NODELAY": "1"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Final Find Response (Failed: UnableToProcess)" in done.stdout + done.stderr


def test_query_retrieve_level_does_not_match_the_sop_class(new_store, start_scp, scu, item):
    scp = start_scp(new_store(items(item, 1)))
    identifier = sps_query()
    identifier.QueryRetrieveLevel = "STUDY"
    (status, _), = find(scu(scp.port), identifier)
    assert status.Status == 0xA900
    assert status.ErrorComment


class FailingStore(SqliteStore):
    """Failure injection: the query fails at once, or after ``after`` items."""

    after: int | None = None

    def query_stored(self, query: WorklistQuery) -> Iterator[StoredItem]:
        if self.after is None:
            raise StoreError("database is locked")
        return self._failing(query, self.after)

    def _failing(self, query: WorklistQuery, after: int) -> Iterator[StoredItem]:
        for i, found in enumerate(super().query_stored(query)):
            if i == after:
                raise OSError("disk I/O error")
            yield found


def failing_store(tmp_path: Any, make: Callable[..., Dataset], after: int | None) -> SqliteStore:
    store = FailingStore(tmp_path / "failing.sqlite3")
    store.migrate()
    store.upsert_steps(items(make, 3))
    store.after = after
    return store


def test_store_failure_is_0xc001_and_association_stays(tmp_path, start_scp, scu, item, caplog):
    scp = start_scp(failing_store(tmp_path, item, None))
    assoc = scu(scp.port)
    (status, _), = find(assoc, sps_query())
    assert status.Status == 0xC001
    assert status.ErrorComment
    assert "database is locked" in caplog.text
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000


def test_store_failure_midway_ends_with_0xc001(tmp_path, start_scp, scu, item, caplog):
    scp = start_scp(failing_store(tmp_path, item, 1))
    assoc = scu(scp.port)
    responses = find(assoc, sps_query())
    assert [s.Status for s, _ in responses] == [0xFF00, 0xC001]
    assert "OSError" in caplog.text
    assert "disk I/O error" not in caplog.text  # a driver message might quote values
    assert assoc.send_c_echo().Status == 0x0000


class CorruptStore(SqliteStore):
    """Failure injection: a stored value whose bytes cannot be decoded (a 3-byte US)."""

    def query_stored(self, query: WorklistQuery) -> Iterator[StoredItem]:
        for found in super().query_stored(query):
            tag = Tag(0x0028, 0x0010)
            found.dataset[tag] = RawDataElement(tag, "US", 3, b"\x01\x02\x03", 0, False, True)
            yield found


@pytest.mark.parametrize("rows", [None, 5])  # fails in answer shaping, in the post-filter
def test_item_that_cannot_be_answered_is_0xc002(tmp_path, start_scp, scu, item, rows):
    store = CorruptStore(tmp_path / "corrupt.sqlite3")
    store.migrate()
    store.upsert_steps(items(item, 2))
    scp = start_scp(store)
    assoc = scu(scp.port)
    identifier = sps_query()
    identifier.Rows = rows
    (status, _), = find(assoc, identifier)
    assert status.Status == 0xC002
    assert assoc.send_c_echo().Status == 0x0000


# --- C-CANCEL ---

class GatedStore(SqliteStore):
    """Failure injection: after the first item, wait until the test lets go."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = threading.Event()

    def query_stored(self, query: WorklistQuery) -> Iterator[StoredItem]:
        for i, found in enumerate(super().query_stored(query)):
            if i == 1:
                self.gate.wait(timeout=30)
            yield found


def test_c_cancel_stops_the_answers(tmp_path, start_scp, scu, item):
    store = GatedStore(tmp_path / "gated.sqlite3")
    store.migrate()
    store.upsert_steps(items(item, 100))
    scp = start_scp(store)
    assoc = scu(scp.port)
    statuses = []
    for status, _ in assoc.send_c_find(sps_query(), MWL, msg_id=7):
        statuses.append(status.Status)
        if len(statuses) == 1:
            assoc.send_c_cancel(7, query_model=MWL)
            store.gate.set()
    assert statuses[0] == 0xFF00
    assert statuses[-1] == 0xFE00
    # Seen at the latest when the SCP lets pynetdicom catch up.
    assert len(statuses) <= 2 * FLOW_WINDOW + 1
    assert assoc.send_c_echo().Status == 0x0000


# --- lifecycle and sockets ---

def test_port_taken_raises_oserror(new_store, start_scp):
    store = new_store([])
    first = start_scp(store)
    second = WorklistSCP(store, DicomSettings(port=first.port), WorklistSettings())
    with pytest.raises(OSError, match="Address already in use"):
        second.start()


def test_start_twice_and_port_before_start_are_errors(new_store, start_scp):
    store = new_store([])
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings())
    with pytest.raises(RuntimeError, match="the worklist SCP is not started"):
        _ = scp.port
    scp.stop()  # stopping a server that never started is harmless
    started = start_scp(store)
    with pytest.raises(RuntimeError, match="the worklist SCP is already started"):
        started.start()


def test_unknown_character_set_fails_at_construction(new_store):
    with pytest.raises(ValueError, match="ISO_IR 999"):
        WorklistSCP(new_store([]), DicomSettings(character_set="ISO_IR 999"),
                    WorklistSettings())


def test_stop_ends_open_associations_and_frees_the_port(new_store, scu):
    store = new_store([])
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings())
    scp.start()
    port = scp.port
    assoc = scu(port)
    scp.stop()
    assoc.join(timeout=30)  # the requestor's thread ends once the peer aborts
    assert not assoc.is_established
    with pytest.raises(OSError, match="Connection refused"):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    scp.stop()  # a second stop is harmless


def test_more_than_ten_simultaneous_associations(new_store, start_scp, scu):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_associations=15))
    associations = [scu(scp.port) for _ in range(12)]
    assert all(a.send_c_echo().Status == 0x0000 for a in associations)


def test_max_pdu_is_offered(new_store, start_scp, scu):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_pdu=16384))
    assert scu(scp.port).acceptor.maximum_length == 16384


def test_silent_peer_is_dropped_after_the_acse_timeout(new_store, start_scp):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, acse_timeout_s=0.2))
    with socket.create_connection(("127.0.0.1", scp.port), timeout=30) as peer:
        assert peer.recv(1024) == b""  # closed by the SCP, no association request seen


def test_accepted_sockets_have_nagle_off():
    ae = AE()
    ae.add_supported_context(Verification)
    server = ae.make_server(("127.0.0.1", 0), server_class=NoDelayAssociationServer)
    try:
        with socket.create_connection(server.server_address[:2], timeout=5):
            accepted, _ = server.get_request()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.server_close()  # never served, so shutdown() would wait forever


def test_the_listen_backlog_holds_fifty_consoles_at_once(new_store, start_scp):
    # socketserver's default backlog of 5 dropped connections when 50 consoles polled
    # together (each DCMTK retry cost 1 s, then 3 s). The kernel shows a listening
    # socket's backlog as its Send-Q.
    scp = start_scp(new_store([]))
    shown = subprocess.run(["ss", "-Hltn", f"sport = :{scp.port}"], capture_output=True,
                           text=True, timeout=10, check=True).stdout.split()
    assert shown[0] == "LISTEN" and int(shown[2]) >= 128, shown
