"""From one procedure status change to the outbox rows for every destination.

Pure (no I/O): ``StatusMessages`` is the ``bridge.steps.Reporter`` the
application layer hands to every source of status changes; ``change_status``
calls ``for_change`` inside the store transaction that changes the status, and
queues what it returns in the same transaction.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom import Dataset

from bridge.outbound.profile import BuildError, OutboundProfile
from bridge.outbound.profile import convert as _convert
from bridge.steps import StatusChange
from bridge.store.outbox_tx import NewMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Destination:
    """One receiver of status messages, with its profile resolved."""

    name: str
    profile: OutboundProfile
    msh18: str  # as written into MSH-18 ('' for ASCII)
    codec: str  # the Python codec MSH-18 stands for
    receiving_application: str = ""
    receiving_facility: str = ""
    events: frozenset[str] = frozenset({"IP", "CM", "DC"})


def new_control_id(now: datetime) -> str:
    """MSH-10: 20 characters, the time then 8 random hex digits.

    Unique without a counter, so a restart or a rebuilt database can never
    reuse an ID that a receiver would drop as a duplicate.
    """
    return f"{now:%y%m%d%H%M%S}{secrets.token_hex(4).upper()}"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def event_time(mpps: Dataset, status: str, now: datetime) -> str:
    """The HL7 TS of the change: the step's start for IP, its end for CM/DC, else now."""
    prefix = "PerformedProcedureStepStart" if status == "IP" else "PerformedProcedureStepEnd"
    date, time = _text(mpps, prefix + "Date"), _text(mpps, prefix + "Time")
    if date:
        return str(_convert("TS", date + time))
    return f"{now:%Y%m%d%H%M%S}"


class StatusMessages:
    """Builds the outbox rows of status changes for the configured destinations."""

    def __init__(self, destinations: Sequence[Destination], *, sending_application: str,
                 sending_facility: str, processing_id: str = "P",
                 control_ids: Callable[[datetime], str] = new_control_id) -> None:
        self.destinations = tuple(destinations)
        self._control_ids = control_ids
        self._sender = {"sending_application": sending_application,
                        "sending_facility": sending_facility, "processing_id": processing_id}

    def for_change(self, change: StatusChange, *, now: datetime | None = None,
                   ) -> list[NewMessage]:
        now = now or datetime.now().astimezone()
        out = []
        for dest in self.destinations:
            if change.status not in dest.events:
                continue
            variables = {
                **self._sender,
                "status": change.status, "sps_status": change.sps_status,
                "order_control": change.order_control,
                "mpps_status": _text(change.mpps, "PerformedProcedureStepStatus"),
                "scheduled": "Y" if change.scheduled else "",
                "now": f"{now:%Y%m%d%H%M%S}",
                "event_time": event_time(change.mpps, change.status, now),
                "receiving_application": dest.receiving_application,
                "receiving_facility": dest.receiving_facility,
                "destination": dest.name,
            }
            control_id = self._control_ids(now)

            def row(payload: bytes, dead_reason: str = "", *, dest: Destination = dest,
                    control_id: str = control_id) -> NewMessage:
                return NewMessage(destination=dest.name, order_key=change.order_key,
                                  event=change.status, message_type=dest.profile.event_type,
                                  control_id=control_id, payload=payload,
                                  mpps_id=change.mpps_id, step_id=change.step_id,
                                  dead_reason=dead_reason)

            try:
                built = dest.profile.build(change.order, change.mpps, variables,
                                           control_id=control_id, msh18=dest.msh18,
                                           codec=dest.codec)
            except BuildError as exc:
                log.error("status message %s for %s cannot be built with profile %s: %s; "
                          "it is kept as a dead letter", control_id, dest.name,
                          dest.profile.name, exc)
                out.append(row(b"", f"cannot build: {exc}"))
                continue
            for warning in built.warnings:
                log.warning("status message %s for %s: %s", control_id, dest.name, warning)
            out.append(row(built.text.encode(dest.codec, errors="replace")))
        return out
