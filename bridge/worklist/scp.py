"""The Modality Worklist SCP: C-ECHO and MWL C-FIND over pynetdicom.

Threads: pynetdicom serves each association in its own threads, and the
handlers below run there, calling the (thread-safe, synchronous) store
directly; nothing here touches an asyncio loop. With TLS the handshake runs
in the association's thread too (``NoDelayAssociationServer``), so a peer
that connects and stays silent can't stall the accepting thread.

Before pynetdicom reads anything: an address no setting lets in is closed at
accept (``AccessPolicy.refuse_address``), and every accepted socket reads
through guard.py, which bounds each PDU by its header before its body is
read, and rejects an A-ASSOCIATE-RQ with malformed AE titles.

Admission (``EVT_REQUESTED``, before pynetdicom's own negotiation) follows
``AccessPolicy`` (access.py); each C-FIND is then served with the calling
AE's ``PeerProfile``: its answer character set and unencodable policy, its
station default and its restrictions.

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
  malformed identifier (a bad value, or bytes that are not a well-formed data
  set: checked by bridge.dicomwire before pydicom reads them, since pydicom
  reads a truncated or garbled data set as a shorter one without a word),
  0xC001 when the store fails (the association stays up),
  0xC002 when a stored item cannot be shaped into an answer; each with an
  Error Comment that names attributes, never values.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode

# pynetdicom makes its SOP classes at import time (into the module's globals()), so
# a type checker cannot see them.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.dicomwire import MalformedDataSet, check_data_set
from bridge.logsafe import shown
from bridge.store.base import Store, StoreError
from bridge.store.items import StoredItem
from bridge.tls import peer_subject, server_context
from bridge.worklist.access import AccessPolicy, PeerProfile
from bridge.worklist.answer import python_codecs, shape_answer
from bridge.worklist.charset import undeclared_character_set
from bridge.worklist.encoded import AnswerCache, EncodedAnswer, ResponseSender, answer_shape
from bridge.worklist.guard import GuardedSocket, GuardedSSLSocket, PduLimits, peer_text
from bridge.worklist.query import (
    UNABLE_TO_PROCESS,
    PlannedQuery,
    QueryError,
    QueryScope,
    build_query,
)
from bridge.worklist.reactor import ContextList, WakingRequestHandler
from bridge.worklist.settings import CalledAeView, DicomSettings, WorklistSettings

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

LOGGER = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_UNSUPPORTED_KEYS = 0xFF01
CANCELLED = 0xFE00
STORE_FAILED = 0xC001
ANSWER_FAILED = 0xC002

# Answers sent between two pauses that let pynetdicom catch up (see _catch_up).
FLOW_WINDOW = 16

# An answer is an EncodedAnswer (sent by _send_encoded), or a Dataset pynetdicom encodes.
_Response = tuple[int | Dataset, Dataset | EncodedAnswer | None]


class NoDelayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with Nagle's algorithm off on accepted sockets.

    Every C-FIND answer is a small write followed by a wait for the next
    request; with Nagle on, each such exchange costs about 40 ms.

    With an ``ssl_context`` the TLS handshake is deferred to the association's
    thread (pynetdicom does it in the accepting thread, where one silent peer
    blocks every other connection) and bounded by ``handshake_timeout_s``; a
    peer that fails it (a plain DICOM client on a TLS port, an unknown client
    certificate) is disconnected and logged.
    """

    handshake_timeout_s: float = 10.0
    # The listen backlog. socketserver's default of 5 made the kernel drop SYNs when
    # 50 consoles polled at once: DCMTK retried after 1 s and 3 s, which set the p99
    # (bench/cfind_concurrent.py: 209 listen overflows in 300 polls; 0 with 128).
    request_queue_size = 128
    # Set by WorklistSCP.start before serving: who is closed at accept, and what
    # each connection may make the SCP read (guard.py).
    access: AccessPolicy | None = None
    limits: PduLimits = PduLimits()
    read_timeout_s: float | None = 60.0
    metrics: Metrics | None = None  # counts the connections closed at accept
    inline_requests: bool = False  # see process_request
    audit: AuditTrail = NO_AUDIT  # a Security Alert per refused connection

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is None:
            client = GuardedSocket.adopt(client, self.limits, peer_text(address),
                                         self.read_timeout_s or 0.0)
        else:
            # The context makes a GuardedSSLSocket (WorklistSCP sets its sslsocket_class).
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False)
            if isinstance(client, GuardedSSLSocket):
                client.guard(self.limits, peer_text(address), self.read_timeout_s or 0.0)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Close a connection from an address no setting lets in, before reading a byte."""
        if self.access is None:
            return True
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        why = self.access.refuse_address(str(host))
        if why is None:
            return True
        LOGGER.warning("DICOM connection from %s closed at accept: %s",
                       _address(client_address), why)
        if self.metrics is not None:
            self.metrics.association_rejected("address_not_allowed")
        self.audit.association_rejected(calling_ae="", called_ae="", address=str(host),
                                        reason=why)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a plain connection's association from the accepting thread.

        Starting it takes well under a millisecond (the association runs in its own
        threads), so the thread socketserver would start for it is a thread start
        and a hand-over saved (docs/performance.md). A TLS connection still gets
        that thread, for its handshake.
        """
        if self.inline_requests and not isinstance(request, ssl.SSLSocket):
            self.process_request_thread(request, client_address)
        else:
            super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.handshake_timeout_s)
                request.do_handshake()
                request.settimeout(self.read_timeout_s)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                LOGGER.warning("TLS handshake with %s failed: %s", _address(client_address),
                               _tls_reason(exc))
                self.audit.tls_failed(listener="DICOM", peer=_address(client_address),
                                      reason=_tls_reason(exc))
                self.shutdown_request(request)
                return
            LOGGER.debug("TLS peer %s: certificate %r", _address(client_address),
                         peer_subject(request))
        super().process_request_thread(request, client_address)

    def shutdown(self) -> None:
        # ae.make_server() does not register the server with its AE, so the
        # base class's bookkeeping (ae._servers.remove) must be skipped.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


