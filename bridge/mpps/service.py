"""The MPPS SCP: N-CREATE and N-SET of Modality Performed Procedure Step (PS3.4 Annex F).

It runs on the worklist's AE: the application layer hands it to ``WorklistSCP``
as a ``DicomService`` (bridge/worklist/scp.py), which adds its
``supported_contexts`` to the AE and its ``handlers()`` to the server.

Threads: the handlers run in pynetdicom's association threads and call the
store directly (``Store.write`` is thread-safe and serialised). One N-CREATE or
N-SET is one transaction: the MPPS instance, the status of every linked
procedure step and the outbound status messages (both through
``bridge.steps.change_status``) are committed together. After the commit,
``notify`` wakes the outbox sender; it must be safe to call from any thread
(the sender's ``wake``, which uses ``loop.call_soon_threadsafe``).

Statuses sent: 0x0000, or the failures listed in validate.py plus 0x0111
(duplicate SOP Instance), 0x0112 (N-SET on an unknown instance), 0x0117 (a
malformed Affected SOP Instance UID), 0x0118 (a request naming another SOP
class), 0x0110 with Error ID 0xA710 (N-SET after COMPLETED/DISCONTINUED),
0x0110 when the store fails (nothing was applied; the modality may retry).
Every failure carries an Error Comment naming the attribute or the reason,
never a value. The table is in docs/conformance-statement.md, section 7.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET

# pynetdicom makes its SOP classes at import time (into the module's globals()), so
# a type checker cannot see them.
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.dicomwire import MalformedDataSet, check_data_set
from bridge.logsafe import shown
from bridge.mpps import linking
from bridge.mpps.forward import Received, forward_rows, received_as_is
from bridge.mpps.settings import MppsSettings
from bridge.mpps.unscheduled import order_from_mpps
from bridge.mpps.validate import (
    DUPLICATE_INSTANCE,
    ERROR_ID_FINAL,
    INVALID_INSTANCE,
    NO_SUCH_INSTANCE,
    NO_SUCH_SOP_CLASS,
    PROCESSING_FAILURE,
    MppsFailure,
    check_create,
    check_final,
    check_set,
    merge,
    valid_uid,
)
from bridge.steps import (
    MPPS_FINAL,
    ORC5_FOR_MPPS,
    SPS_FOR_MPPS,
    Reporter,
    Source,
    StatusChange,
    StepState,
    change_status,
    report,
)
from bridge.store import mpps_forward_tx, mpps_tx
from bridge.store.base import Store, StoreError, StoreTx
from bridge.store.mpps_tx import StepRecord

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

LOGGER = logging.getLogger(__name__)

SUCCESS = 0x0000
MPPS_SOP_CLASS = ModalityPerformedProcedureStep

_Response = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class MppsOutcome:
    """What one request did (for logs and tests)."""

    sop_instance_uid: str
    mpps_id: int
    status: str
    steps_changed: tuple[int, ...] = ()
    steps_kept: tuple[int, ...] = ()
    messages: int = 0
    scheduled: bool = True
    forwarded: int = 0  # rows queued for the MPPS forwarding destinations


class MppsService:
    """N-CREATE/N-SET handling over ``store``; see the module docstring."""

    supported_contexts: tuple[str, ...] = (MPPS_SOP_CLASS,)

    def __init__(self, store: Store, settings: MppsSettings, *,
                 messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None,
                 max_data_set_bytes: int = 4 * 1024 * 1024,
                 metrics: Metrics | None = None,
                 forward_to: Sequence[str] = (),
                 notify_forward: Callable[[], None] | None = None,
                 audit: AuditTrail = NO_AUDIT) -> None:
        self._store = store
        self._audit = audit  # a Procedure Record event per N-CREATE/N-SET
        self._metrics = metrics  # N-CREATE/N-SET by resulting status
        self._settings = settings
        self._messages = messages
        self._notify = notify or (lambda: None)
        # dicom.max_message_bytes: how far a deflated attribute list may inflate.
        self._max_data_set_bytes = max_data_set_bytes
        # MPPS forwarding (forward.py): every accepted request is queued for each of
        # these destinations in its own transaction; notify_forward wakes the forwarder.
        self._forward_to = tuple(forward_to)
        self._notify_forward = notify_forward or (lambda: None)

    def handlers(self) -> list[tuple[Any, Callable[[evt.Event], _Response]]]:
        return [(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)]

    # --- pynetdicom handlers (association threads) ---

    def _on_create(self, event: evt.Event) -> _Response:
        # pynetdicom types Event.request as any DIMSE request; EVT_N_CREATE's is an N-CREATE.
        request = cast(N_CREATE, event.request)
        uid = str(request.AffectedSOPInstanceUID or "")
        calling = _calling_aet(event)
        try:
            if request.AffectedSOPClassUID != MPPS_SOP_CLASS:
                raise MppsFailure(NO_SUCH_SOP_CLASS, "only MPPS is served here")
            _well_formed(event, request.AttributeList, "N-CREATE", "attribute list", calling,
                         self._max_data_set_bytes)
            received = _received(event, request.AttributeList)
            ds = _decoded_or_fail(lambda: event.attribute_list, "N-CREATE", "attribute list",
                                  calling)
            outcome = self.create(uid or None, ds, calling_aet=calling, received=received)
        except MppsFailure as exc:
            LOGGER.info("MPPS N-CREATE from %s refused: %s", calling, exc)
            self._count("n_create", "refused")
            self._audited(event, uid, create=True, reason=str(exc))
            return _failure(exc, with_tags=False), None
        except Exception as exc:  # noqa: BLE001 - the association and the SCP stay up
            self._count("n_create", "failed")
            return _internal(exc, "N-CREATE"), None
        self._count("n_create", outcome.status)
        self._audited(event, outcome.sop_instance_uid, create=True, status=outcome.status)
        reply = Dataset()
        if not uid:
            # pynetdicom moves it into the response's Affected SOP Instance UID.
            reply.AffectedSOPInstanceUID = outcome.sop_instance_uid
        return SUCCESS, reply

    def _on_set(self, event: evt.Event) -> _Response:
        # pynetdicom types Event.request as any DIMSE request; EVT_N_SET's is an N-SET.
        request = cast(N_SET, event.request)
        uid = str(request.RequestedSOPInstanceUID or "")
        calling = _calling_aet(event)
        try:
            if request.RequestedSOPClassUID != MPPS_SOP_CLASS:
                raise MppsFailure(NO_SUCH_SOP_CLASS, "only MPPS is served here")
            _well_formed(event, request.ModificationList, "N-SET", "modification list",
                         calling, self._max_data_set_bytes)
            received = _received(event, request.ModificationList)
            changes = _decoded_or_fail(lambda: event.modification_list, "N-SET",
                                       "modification list", calling)
            outcome = self.update(uid, changes, received=received)
        except MppsFailure as exc:
            LOGGER.info("MPPS N-SET from %s refused: %s", calling, exc)
            self._count("n_set", "refused")
            self._audited(event, uid, create=False, reason=str(exc))
            return _failure(exc, with_tags=True), None
        except Exception as exc:  # noqa: BLE001 - the association and the SCP stay up
            self._count("n_set", "failed")
            return _internal(exc, "N-SET"), None
        self._count("n_set", outcome.status)
        self._audited(event, uid, create=False, status=outcome.status)
        return SUCCESS, None

    def _audited(self, event: evt.Event, uid: str, *, create: bool, status: str = "",
                 reason: str = "") -> None:
        if not self._audit.enabled:
            return
        requestor = getattr(event.assoc, "requestor", None)
        self._audit.procedure(calling_ae=_calling_aet(event),
                              host=str(getattr(requestor, "address", "")), create=create,
                              mpps_uid=uid, status=status, success=not reason, reason=reason)

    def _count(self, operation: str, status: str) -> None:
        if self._metrics is not None:
            self._metrics.mpps(operation, status)

    # --- the work, callable without a network ---

    def create(self, uid: str | None, ds: Dataset, *, calling_aet: str = "",
               received: Received | None = None) -> MppsOutcome:
        """Store a new MPPS, update its steps, queue status messages and forwards
        (``received``: the attribute list as it came in; None: encode ``ds``).
        Raises MppsFailure."""
        if uid is not None and not valid_uid(uid):
            raise MppsFailure(INVALID_INSTANCE, "Affected SOP Instance UID is not a valid UID")
        check_create(ds)
        sop_uid = uid or generate_uid()
        if received is None and self._forward_to:
            received = received_as_is(ds)
        ds.SOPClassUID = MPPS_SOP_CLASS
        ds.SOPInstanceUID = sop_uid

        def job(tx: StoreTx) -> MppsOutcome:
            if mpps_tx.find_mpps(tx, sop_uid) is not None:
                raise MppsFailure(DUPLICATE_INSTANCE, "an MPPS with this SOP Instance UID "
                                                      "exists already")
            steps = self._link(tx, ds)
            mpps_id = mpps_tx.insert_mpps(
                tx, sop_instance_uid=sop_uid, status=str(ds.PerformedProcedureStepStatus),
                calling_aet=calling_aet, station_aet=_text(ds, "PerformedStationAETitle"),
                modality=_text(ds, "Modality"), item=ds, step_ids=[s.id for s in steps])
            forwarded = self._forward(tx, mpps_id, sop_uid, mpps_forward_tx.N_CREATE, received)
            return replace(self._apply(tx, mpps_id, sop_uid, ds, steps), forwarded=forwarded)

        outcome = self._write(job)
        LOGGER.info("MPPS %s created (IN PROGRESS) by %s: %s", sop_uid, calling_aet or "?",
                    _summary(outcome))
        return outcome

    def update(self, uid: str, changes: Dataset, *,
               received: Received | None = None) -> MppsOutcome:
        """Apply an N-SET (``received``: the modification list as it came in; None:
        encode ``changes``). Raises MppsFailure."""
        if received is None and self._forward_to:
            received = received_as_is(changes)

        def job(tx: StoreTx) -> MppsOutcome:
            record = mpps_tx.find_mpps(tx, uid)
            if record is None:
                raise MppsFailure(NO_SUCH_INSTANCE, "no MPPS with this SOP Instance UID")
            if record.status in MPPS_FINAL:
                raise MppsFailure(PROCESSING_FAILURE,
                                  f"the MPPS is {record.status} and may no longer be updated",
                                  error_id=ERROR_ID_FINAL)
            check_set(record.item, changes)
            merged = merge(record.item, changes)
            check_final(merged, final_state_checks=self._settings.final_state_checks)
            status = _text(merged, "PerformedProcedureStepStatus")
            mpps_tx.update_mpps(tx, record.id, status=status, item=merged)
            forwarded = self._forward(tx, record.id, uid, mpps_forward_tx.N_SET, received)
            if status == record.status:
                return MppsOutcome(uid, record.id, status, scheduled=bool(record.step_ids),
                                   forwarded=forwarded)
            steps = mpps_tx.steps_by_id(tx, record.step_ids)
            if not steps:
                # Unscheduled so far: the order may have arrived since the N-CREATE.
                steps = self._link(tx, merged)
                if steps:
                    mpps_tx.link_steps(tx, record.id, [s.id for s in steps])
            return replace(self._apply(tx, record.id, uid, merged, steps), forwarded=forwarded)

        outcome = self._write(job)
        LOGGER.info("MPPS %s set to %s: %s", uid, outcome.status, _summary(outcome))
        return outcome

    def _write(self, job: Callable[[StoreTx], MppsOutcome]) -> MppsOutcome:
        try:
            result = self._store.write_one(job)
        except StoreError as exc:
            LOGGER.error("MPPS not stored: %s", exc)
            raise MppsFailure(PROCESSING_FAILURE,
                              "the store failed; nothing was applied, please retry") from None
        if result.messages:
            self._notify()
        if result.forwarded:
            self._notify_forward()
        return result

    def _forward(self, tx: StoreTx, mpps_id: int, uid: str, operation: str,
                 received: Received | None) -> int:
        """Queue the request as received for every forwarding destination, in the
        MPPS's own transaction (bridge/store/mpps_forward_tx.py)."""
        if not self._forward_to or received is None:
            return 0
        return len(mpps_forward_tx.enqueue(
            tx, forward_rows(self._forward_to, uid, operation, received, mpps_id)))

    def _link(self, tx: StoreTx, ds: Dataset) -> list[StepRecord]:
        keys = tuple(self._settings.match_keys)
        found: list[StepRecord] = []
        for item in linking.scheduled_items(ds):
            key, steps = linking.link_item(
                item, keys, lambda where: mpps_tx.find_steps(tx, where), lambda s: s.item)
            if key is None:
                LOGGER.info("an MPPS scheduled step item matched no worklist item "
                            "(keys tried: %s)", ", ".join(keys))
            found.extend(steps)
        return linking.unique_by_id(found, lambda s: s.id)

    def _apply(self, tx: StoreTx, mpps_id: int, uid: str, mpps: Dataset,
               steps: Sequence[StepRecord]) -> MppsOutcome:
        """Move each linked step's status and queue the status messages."""
        status = _text(mpps, "PerformedProcedureStepStatus")
        changed, kept = [], []
        queued = 0
        now = datetime.now().astimezone()
        for step in steps:
            update = change_status(
                tx, StepState(step.id, step.sps_status, step.item), SPS_FOR_MPPS[status],
                source=Source.MPPS, reporter=self._messages, mpps=mpps, mpps_id=mpps_id,
                now=now)
            if not update.decision.changed:
                # The conflict rule (bridge/steps/rules.py): logged without patient data.
                LOGGER.info("MPPS %s: procedure step %d keeps %s (%s)", uid, step.id,
                            update.decision.status, update.decision.reason)
                kept.append(step.id)
                continue
            changed.append(step.id)
            queued += update.queued
        if not steps and self._settings.unscheduled == "emit" and self._messages is not None:
            queued += report(tx, [StatusChange(
                order=order_from_mpps(mpps), mpps=mpps, status=ORC5_FOR_MPPS[status],
                sps_status=SPS_FOR_MPPS[status], scheduled=False, order_key=f"mpps:{uid}",
                mpps_id=mpps_id)], self._messages, now=now)
        return MppsOutcome(uid, mpps_id, status, tuple(changed), tuple(kept), queued,
                           scheduled=bool(steps))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _received(event: evt.Event, encoded: Any) -> Received | None:
    """The request's data set as the modality sent it, for forwarding: its bytes and
    the transfer syntax they are in (deflated ones stay deflated)."""
    if encoded is None:
        return None
    return Received(bytes(encoded.getvalue()), str(event.context.transfer_syntax))


