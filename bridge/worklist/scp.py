"""The Modality Worklist SCP: C-ECHO and MWL C-FIND over pynetdicom.

Threads: pynetdicom serves each association in its own threads, and the
handlers below run there, calling the (thread-safe, synchronous) store
directly; nothing here touches an asyncio loop.

C-FIND statuses sent:
- 0xFF00 pending per answer (0xFF01 when the identifier held private or
  unknown keys, which are neither matched nor returned);
- 0x0000 success after the last answer, *also when worklist.max_answers cut
  the answer short* (as dcm4chee does): the console keeps and shows the
  answers it got. PS3.4 would also allow 0xA700 (out of resources), but a
  failure after pending answers reads as an error to the user. The cut is
  logged as a warning (the count only);
- 0xFE00 after a C-CANCEL, checked before every answer; every FLOW_WINDOW
  answers the handler lets pynetdicom send and read first (``_catch_up``), so
  a cancel takes effect within that many answers and memory stays bounded;
- 0xA900 for an identifier of another information model, 0xC000 for a
  malformed identifier, 0xC001 when the store fails (the association stays up),
  0xC002 when a stored item cannot be shaped into an answer; each with an
  Error Comment that names attributes, never values.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom import Dataset
from pydicom.tag import BaseTag
from pynetdicom import AE, Association, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification
from pynetdicom.transport import ThreadedAssociationServer

from bridge.config import DicomSettings, WorklistSettings
from bridge.store.base import Store, StoreError
from bridge.worklist.answer import python_codecs, shape_answer
from bridge.worklist.query import UNABLE_TO_PROCESS, PlannedQuery, QueryError, build_query

LOGGER = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_UNSUPPORTED_KEYS = 0xFF01
CANCELLED = 0xFE00
STORE_FAILED = 0xC001
ANSWER_FAILED = 0xC002

# Answers sent between two pauses that let pynetdicom catch up (see _catch_up).
FLOW_WINDOW = 16

_Response = tuple[int | Dataset, Dataset | None]


class NoDelayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with Nagle's algorithm off on accepted sockets.

    Every C-FIND answer is a small write followed by a wait for the next
    request; with Nagle on, each such exchange costs about 40 ms.
    """

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def shutdown(self) -> None:
        # ae.make_server() does not register the server with its AE, so the
        # base class's bookkeeping (ae._servers.remove) must be skipped.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class WorklistSCP:
    """Serves the worklist from ``store`` on ``dicom.host:dicom.port``.

    Raises ValueError at construction for an unknown ``dicom.character_set``.
    """

    def __init__(self, store: Store, dicom: DicomSettings, worklist: WorklistSettings) -> None:
        python_codecs(dicom.character_set)  # an unknown character set fails here, not per query
        self._store = store
        self._dicom = dicom
        self._worklist = worklist
        self._ae = self._make_ae()
        self._server: NoDelayAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._dicom.ae_title)
        ae.maximum_associations = self._dicom.max_associations
        ae.acse_timeout = self._dicom.acse_timeout_s
        ae.dimse_timeout = self._dicom.dimse_timeout_s
        ae.network_timeout = self._dicom.network_timeout_s
        ae.maximum_pdu_size = self._dicom.max_pdu
        ae.add_supported_context(Verification)
        ae.add_supported_context(ModalityWorklistInformationFind)
        return ae

    def start(self) -> None:
        """Bind and serve in background threads; OSError if the address is taken."""
        if self._server is not None:
            raise RuntimeError("the worklist SCP is already started")
        server = self._ae.make_server(
            (self._dicom.host, self._dicom.port),
            evt_handlers=[(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_FIND, self._on_find)],
            server_class=NoDelayAssociationServer,
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"worklist-scp:{self.port}", daemon=True)
        self._thread.start()
        LOGGER.info("worklist SCP %s listening on %s:%d",
                    self._dicom.ae_title, self._dicom.host, self.port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the worklist SCP is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, abort open associations and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        for assoc in server.active_associations:
            assoc.abort()
        for assoc in server.active_associations:
            assoc.join(timeout=self._dicom.network_timeout_s)
        self._server = self._thread = None
        LOGGER.info("worklist SCP %s stopped", self._dicom.ae_title)

    # --- event handlers (run in pynetdicom's association threads) ---

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_find(self, event: evt.Event) -> Iterator[_Response]:
        try:
            identifier = event.identifier
            plan = build_query(identifier, self._worklist)
        except QueryError as exc:
            LOGGER.warning("C-FIND refused (0x%04X): %s", exc.status, exc.comment)
            yield _failure(exc.status, exc.comment, exc.tag), None
            return
        except Exception:  # noqa: BLE001 - undecodable bytes from the peer
            LOGGER.warning("C-FIND refused: the identifier cannot be decoded")
            yield _failure(UNABLE_TO_PROCESS, "the identifier cannot be decoded"), None
            return
        yield from self._answers(event, identifier, plan)

    def _answers(self, event: evt.Event, identifier: Dataset,
                 plan: PlannedQuery) -> Iterator[_Response]:
        pending = PENDING_UNSUPPORTED_KEYS if plan.ignored_keys else PENDING
        character_set = self._character_set(event)
        try:
            items = iter(self._store.query(plan.query))
        except Exception as exc:  # noqa: BLE001 - a store failure ends this query only
            _log_store_failure(exc)
            yield _failure(STORE_FAILED, "the worklist store failed"), None
            return
        try:
            yield from self._stream(event, identifier, plan, items, pending, character_set)
        finally:
            # Releases the store's cursor at once when stopping early.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _stream(self, event: evt.Event, identifier: Dataset, plan: PlannedQuery,
                items: Iterator[Dataset], pending: int,
                character_set: str) -> Iterator[_Response]:
        sent = 0
        while True:
            try:
                item = next(items, None)
            except Exception as exc:  # noqa: BLE001 - a store failure ends this query only
                _log_store_failure(exc)
                yield _failure(STORE_FAILED, "the worklist store failed"), None
                return
            if item is None:
                return
            try:
                accepted = plan.accepts(item)
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the SCP
                yield _unanswerable(exc), None
                return
            if not accepted:
                continue
            if plan.max_answers and sent >= plan.max_answers:
                LOGGER.warning("C-FIND answer cut at worklist.max_answers = %d",
                               plan.max_answers)
                return
            if sent and sent % FLOW_WINDOW == 0:
                _catch_up(event.assoc, self._dicom.dimse_timeout_s)
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                answer = shape_answer(item, identifier, character_set)
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the SCP
                yield _unanswerable(exc), None
                return
            yield pending, answer
            sent += 1

    def _character_set(self, event: evt.Event) -> str:
        # One set for all peers today; a per-AE choice (by calling AE title) goes here.
        return self._dicom.character_set