EventHandler = tuple[Any, Callable[..., Any]]  # (pynetdicom event, handler)


class DicomService(Protocol):
    """Another DIMSE service served on the worklist's AE (bridge.mpps.MppsService):
    its SOP Classes, and its pynetdicom event handlers."""

    @property
    def supported_contexts(self) -> tuple[str, ...]: ...

    def handlers(self) -> list[EventHandler]: ...


def service_handlers(services: Sequence[DicomService]) -> list[EventHandler]:
    """Every service's handlers. An event that several services handle (N-CREATE:
    MPPS and Instance Availability Notification) goes to the service whose SOP
    Classes hold the request's; else to the first, which refuses it as another
    SOP class. pynetdicom binds one handler per such event, the last one given."""
    by_event: dict[Any, list[tuple[tuple[str, ...], Callable[..., Any]]]] = {}
    for service in services:
        for event, handler in service.handlers():
            by_event.setdefault(event, []).append((tuple(service.supported_contexts), handler))
    out: list[EventHandler] = []
    for event, pairs in by_event.items():
        if len(pairs) == 1:
            out.append((event, pairs[0][1]))
            continue

        def dispatch(ev: Any, pairs: list[tuple[tuple[str, ...], Callable[..., Any]]] = pairs
                     ) -> Any:
            request = ev.request
            uid = str(getattr(request, "AffectedSOPClassUID", None)
                      or getattr(request, "RequestedSOPClassUID", None) or "")
            handler = next((h for uids, h in pairs if uid in uids), pairs[0][1])
            return handler(ev)

        out.append((event, dispatch))
    return out