def _decoded(ds: Dataset | None) -> Dataset:
    """The request's dataset with text in Unicode and no Specific Character Set, as
    the store keeps every item."""
    if ds is None:
        return Dataset()
    ds.decode()
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    # Walk every element once so that a malformed value fails here, not in the store.
    for _ in ds.iterall():
        pass
    return ds


def _well_formed(event: evt.Event, encoded: Any, operation: str, what: str, calling: str,
                 limit: int) -> None:
    """Refuse (0x0110) a data set that is not well formed: pydicom would read a
    truncated or garbled one as a shorter one without a word (bridge.dicomwire)."""
    if encoded is None:
        return
    syntax = event.context.transfer_syntax
    try:
        check_data_set(encoded.getvalue(), implicit_vr=syntax.is_implicit_VR,
                       little_endian=syntax.is_little_endian, deflated=syntax.is_deflated,
                       limit=limit)
    except MalformedDataSet as exc:
        # The reason names tags and byte offsets, never values.
        LOGGER.warning("MPPS %s from %s: %s is malformed: %s", operation, calling, what, exc)
        raise MppsFailure(PROCESSING_FAILURE, f"the {what} cannot be decoded") from None


def _decoded_or_fail(read: Callable[[], Dataset], operation: str, what: str,
                     calling: str) -> Dataset:
    """The request's data set, or the failure the peer gets when it can't be decoded."""
    try:
        return _decoded(read())
    except Exception as exc:  # noqa: BLE001 - whatever the peer sent, answer it
        LOGGER.warning("MPPS %s from %s: %s cannot be decoded (%s)", operation, calling, what,
                       type(exc).__name__)
        raise MppsFailure(PROCESSING_FAILURE, f"the {what} cannot be decoded") from None


