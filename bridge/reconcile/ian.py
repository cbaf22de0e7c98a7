"""The Instance Availability Notification SCP (PS3.4 Annex R, N-CREATE), on the
worklist's AE: a PACS that pushes (dcm4chee sends IAN when a study is received)
tells the bridge a study's instances are available, and the open worklist items
with that Study Instance UID become COMPLETED by the rules of
bridge/reconcile/rules.py (a terminal status stays; Source ``ian``).

Like the MPPS SCP (bridge/mpps/service.py) it is a ``worklist.DicomService``:
the application layer hands it to ``WorklistSCP``, which serves its SOP Class
and sends each N-CREATE of that class here.

Statuses sent (docs/conformance-statement.md, section 9):
- 0x0000 when the notification was applied, also when no open item has its
  study (PACS send IAN for every study) and when it is sent again (idempotent);
- 0x0117 for a malformed Affected SOP Instance UID;
- 0x0120 when Study Instance UID or Referenced Series Sequence is absent,
  0x0121 when it is empty;
- 0x0106 for a Study Instance UID that is not a UID, a series item without
  Series Instance UID or Referenced SOP Sequence, or an attribute list that
  cannot be decoded;
- 0x0110 when the store fails (nothing was applied; the PACS may retry).
Each failure carries an Error Comment naming the attribute, never a value.

Threads: the handler runs in a pynetdicom association thread and writes through
``Store.write`` (one transaction); ``notify`` wakes the outbox sender after it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pydicom import Dataset
from pydicom.tag import Tag
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE

# pynetdicom makes its SOP classes at import time (into the module's globals()), so
# a type checker cannot see them.
from pynetdicom.sop_class import InstanceAvailabilityNotification  # type: ignore[attr-defined]

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.dicomwire import MalformedDataSet, check_data_set
from bridge.logsafe import shown
from bridge.reconcile.apply import Applied, pushed
from bridge.reconcile.rules import StudyAnswer
from bridge.reconcile.trail import IAN, record_conflict, record_study
from bridge.steps import Reporter, Source
from bridge.store.base import Store, StoreError, StoreTx
from bridge.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

IAN_SOP_CLASS = InstanceAvailabilityNotification
SUCCESS = 0x0000
INVALID_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
INVALID_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_VALUE = 0x0121
AVAILABLE = frozenset({"ONLINE", "NEARLINE"})
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

_Response = tuple[int | Dataset, Dataset | None]


class IanFailure(Exception):
    def __init__(self, status: int, comment: str, tag: str = "") -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.tag = tag


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID.match(value))


@dataclass(frozen=True, slots=True)
class Notified:
    """What one notification said: the study and its available series and instances."""

    study_uid: str
    series: int
    instances: int


def read_notification(ds: Dataset) -> Notified:
    """The study and its counts (PS3.4 Table R.3-2's Type 1 attributes). Raises IanFailure."""
    for keyword in ("StudyInstanceUID", "ReferencedSeriesSequence"):
        if keyword not in ds:
            raise IanFailure(MISSING_ATTRIBUTE, f"{keyword} is missing", keyword)
        if ds[keyword].is_empty:
            raise IanFailure(MISSING_VALUE, f"{keyword} is empty", keyword)
    study_uid = str(ds.StudyInstanceUID).strip()
    if not valid_uid(study_uid):
        raise IanFailure(INVALID_VALUE, "StudyInstanceUID is not a valid UID",
                         "StudyInstanceUID")
    series = instances = 0
    for item in ds.ReferencedSeriesSequence:
        if not str(item.get("SeriesInstanceUID", "") or "").strip():
            raise IanFailure(INVALID_VALUE, "a series item has no SeriesInstanceUID",
                             "ReferencedSeriesSequence")
        sops = item.get("ReferencedSOPSequence")
        if not sops:
            raise IanFailure(INVALID_VALUE, "a series item has no ReferencedSOPSequence",
                             "ReferencedSeriesSequence")
        available = sum(1 for sop in sops
                        if str(sop.get("InstanceAvailability", "") or "").strip() in AVAILABLE)
        if available:
            series += 1
            instances += available
    return Notified(study_uid, series, instances)


class IanService:
    """IAN N-CREATE handling over ``store``; see the module docstring."""

    supported_contexts: tuple[str, ...] = (IAN_SOP_CLASS,)

    def __init__(self, store: Store, *, messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None,
                 max_data_set_bytes: int = 4 * 1024 * 1024,
                 audit: AuditTrail = NO_AUDIT, metrics: Metrics | None = None) -> None:
        self._store = store
        # Each N-CREATE, applied or refused: a Procedure Record update (RAD-49).
        self._audit = audit
        self._metrics = metrics
        self._messages = messages
        self._notify = notify or (lambda: None)
        self._max_data_set_bytes = max_data_set_bytes

    def handlers(self) -> list[tuple[Any, Callable[[evt.Event], _Response]]]:
        return [(evt.EVT_N_CREATE, self._on_create)]

    def _on_create(self, event: evt.Event) -> _Response:
        request = cast(N_CREATE, event.request)
        uid = str(request.AffectedSOPInstanceUID or "")
        calling = _calling_aet(event)
        host = _peer_host(event)
        study_uid = ""
        try:
            if uid and not valid_uid(uid):
                raise IanFailure(INVALID_INSTANCE, "Affected SOP Instance UID is not a valid UID")
            self._well_formed(event, request.AttributeList)
            try:
                ds = event.attribute_list
                for _ in ds.iterall():  # a malformed value fails here, not later
                    pass
            except Exception:  # noqa: BLE001 - whatever the peer sent, answer it
                raise IanFailure(INVALID_VALUE, "the attribute list cannot be decoded") from None
            what = read_notification(ds)
            study_uid = what.study_uid
            applied = self.notified(what, calling_aet=calling)
        except IanFailure as exc:
            log.info("IAN N-CREATE from %s refused: %s", calling, exc.comment)
            record_study(self._audit, informant=calling, host=host, requested=True,
                         study_uid=study_uid, type_codes=IAN, failure=exc.comment)
            return _failure(exc), None
        except Exception as exc:
            log.error("IAN N-CREATE failed: %s", type(exc).__name__)
            log.debug("IAN N-CREATE failure", exc_info=exc)
            record_study(self._audit, informant=calling, host=host, requested=True,
                         study_uid=study_uid, type_codes=IAN,
                         failure="internal error; nothing was applied")
            return _failure(IanFailure(PROCESSING_FAILURE,
                                       "internal error; nothing was applied")), None
        record_study(self._audit, informant=calling, host=host, requested=True,
                     study_uid=study_uid, completed=applied.subjects, type_codes=IAN)
        for subject, found in applied.flagged:
            record_conflict(self._audit, informant=calling, host=host, subject=subject,
                            found_study=found)
        if self._metrics is not None:
            self._metrics.reconcile_outcomes("ian", applied.counts())
        log.info("IAN from %s: %d item(s) completed, %d kept, %d conflict(s)", calling,
                 len(applied.completed), len(applied.kept), len(applied.conflicts))
        return SUCCESS, Dataset()

    def _well_formed(self, event: evt.Event, encoded: Any) -> None:
        if encoded is None:
            return
        syntax = event.context.transfer_syntax
        try:
            check_data_set(encoded.getvalue(), implicit_vr=syntax.is_implicit_VR,
                           little_endian=syntax.is_little_endian, deflated=syntax.is_deflated,
                           limit=self._max_data_set_bytes)
        except MalformedDataSet as exc:
            log.warning("IAN N-CREATE: attribute list is malformed: %s", exc)
            raise IanFailure(INVALID_VALUE, "the attribute list cannot be decoded") from None

    def notified(self, what: Notified, *, calling_aet: str = "") -> Applied:
        """Apply one notification (callable without a network). Raises IanFailure."""
        if what.instances == 0:
            return Applied()  # nothing available yet: nothing to complete
        study = StudyAnswer(study_uid=what.study_uid, series=what.series,
                            instances=what.instances)
        now = datetime.now(UTC)

        def job(tx: StoreTx) -> Applied:
            return pushed(tx, study, source=Source.IAN, pacs=f"IAN from {calling_aet or '?'}",
                          reporter=self._messages, now=now)

        try:
            result = self._store.write_one(job)
        except StoreError as exc:
            log.error("IAN not applied: %s", exc)
            raise IanFailure(PROCESSING_FAILURE,
                             "the store failed; nothing was applied, please retry") from None
        if result.queued:
            self._notify()
        return result


def _calling_aet(event: evt.Event) -> str:
    try:
        return shown(str(event.assoc.requestor.ae_title).strip(), 16)
    except AttributeError:
        return ""


def _peer_host(event: evt.Event) -> str:
    try:
        return str(event.assoc.requestor.address)
    except AttributeError:
        return ""


def _failure(exc: IanFailure) -> Dataset:
    status = Dataset()
    status.Status = exc.status
    status.ErrorComment = exc.comment[:64]
    if exc.tag:
        status.AttributeIdentifierList = [Tag(exc.tag)]
    return status
