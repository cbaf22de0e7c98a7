"""Study Root C-FIND at STUDY level: the reconciliation loop's question to a PACS.

One association per batch of items (``PacsClient.session``); in it, one C-FIND
per question, by Study Instance UID and, when that finds nothing, by Accession
Number. Every request waits for the rate limit first (``RateLimit``), so however
many items are due, the PACS sees at most ``max_queries_per_s`` requests a second.

Threads: blocking (pynetdicom); the loop runs a batch in a worker thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode

# pynetdicom makes its SOP classes at import time (into the module's globals()), so
# a type checker cannot see them.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.reconcile.rules import StudyAnswer
from bridge.reconcile.settings import PacsPeer
from bridge.reconcile.trail import Subject, record_query
from bridge.tls import client_context

log = logging.getLogger(__name__)

STUDY_ROOT_FIND = StudyRootQueryRetrieveInformationModelFind
_PENDING = (0xFF00, 0xFF01)
# A PACS that answers more than this for one accession is not answering the question.
MAX_ANSWERS = 20


class PacsError(Exception):
    """The PACS could not be asked (no association, a failed C-FIND); names the PACS."""


class RateLimit:
    """At most ``per_s`` calls of ``wait`` return per second (thread-safe)."""

    def __init__(self, per_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._gap = 1.0 / per_s
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            at = max(now, self._next)
            self._next = at + self._gap
        if at > now:
            self._sleep(at - now)


def identifier(*, study_uid: str = "", accession: str = "") -> Dataset:
    """The C-FIND identifier: one matching key, the return keys the rules need."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    ds.AccessionNumber = accession
    ds.PatientID = ""
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedSeries = None
    ds.NumberOfStudyRelatedInstances = None
    return ds


def _count(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    try:
        return -1 if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return -1


def answer(ds: Dataset) -> StudyAnswer:
    modalities = ds.get("ModalitiesInStudy")
    if modalities is not None and not isinstance(modalities, str):
        modalities = "\\".join(str(m) for m in modalities)
    return StudyAnswer(study_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
                       accession=str(ds.get("AccessionNumber", "") or "").strip(),
                       patient_id=str(ds.get("PatientID", "") or "").strip(),
                       series=_count(ds, "NumberOfStudyRelatedSeries"),
                       instances=_count(ds, "NumberOfStudyRelatedInstances"),
                       modalities=str(modalities or ""))


class Finder:
    """C-FIND requests on one open association; counts them, and records each to the
    audit trail (a Query event: the identifier as sent, the item it is about)."""

    def __init__(self, assoc: Association, peer: PacsPeer, rate: RateLimit, *,
                 audit: AuditTrail = NO_AUDIT, calling_aet: str = "") -> None:
        self._assoc = assoc
        self._peer = peer
        self._rate = rate
        self._audit = audit
        self._calling = calling_aet
        self.requests = 0

    def find(self, *, study_uid: str = "", accession: str = "",
             subject: Subject | None = None) -> list[StudyAnswer]:
        """The studies matching one key. Raises PacsError."""
        self._rate.wait()
        self.requests += 1
        query = identifier(study_uid=study_uid, accession=accession)
        try:
            found = self._find(query)
        except PacsError as exc:
            self._audited(query, subject, str(exc))
            raise
        except Exception as exc:
            self._audited(query, subject, f"PACS {self._peer.label}: {type(exc).__name__}")
            raise
        self._audited(query, subject, "")
        return found

    def _audited(self, query: Dataset, subject: Subject | None, failure: str) -> None:
        if not self._audit.enabled:
            return
        syntax = next((cx.transfer_syntax[0] for cx in self._assoc.accepted_contexts
                       if cx.abstract_syntax == STUDY_ROOT_FIND and cx.transfer_syntax),
                      "1.2.840.10008.1.2")
        implicit = syntax == "1.2.840.10008.1.2"
        big = syntax == "1.2.840.10008.1.2.2"
        record_query(self._audit, calling_ae=self._calling, pacs_ae=self._peer.ae_title,
                     host=self._peer.host, identifier=encode(query, implicit, not big) or b"",
                     transfer_syntax=str(syntax), subject=subject, failure=failure)

    def _find(self, query: Dataset) -> list[StudyAnswer]:
        found: list[StudyAnswer] = []
        for status, ds in self._assoc.send_c_find(query, STUDY_ROOT_FIND):
            code = int(getattr(status, "Status", -1)) if status is not None else -1
            if code in _PENDING and ds is not None:
                if len(found) < MAX_ANSWERS:
                    found.append(answer(ds))
                continue
            if code == 0x0000:
                return found
            raise PacsError(f"PACS {self._peer.label}: C-FIND failed with status "
                            f"0x{code & 0xFFFF:04X}" if code >= 0 else
                            f"PACS {self._peer.label}: no answer to C-FIND (association lost"
                            " or timed out)")
        return found


def no_delay(event: evt.Event) -> None:
    """TCP_NODELAY on the association's socket: a C-FIND request is two PDUs (command,
    identifier), and with Nagle the second waits for the PACS's delayed ACK (~40 ms
    a request, measured: 93 ms per C-FIND without, bench/reconcile.py)."""
    holder = getattr(event.assoc.dul, "socket", None)
    sock = getattr(holder, "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PacsClient:
    """Associations to one PACS as a Study Root C-FIND SCU."""

    def __init__(self, peer: PacsPeer, calling_aet: str, *, setting: str = "reconcile.pacs",
                 audit: AuditTrail = NO_AUDIT) -> None:
        self.peer = peer
        self._calling = calling_aet
        self._audit = audit
        # TlsConfigError here (at start-up) names the setting and the file.
        self._ssl: ssl.SSLContext | None = client_context(peer.tls, f"{setting}.tls")

    @contextmanager
    def session(self, rate: RateLimit) -> Iterator[Finder]:
        """An association for one batch of questions. Raises PacsError."""
        ae = AE(ae_title=self._calling)
        ae.add_requested_context(STUDY_ROOT_FIND)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.peer.timeout_s
        ae.connection_timeout = self.peer.timeout_s
        tls = None if self._ssl is None else (self._ssl, self.peer.host)
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title,
                             tls_args=tls, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
        if not assoc.is_established:
            raise PacsError(f"PACS {self.peer.label} ({self.peer.host}:{self.peer.port}, AE "
                            f"{self.peer.ae_title}): association "
                            + ("rejected" if assoc.is_rejected else "failed"))
        try:
            yield Finder(assoc, self.peer, rate, audit=self._audit, calling_aet=self._calling)
        finally:
            if assoc.is_established:
                assoc.release()


def pacs_contexts(pacs: list[PacsPeer]) -> list[ssl.SSLContext | None]:
    """Each PACS's client context, as the loop builds them (``check-config``): raises
    bridge.tls.TlsConfigError naming ``reconcile.pacs[N].tls`` and the file."""
    return [client_context(p.tls, f"reconcile.pacs[{i}].tls") for i, p in enumerate(pacs)]
