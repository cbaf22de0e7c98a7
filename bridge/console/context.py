"""What the console is given by the application layer (bridge/app/services.py).

The console constructs none of its collaborators: the store, the daemon's
``submit`` (its CommitQueue), the one Reporter, the sender's ``wake``, the
replay of a dead letter through the daemon's intake, the current mappings and
the settings in effect all come in here, as values, protocols and callables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.console.settings import AdminSettings
from bridge.mapping.engine import MappingSet
from bridge.steps import Reporter
from bridge.store import Store, StoreTx, Submit


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What replaying a message did (the daemon's intake, as ``messages replay``)."""

    message_id: int | None  # the new message log row
    ack_code: str
    summary: str  # the outcome, or the reason for a rejection
    ack: bytes


# Runs in the transaction that records the replayed message (the audit row of the
# replay: both are committed, or neither); also when only it is written (the
# mapping files do not load).
ReplayHook = Callable[[StoreTx, ReplayResult], None]


@dataclass(frozen=True, slots=True)
class PlainAnswer:
    """A response of an endpoint served as is (e.g. /metrics from bridge.telemetry)."""

    status: int
    content_type: str
    body: bytes


class StudyPushHook(Protocol):
    """A PACS says a study is complete (bridge.reconcile.StudyPush; Orthanc's
    OnStableStudy calls ``POST /api/reconcile/study``): what it completed, kept
    and flagged, as step ids."""

    async def __call__(self, *, study_uid: str, accession: str = "", patient_id: str = "",
                       series: int = -1, instances: int = -1, pacs: str = "push",
                       user: str = "", host: str = "") -> dict[str, Any]: ...


@dataclass
class ConsoleContext:
    settings: AdminSettings
    store: Store
    submit: Submit
    reporter: Reporter | None  # None: no status messages go out for operator actions
    notify: Callable[[], None]  # wake the outbox sender after queuing messages
    replay: Callable[[int, ReplayHook | None], Awaitable[ReplayResult]]
    mappings: Callable[[], MappingSet]  # the set the daemon maps with now
    check_mappings: Callable[[], list[str]]  # load the files from disk: problems, or []
    charset: str = "ascii"  # for decoding pasted messages: mllp.default_charset ...
    charset_aliases: Mapping[str, str] = field(default_factory=dict)  # ... and its aliases
    config: Callable[[], dict[str, Any]] = dict  # the settings in effect, as JSON
    instances: Callable[[], list[dict[str, Any]]] = list
    live: Callable[[], dict[str, Any]] = dict  # extra dashboard figures (telemetry)
    # Public endpoints served as they are, by path (e.g. /metrics, /healthz, /readyz).
    plain: Mapping[str, Callable[[], Awaitable[PlainAnswer]]] = field(default_factory=dict)
    version: str = ""
    study_push: StudyPushHook | None = None  # None: POST /api/reconcile/study answers 404
    audit: AuditTrail = NO_AUDIT  # User Authentication events: logins and logouts