class WorklistSCP:
    """Serves the worklist from ``store`` on ``dicom.host:dicom.port``.

    Raises ValueError at construction for an unknown ``dicom.character_set``.
    """

    def __init__(self, store: Store, dicom: DicomSettings, worklist: WorklistSettings,
                 services: Sequence[DicomService] = (),
                 metrics: Metrics | None = None, *, encoded_answers: bool = True,
                 waking_reactors: bool = True,
                 audit: AuditTrail = NO_AUDIT) -> None:
        self._access = AccessPolicy(dicom)
        self._audit = audit  # Query per C-FIND, Security Alert per refused peer
        self._metrics = metrics  # associations, rejections, C-FIND count/latency/answers
        for character_set in self._access.character_sets:
            python_codecs(character_set)  # an unknown set fails here, not per query
        # TlsConfigError (a ValueError) here names the bad setting or file.
        self._ssl_context = server_context(dicom.tls, "dicom.tls")
        if self._ssl_context is not None:
            # Its sockets read through guard.py, like the plain ones.
            self._ssl_context.sslsocket_class = GuardedSSLSocket
        self._store = store
        # None: every answer is shaped as a Dataset and encoded by pynetdicom (the
        # path before encoded.py; kept for tests/worklist/test_encoded_answers.py).
        self._answer_cache = AnswerCache() if encoded_answers else None
        # False: pynetdicom's own polling reactors (reactor.py; kept to measure against).
        self._waking_reactors = waking_reactors
        self._dicom = dicom
        self._worklist = worklist
        self._ae = self._make_ae()
        # Other services on this AE (the MPPS SCP), handed over by the application layer.
        self._extra_handlers = service_handlers(services)
        for uid in (uid for s in services for uid in s.supported_contexts):
            self._ae.add_supported_context(uid)
        self._server: NoDelayAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._dicom.ae_title)
        ae.maximum_associations = self._dicom.max_associations
        ae.acse_timeout = self._dicom.acse_timeout_s
        ae.dimse_timeout = self._dicom.dimse_timeout_s
        ae.network_timeout = self._dicom.network_timeout_s
        ae.maximum_pdu_size = self._dicom.max_pdu
        # The called AE title is checked by AccessPolicy, in its documented order.
        ae.require_called_aet = False
        ae.add_supported_context(Verification)
        ae.add_supported_context(ModalityWorklistInformationFind)
        return ae

    def start(self) -> None:
        """Bind and serve in background threads; OSError if the address is taken."""
        if self._server is not None:
            raise RuntimeError("the worklist SCP is already started")
        _tune_pynetdicom_logging()
        server = self._ae.make_server(
            (self._dicom.host, self._dicom.port),
            evt_handlers=[(evt.EVT_CONN_OPEN, _on_connection),
                          (evt.EVT_REQUESTED, self._on_requested),
                          (evt.EVT_C_ECHO, self._on_echo),
                          (evt.EVT_C_FIND, self._send_encoded),
                          *([] if self._metrics is None
                            else [(evt.EVT_ACCEPTED, self._on_accepted)]),
                          *self._extra_handlers],
            server_class=NoDelayAssociationServer,
            ssl_context=self._ssl_context,
            request_handler=WakingRequestHandler if self._waking_reactors else None,
        )
        assert isinstance(server, NoDelayAssociationServer)
        server.handshake_timeout_s = self._dicom.tls.handshake_timeout_s
        server.access = self._access
        server.limits = PduLimits.of(
            max_associate_rq_bytes=self._dicom.max_associate_rq_bytes,
            max_message_bytes=self._dicom.max_message_bytes, max_pdu=self._dicom.max_pdu)
        server.read_timeout_s = self._dicom.network_timeout_s
        server.metrics = self._metrics
        server.inline_requests = self._waking_reactors
        if self._waking_reactors:
            server.contexts = ContextList(server.contexts)
        server.audit = self._audit
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"worklist-scp:{self.port}", daemon=True)
        self._thread.start()
        LOGGER.info("worklist SCP %s listening on %s:%d%s",
                    self._dicom.ae_title, self._dicom.host, self.port,
                    " (TLS)" if self._ssl_context is not None else "")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the worklist SCP is not started")
        return int(self._server.server_address[1])

    @property
    def open_associations(self) -> int:
        """Associations open now (0 when not started)."""
        server = self._server
        return 0 if server is None else len(server.active_associations)

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

    def _on_requested(self, event: evt.Event) -> None:
        """Admit or reject an A-ASSOCIATE-RQ (runs before pynetdicom's negotiation)."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # the A-ASSOCIATE-RQ that raised this event
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        address = str(assoc.requestor.address)
        server = self._server
        with self._access.lock:
            others = server.active_associations if server is not None else []
            same = sum(1 for other in others
                       if other is not assoc and _live(other) and _calling(other) == calling)
            rejection = self._access.check(calling, called, address, same)
            if rejection is not None:
                # Inside the lock: a concurrent count must already skip this one.
                assoc.is_rejected = True
        if rejection is None:
            prefer_requested_syntaxes(assoc)
            return
        LOGGER.warning("association %s -> %s from %s rejected (result %d, source %d, "
                       "reason %d): %s", shown(calling), shown(called), address,
                       rejection.result, rejection.source, rejection.reason, rejection.why,
                       extra={"calling_ae": shown(calling), "called_ae": shown(called),
                              "peer": address})
        if self._metrics is not None:
            self._metrics.association_rejected_rj(rejection.source, rejection.reason)
        self._audit.association_rejected(calling_ae=calling, called_ae=called, address=address,
                                         reason=rejection.why)
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_accepted(self, event: evt.Event) -> None:
        if self._metrics is not None:
            self._metrics.association(_calling(event.assoc))

    def _send_encoded(self, event: evt.Event) -> Iterator[_Response]:
        """The C-FIND handler: sends the pending answers already encoded (encoded.py)
        itself, and hands pynetdicom every other response."""
        responses = (self._on_find(event) if self._metrics is None and not self._audit.enabled
                     else self._counted_find(event))
        sender = ResponseSender(event.assoc, cast(C_FIND, event.request),
                                int(event.context.context_id))
        try:
            for status, answer in responses:
                if not isinstance(answer, EncodedAnswer):
                    yield status, answer
                elif not event.assoc.is_established:
                    return  # aborted or released meanwhile, as pynetdicom checks
                else:
                    sender.send(status if isinstance(status, int) else int(status.Status),
                                answer)
        finally:
            close = getattr(responses, "close", None)  # a generator: ends it at once
            if close is not None:
                close()

    def _counted_find(self, event: evt.Event) -> Iterator[_Response]:
        """``_on_find``, timed and counted (the handler when there are metrics)."""
        started = time.perf_counter()
        answers, final, completed = 0, SUCCESS, False
        try:
            for status, answer in self._on_find(event):
                if answer is not None:
                    answers += 1
                else:
                    final = status if isinstance(status, int) else int(status.Status)
                yield status, answer
            completed = True
        finally:
            _audit_query(self._audit, event, final, completed)
            if self._metrics is not None:
                outcome = ("aborted" if not completed else "success" if final == SUCCESS
                           else "cancelled" if final == CANCELLED
                           else "failed" if final in (STORE_FAILED, ANSWER_FAILED)
                           else "refused")
                self._metrics.cfind(str(event.assoc.requestor.ae_title), outcome,
                                    time.perf_counter() - started, answers)

    def _on_find(self, event: evt.Event) -> Iterator[_Response]:
        profile = self._access.profile(str(event.assoc.requestor.ae_title))
        try:
            identifier = self._identifier(event, profile)
            plan = build_query(identifier, self._worklist,
                               _scope(profile, self._access.view(_called(event.assoc))))
        except QueryError as exc:
            # The comment names attributes and byte offsets, never values.
            LOGGER.warning("C-FIND from %s refused (0x%04X): %s", shown(profile.ae_title),
                           exc.status, exc.comment)
            yield _failure(exc.status, exc.comment, exc.tag), None
            return
        except Exception:  # noqa: BLE001 - undecodable bytes from the peer
            LOGGER.warning("C-FIND from %s refused: the identifier cannot be decoded",
                           shown(profile.ae_title))
            yield _failure(UNABLE_TO_PROCESS, "the identifier cannot be decoded"), None
            return
        yield from self._answers(event, identifier, plan, profile)

    def _identifier(self, event: evt.Event, profile: PeerProfile) -> Dataset:
        """The identifier, checked to be a well-formed data set (QueryError 0xC000 if
        not), decoded in UTF-8 (or the AE's set) when it declares no set but holds
        non-ASCII text (see charset.py)."""
        syntax = event.context.transfer_syntax
        # pynetdicom types Event.request as any DIMSE request; EVT_C_FIND's is a C-FIND.
        encoded = cast(C_FIND, event.request).Identifier
        if encoded is None:
            raise QueryError(UNABLE_TO_PROCESS, "the C-FIND request has no identifier")
        try:
            # Inflated here with a bound (pynetdicom's own inflating has none).
            plain = check_data_set(encoded.getvalue(), implicit_vr=syntax.is_implicit_VR,
                                   little_endian=syntax.is_little_endian,
                                   deflated=syntax.is_deflated,
                                   limit=self._dicom.max_message_bytes)
        except MalformedDataSet as exc:
            raise QueryError(UNABLE_TO_PROCESS, f"malformed identifier: {exc}",
                             None if exc.tag is None else Tag(exc.tag)) from None
        implicit_vr = syntax.is_implicit_VR and not syntax.is_deflated
        little_endian = syntax.is_little_endian or syntax.is_deflated
        identifier = decode(BytesIO(plain), implicit_vr, little_endian, False)
        chosen = undeclared_character_set(identifier, profile.character_set)
        if chosen is None:
            return identifier
        LOGGER.info("C-FIND from %s has non-ASCII text but no Specific Character Set; "
                    "read as %s", shown(profile.ae_title), chosen)
        fresh = decode(BytesIO(plain), implicit_vr, little_endian, False)
        # Before any text element is read: pydicom decodes raw values lazily,
        # with the encoding recorded when the dataset was read.
        fresh.SpecificCharacterSet = chosen
        fresh.set_original_encoding(implicit_vr, little_endian,
                                    convert_encodings(chosen.split("\\")))
        return fresh

    def _answers(self, event: evt.Event, identifier: Dataset,
                 plan: PlannedQuery, profile: PeerProfile) -> Iterator[_Response]:
        pending = PENDING_UNSUPPORTED_KEYS if plan.ignored_keys else PENDING
        try:
            items = iter(self._store.query_stored(plan.query))
        except Exception as exc:  # noqa: BLE001 - a store failure ends this query only
            _log_store_failure(exc)
            yield _failure(STORE_FAILED, "the worklist store failed"), None
            return
        try:
            yield from self._stream(event, identifier, plan, items, pending, profile)
        finally:
            # Releases the store's cursor at once when stopping early.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _stream(self, event: evt.Event, identifier: Dataset, plan: PlannedQuery,
                items: Iterator[StoredItem], pending: int,
                profile: PeerProfile) -> Iterator[_Response]:
        sent = 0
        character_set = answer_character_set(identifier, profile)
        syntax = event.context.transfer_syntax
        cache = None if syntax.is_deflated else self._answer_cache
        shape = answer_shape(identifier) if cache is not None else ()
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
                # Decodes the stored item only when a post-filter must look at it.
                accepted = not plan.post_filter or plan.accepts(item.dataset)
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the SCP
                yield _unanswerable(exc), None
                return
            if not accepted:
                continue
            if plan.max_answers and sent >= plan.max_answers:
                # The count and the setting only: the query's keys may be patient data.
                LOGGER.warning("C-FIND from %s: answer cut after %d item(s) (%s)",
                               shown(profile.ae_title), plan.max_answers,
                               "dicom.known_aes.<AE>.max_answers"
                               if profile.max_answers is not None else "worklist.max_answers")
                return
            if sent and sent % FLOW_WINDOW == 0:
                _catch_up(event.assoc, self._dicom.dimse_timeout_s)
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                answer: Dataset | EncodedAnswer = (
                    shape_answer(item.dataset, identifier, character_set, profile.unencodable)
                    if cache is None else
                    cache.answer(item, identifier, shape, character_set, profile.unencodable,
                                 syntax.is_implicit_VR, syntax.is_little_endian))
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the SCP
                yield _unanswerable(exc), None
                return
            yield pending, answer
            sent += 1



def prefer_requested_syntaxes(assoc: Association) -> None:
    """Let the SCU's order of transfer syntaxes decide, as DCMTK's SCPs do.

    pynetdicom accepts, for each proposed context, the first of *its own* transfer
    syntaxes that the SCU proposed (Implicit VR LE before Explicit VR LE). Run
    before its negotiation (EVT_REQUESTED), this sorts this association's copy of
    the supported contexts by the order the SCU proposed them in, so an SCU that
    proposes Explicit VR LE first gets Explicit VR LE.
    """
    request = assoc.requestor.primitive
    if request is None:
        return
    ranks: dict[str, dict[str, int]] = {}
    for proposed in request.presentation_context_definition_list:
        order = ranks.setdefault(str(proposed.abstract_syntax), {})
        for syntax in proposed.transfer_syntax:
            order.setdefault(str(syntax), len(order))
    contexts = assoc.acceptor.supported_contexts  # this association's own copy
    for context in contexts:
        wanted = ranks.get(str(context.abstract_syntax))
        if wanted:
            context.transfer_syntax = _by_rank(context.transfer_syntax, wanted)
    assoc.acceptor.supported_contexts = contexts


def _by_rank(syntaxes: Sequence[str], ranks: dict[str, int]) -> list[str | bytes | UID]:
    """``syntaxes`` in the order of ``ranks``; those not ranked last, in their order."""
    last = len(ranks)
    return sorted(syntaxes, key=lambda uid: ranks.get(str(uid), last))


def answer_character_set(identifier: Dataset, profile: PeerProfile) -> str:
    """The set to answer in: the AE's own setting when it has one; else the set the
    query names in (0008,0005), when pydicom knows it; else dicom.character_set.

    An item the chosen set can't hold is handled by the ``unencodable`` policy in
    shape_answer (and logged there).
    """
    if profile.own_character_set:
        return profile.character_set
    named = identifier.get("SpecificCharacterSet")
    terms = [str(t).strip() for t in (named if isinstance(named, MultiValue) else [named])
             if t is not None]
    value = "\\".join(terms)
    if not value.strip("\\ "):
        return profile.character_set
    try:
        python_codecs(value)
    except ValueError:
        LOGGER.info("C-FIND from %s names Specific Character Set %s, which is not known; "
                    "answering in %s", shown(profile.ae_title), shown(value),
                    profile.character_set)
        return profile.character_set
    return value


def _tune_pynetdicom_logging() -> None:
    """Let pynetdicom format identifiers and PDUs only when its logger would show them.

    By default it decodes and pretty-prints every request identifier and every
    answer, and binds PDU-dumping handlers, whatever its logger's level: a
    large share of the cost of an answer. The switches are pynetdicom's
    module settings, read when servers and associations are made, so they are
    set from the logger's level at each start.
    """
    log = logging.getLogger("pynetdicom")
    _config.LOG_REQUEST_IDENTIFIERS = log.isEnabledFor(logging.INFO)
    _config.LOG_RESPONSE_IDENTIFIERS = log.isEnabledFor(logging.DEBUG)
    _config.LOG_HANDLER_LEVEL = "standard" if log.isEnabledFor(logging.DEBUG) else "none"
    # A logger's filters do not apply to its children's records, so each module's
    # logger gets the filter (pynetdicom's modules are all imported by now).
    names = ["pynetdicom", *(name for name in list(logging.root.manager.loggerDict)
                             if name.startswith("pynetdicom."))]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, PeerTextFilter) for f in logger.filters):
            logger.addFilter(_PEER_TEXT_FILTER)


class PeerTextFilter(logging.Filter):
    """Makes pynetdicom's log records safe for what they quote from peers.

    pynetdicom puts peer-supplied text in its messages and exception texts (an
    AE title with a line feed, an undecodable PDU), so a peer could forge log
    lines. Each record becomes one line, control characters escaped
    (``bridge.logsafe.shown``), WARNING and above cut to 1024 characters; a
    traceback is reduced to the exception's type unless pynetdicom's logger is at
    DEBUG (an operator debugging asks for it).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments don't fit its format
            message = str(record.msg)
        if record.exc_info and not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            error = record.exc_info[1]
            if error is not None:
                message = f"{message} ({type(error).__name__})"
            record.exc_info = None
            record.exc_text = None
        record.msg = shown(message, 1024 if record.levelno >= logging.WARNING else 1 << 20)
        record.args = None
        return True


_PEER_TEXT_FILTER = PeerTextFilter()


def _scope(profile: PeerProfile, view: CalledAeView | None = None) -> QueryScope:
    return QueryScope(calling_ae=profile.ae_title,
                      station_from_calling_ae=profile.station_from_calling_ae,
                      stations=profile.stations, modalities=profile.modalities,
                      worklist_labels=profile.worklist_labels,
                      max_answers=profile.max_answers,
                      view_stations=tuple(view.stations) if view else (),
                      view_modalities=tuple(view.modalities) if view else (),
                      view_labels=tuple(view.worklist_labels) if view else ())


def _called(assoc: Association) -> str:
    request = assoc.requestor.primitive
    return str(request.called_ae_title).strip() if request is not None else ""


def _live(assoc: Association) -> bool:
    return not (assoc.is_rejected or assoc.is_aborted or assoc.is_released)


def _calling(assoc: Association) -> str:
    request = assoc.requestor.primitive
    return str(request.calling_ae_title).strip() if request is not None else ""


def _address(client_address: Any) -> str:
    if isinstance(client_address, tuple) and client_address:
        return f"{client_address[0]}:{client_address[1]}" if len(client_address) > 1 else str(
            client_address[0])
    return str(client_address)


def _tls_reason(exc: BaseException) -> str:
    # OpenSSL's reason ("WRONG_VERSION_NUMBER", "CERTIFICATE_VERIFY_FAILED"), not the text.
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else type(exc).__name__


def _on_connection(event: evt.Event) -> None:
    """Let a guarded connection that ends before its A-ASSOCIATE-RQ end the association.

    pynetdicom's acceptor waits ``acse_timeout`` for the A-ASSOCIATE-RQ even when
    the connection is gone (PS3.8 Sta2 + Evt17 tells its user nothing), so a
    refused or vanished peer would hold one of ``dicom.max_associations`` for
    30 s. An empty item on its queue is what its own wait returns on timeout.
    Uses the DUL's ``to_user_queue`` (pynetdicom 3.0); nothing happens if it moves.
    """
    dul = event.assoc.dul
    holder = dul.socket
    sock = holder.socket if holder is not None else None
    queue = getattr(dul, "to_user_queue", None)
    if isinstance(sock, (GuardedSocket, GuardedSSLSocket)) and queue is not None:
        sock.on_end_before_request = lambda: queue.put(None)


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
        # Short: with the waking reactors (reactor.py) the DUL sends as soon as it is
        # handed a PDU, and each 1 ms here was ~0.06 ms on every answer.
        time.sleep(0.0002)


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


def _audit_query(audit: AuditTrail, event: evt.Event, final: int, completed: bool) -> None:
    """The C-FIND's Query audit event: the identifier as the SCU sent it."""
    if not audit.enabled:
        return
    encoded = cast(C_FIND, event.request).Identifier
    requestor = event.assoc.requestor
    answered = completed and final in (SUCCESS, CANCELLED)
    audit.query(calling_ae=str(requestor.ae_title).strip(), host=str(requestor.address),
                called_ae=_called(event.assoc),
                identifier=b"" if encoded is None else encoded.getvalue(),
                transfer_syntax=str(event.context.transfer_syntax), success=answered,
                reason="" if answered else f"status 0x{final:04X}" if completed
                else "the association ended")
