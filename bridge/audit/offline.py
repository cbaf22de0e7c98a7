"""Audit events of commands run outside the daemon (``mwl-bridge import``,
``messages replay``, ``outbox retry``, ``mpps forward retry``): written straight into
the spool and local copy of the configured store, in the command's own transaction
where it has one, when ``audit.enabled`` is set in the configuration the command
reads. The daemon's ``audit-deliver`` thread sends them (now, or after its next
start); the command itself never connects to a repository.

The operator is the OS user running the command (``getpass.getuser()``) on this
host: the CLI has no login of its own.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.audit import events
from bridge.audit.events import AuditEvent, Local
from bridge.audit.message import AuditSource
from bridge.audit.service import local_participant, spool_event
from bridge.audit.settings import AuditSettings
from bridge.store import atna_tx
from bridge.store.base import Store, StoreTx

log = logging.getLogger(__name__)

ROLE = "cli"  # AlternativeUserID of the operator: the action came from the command line
MAX_IDS = 100  # ids named in one action's object; beyond, the count


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (e.g. no passwd entry): the uid
        import os

        return f"uid:{os.getuid()}"


class _Dicom(Protocol):
    @property
    def ae_title(self) -> str: ...


class CommandSettings(Protocol):
    """What a command's configuration gives the audit: bridge.app's Settings, seen
    structurally, since bridge.audit is below bridge.app and may not import it
    (tests/test_layers.py)."""

    @property
    def audit(self) -> AuditSettings: ...

    @property
    def dicom(self) -> _Dicom: ...


class OfflineAudit:
    """What one command records; does nothing when audit is off."""

    def __init__(self, settings: AuditSettings, ae_title: str) -> None:
        self.enabled = settings.enabled
        self._source = AuditSource(settings.source_id, settings.enterprise_site_id)
        self._names = [r.name for r in settings.repositories]
        self.local: Local = local_participant(ae_title)
        self.user = os_user()
        self.host = socket.gethostname()

    @classmethod
    def from_settings(cls, settings: CommandSettings) -> OfflineAudit:
        """The audit of a command reading ``settings``: its audit section, and the
        bridge's own AE title as the local participant."""
        return cls(settings.audit, settings.dicom.ae_title)

    def spool(self, tx: StoreTx, built: Sequence[AuditEvent]) -> None:
        """Inside the caller's transaction: kept and queued for every repository."""
        if self.enabled and built:
            atna_tx.spool(tx, [spool_event(e, self._source) for e in built], self._names)

    def record(self, store: Store, built: Sequence[AuditEvent]) -> None:
        """In a transaction of its own (after the command's work committed)."""
        if not self.enabled or not built:
            return
        store.write_one(lambda tx: self.spool(tx, built))

    def action(self, action: str, target_kind: str, ids: Sequence[object]) -> AuditEvent:
        """An operator action on rows of no one patient (a re-queue, a replay): the
        console's "Other operator action" (docs/audit.md), with the OS user."""
        shown = ",".join(str(i) for i in list(ids)[:MAX_IDS])
        if len(ids) > MAX_IDS:
            shown += f",... ({len(ids)} in all)"
        return events.operator_action(self.local, user=self.user, role=ROLE, action=action,
                                      target_kind=target_kind, target_id=shown,
                                      host=self.host)

    def audited_requeue(self, action: str, target_kind: str,
                        requeue: Callable[[StoreTx, list[int]], list[int]]
                        ) -> Callable[[StoreTx, list[int]], list[int]]:
        """``requeue`` that also records what it re-queued, in the same transaction."""
        def job(tx: StoreTx, ids: list[int]) -> list[int]:
            changed = requeue(tx, ids)
            if changed:
                self.spool(tx, [self.action(action, target_kind, changed)])
            return changed

        return job