def _catch_up(assoc: Association, timeout: float) -> None:
    """Wait until pynetdicom has sent every queued response and read what came in.

    pynetdicom queues responses without back-pressure, and its reactor reads
    incoming PDUs only while nothing waits to be sent: without this pause a
    fast store queues every answer in memory before a C-CANCEL is even read.
    Uses the reactor's queues (pynetdicom 3.0); it does nothing if they move.
    """
    dul = assoc.dul
    outgoing = getattr(dul, "to_provider_queue", None)
    events = getattr(dul, "event_queue", None)
    if outgoing is None or events is None:
        return
    deadline = time.monotonic() + timeout
    while assoc.is_established and time.monotonic() < deadline:
        sock = dul.socket
        if outgoing.empty() and events.empty() and not (sock is not None and sock.ready):
            return
        time.sleep(0.001)


def _failure(status: int, comment: str, tag: BaseTag | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    if tag is not None:
        ds.OffendingElement = [tag]
    return ds


def _unanswerable(exc: BaseException) -> Dataset:
    # Only the type: pydicom's messages about a bad value may quote it.
    LOGGER.error("a stored worklist item cannot be matched or answered: %s",
                 type(exc).__name__)
    return _failure(ANSWER_FAILED, "a worklist item cannot be answered")


def _log_store_failure(exc: BaseException) -> None:
    # StoreError messages are written by the store and carry no patient data;
    # other exceptions (driver errors) might quote values, so only their type.
    detail: Any = exc if isinstance(exc, StoreError) else type(exc).__name__
    LOGGER.error("worklist store query failed: %s", detail)
