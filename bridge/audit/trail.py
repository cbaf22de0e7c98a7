"""The audit trail every part of the daemon records to: never blocking, never failing.

``AuditTrail`` puts each event (or a function that builds it, run later on the
spool thread: e.g. reading an HL7 message's patient ID) into a bounded in-memory
queue and returns at once; the AuditService (service.py) drains it into the
durable spool. When the queue is full the event is dropped, counted, and a
Security Alert says so as soon as there is room again: clinical traffic never
waits for the audit trail.

``NO_AUDIT`` records nothing: the default of every constructor that takes a trail,
so tests and tools that want no audit need not make one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from bridge.audit import codes, events
from bridge.audit.codes import Code
from bridge.audit.events import MINOR_FAILURE, SUCCESS, AuditEvent, Local
from bridge.store import mpps_tx
from bridge.store.base import Store

log = logging.getLogger(__name__)

Builder = Callable[[Local], AuditEvent | None]
Entry = AuditEvent | Builder


class AuditTrail:
    """Where audit events go; see the module docstring. Every method is thread-safe,
    returns at once and never raises."""

    def __init__(self, local: Local, *, queue_size: int = 10000, enabled: bool = True
                 ) -> None:
        self.local = local
        self.enabled = enabled
        self._queue: queue.Queue[Entry] = queue.Queue(maxsize=max(queue_size, 1))
        self._lock = threading.Lock()
        self.dropped = 0  # events lost to a full queue, since start
        self._unreported = 0  # ... not yet told in a Security Alert
        # The store, for builders that read what a handler did not have at hand.
        self.store: Store | None = None

    # --- the generic entries ---

    def record(self, event: Entry) -> None:
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unreported += 1
            return

    def record_later(self, build: Builder) -> None:
        """``build(local)`` runs on the spool thread; None: nothing to record."""
        self.record(build)

    # --- for the spool thread ---

    def take(self, limit: int, timeout_s: float) -> list[Entry]:
        """Up to ``limit`` entries; waits up to ``timeout_s`` for the first."""
        out: list[Entry] = []
        try:
            out.append(self._queue.get(timeout=timeout_s))
            while len(out) < limit:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return out

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def unreported_drops(self) -> int:
        """Drops since the last call (the spool thread turns them into a Security Alert)."""
        with self._lock:
            n, self._unreported = self._unreported, 0
        return n

    # --- one method per kind of event the daemon records ---

    def application(self, *, start: bool) -> None:
        self.record(events.application_activity(self.local, start=start))

    def query(self, *, calling_ae: str, host: str, called_ae: str, identifier: bytes,
              transfer_syntax: str, success: bool = True, reason: str = "") -> None:
        """A Modality Worklist C-FIND (answered or refused)."""
        self.record(events.query(
            self.local, calling_ae=calling_ae, host=host, called_ae=called_ae,
            identifier=identifier, transfer_syntax=transfer_syntax,
            outcome=SUCCESS if success else MINOR_FAILURE, outcome_text=reason))

    def procedure(self, *, calling_ae: str, host: str, create: bool, mpps_uid: str,
                  status: str = "", patient_id: str = "", success: bool = True,
                  reason: str = "") -> None:
        """An MPPS N-CREATE (create) or N-SET; the patient, accessions and study are read
        from the stored MPPS on the spool thread when not given (an N-SET has none)."""
        store = self.store

        def build(local: Local) -> AuditEvent:
            pid, state, accessions, studies = _stored_mpps(store, mpps_uid)
            pid, state = patient_id or pid, status or state
            return events.procedure_record(
                local, calling_ae=calling_ae, host=host, create=create, mpps_uid=mpps_uid,
                status=state, patient_id=pid, accessions=accessions, studies=studies,
                outcome=SUCCESS if success else MINOR_FAILURE, outcome_text=reason)

        self.record_later(build)

    def forwarded(self, *, calling_ae: str, destination_ae: str, host: str, create: bool,
                  mpps_uid: str, reason: str = "") -> None:
        """An MPPS request delivered to a forward destination (``reason`` empty) or given
        up as a dead letter; the patient, accessions, study and state are read from the
        stored MPPS on the spool thread."""
        store = self.store

        def build(local: Local) -> AuditEvent:
            pid, state, accessions, studies = _stored_mpps(store, mpps_uid)
            return events.forwarded(
                local, calling_ae=calling_ae, destination_ae=destination_ae, host=host,
                create=create, mpps_uid=mpps_uid, status=state, patient_id=pid,
                accessions=accessions, studies=studies,
                outcome=MINOR_FAILURE if reason else SUCCESS, outcome_text=reason)

        self.record_later(build)

    def security_alert(self, type_code: Code, what: str, *, peer: str = "", user: str = "",
                       success: bool = False, reason: str = "") -> None:
        self.record(events.security_alert(
            self.local, type_code=type_code, what=what, peer=peer, user=user,
            outcome=SUCCESS if success else MINOR_FAILURE, outcome_text=reason))

    def association_rejected(self, *, calling_ae: str, called_ae: str, address: str,
                             reason: str) -> None:
        """An A-ASSOCIATE-RQ refused (or a connection closed at accept)."""
        self.security_alert(codes.NODE_AUTHENTICATION, f"{calling_ae}->{called_ae}"
                            if calling_ae else "DICOM", peer=address, reason=reason)

    def source_refused(self, *, listener: str, peer: str, reason: str) -> None:
        """A connection refused before it was served (an MLLP source not allowed)."""
        self.security_alert(codes.NODE_AUTHENTICATION, listener, peer=peer, reason=reason)

    def tls_failed(self, *, listener: str, peer: str, reason: str) -> None:
        self.security_alert(codes.NODE_AUTHENTICATION, listener, peer=peer, reason=reason)

    def configuration_changed(self, what: str, *, user: str = "", success: bool = True,
                              reason: str = "") -> None:
        """Mapping or configuration files (re)loaded: Software Configuration."""
        self.security_alert(codes.SOFTWARE_CONFIGURATION, what, user=user, success=success,
                            reason=reason)

    def authentication(self, *, user: str, host: str, login: bool, success: bool = True
                       ) -> None:
        self.record(events.user_authentication(self.local, user=user, host=host, login=login,
                                               success=success))


def _stored_mpps(store: Store | None, mpps_uid: str
                 ) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """(patient ID, state, accessions, studies) of the stored MPPS; blanks if none."""
    stored = mpps_tx.get_mpps(store, mpps_uid) if store is not None and mpps_uid else None
    if stored is None:
        return "", "", (), ()
    steps = stored.item.get("ScheduledStepAttributesSequence") or []
    return (str(stored.item.get("PatientID", "")), stored.status,
            tuple(sorted({str(a) for s in steps if (a := s.get("AccessionNumber"))})),
            tuple(sorted({str(u) for s in steps if (u := s.get("StudyInstanceUID"))})))


NO_AUDIT = AuditTrail(Local("", "", ""), queue_size=1, enabled=False)