def _calling_aet(event: evt.Event) -> str:
    """The calling AE title, made safe for log lines (it is only logged and stored)."""
    try:
        return shown(str(event.assoc.requestor.ae_title).strip(), 16)
    except AttributeError:
        return ""


def _failure(exc: MppsFailure, *, with_tags: bool) -> Dataset:
    status = Dataset()
    status.Status = exc.status
    status.ErrorComment = exc.comment[:64]
    if exc.error_id is not None:
        status.ErrorID = exc.error_id
    if with_tags and exc.tags:
        status.AttributeIdentifierList = list(exc.tags)
    return status


def _internal(exc: BaseException, what: str) -> Dataset:
    # Only the type: a driver's or pydicom's message may quote a value.
    LOGGER.error("MPPS %s failed: %s", what, type(exc).__name__)
    LOGGER.debug("MPPS %s failure", what, exc_info=exc)
    return _failure(MppsFailure(PROCESSING_FAILURE, "internal error; nothing was applied"),
                    with_tags=False)


def _summary(outcome: MppsOutcome) -> str:
    parts = [f"{len(outcome.steps_changed)} step(s) changed"]
    if outcome.steps_kept:
        parts.append(f"{len(outcome.steps_kept)} kept")
    if not outcome.scheduled:
        parts.append("unscheduled")
    parts.append(f"{outcome.messages} status message(s) queued")
    return ", ".join(parts)
