"""The audit service: the spool thread and the delivery thread behind an AuditTrail.

- ``audit-spool`` drains the trail's queue in batches: builds each event, renders
  its message, and keeps it in the store (``atna_event``, the local copy) with one
  delivery row per repository (``atna_delivery``, the spool), one transaction per
  batch. It also turns the operator console's action log (``audit_log``) into
  audit events, says in a Security Alert when events were dropped, and applies
  retention (``audit.retention_days``, ``audit.max_pending``).
- ``audit-deliver`` sends each repository its waiting events in event order, as
  RFC 5424 syslog over TLS or UDP; a delivered row is deleted, a failure holds
  that repository back (doubling from ``retry_initial_s`` to ``retry_max_s``).
  Whatever is waiting at a stop is sent after the next start.

Both threads write through ``Store.write`` (the store serialises writers); neither
is ever waited for by clinical traffic.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bridge.audit import codes, events
from bridge.audit.events import AuditEvent, Local
from bridge.audit.message import AuditSource, render
from bridge.audit.metrics import AuditMetrics
from bridge.audit.settings import AuditRepository, AuditSettings
from bridge.audit.syslog import TlsTransport, Transport, UdpTransport, frame
from bridge.audit.trail import AuditTrail, Entry
from bridge.store import atna_tx
from bridge.store.atna_tx import SpoolEvent
from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import reading, stamp
from bridge.tls import client_context

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0
CONSOLE_LOOK_S = 1.0  # how often the console's action log is read for new rows
APP_NAME = "mwl-bridge"


def local_participant(ae_title: str) -> Local:
    return Local(ae_title, str(os.getpid()), socket.gethostname())


def make_trail(settings: AuditSettings, ae_title: str) -> AuditTrail:
    return AuditTrail(local_participant(ae_title), queue_size=settings.queue_size,
                      enabled=settings.enabled)


def spool_event(event: AuditEvent, source: AuditSource) -> SpoolEvent:
    subjects = ([("patient", p) for p in event.patients]
                + [("user", u) for u in event.users("user")]
                + [("ae", a) for a in event.users("ae", "app")])
    return SpoolEvent(at=stamp(event.at), event_id=event.event_id.code,
                      event_name=event.event_id.meaning, action=event.action,
                      outcome=event.outcome,
                      type_codes=" ".join(c.code for c in event.type_codes),
                      message=render(event, source), subjects=tuple(subjects))


def transport_for(repository: AuditRepository, index: int) -> Transport:
    """Raises bridge.tls.TlsConfigError for unreadable TLS files."""
    if repository.transport == "udp":
        return UdpTransport(repository.host, repository.port)
    context = client_context(repository.tls, f"audit.repositories[{index}].tls")
    assert context is not None  # the settings insist on tls.enabled for tls
    return TlsTransport(repository.host, repository.port, context,
                        server_name=repository.tls.server_hostname or repository.host,
                        timeout_s=repository.connect_timeout_s)


class AuditService:
    """See the module docstring; ``start``/``stop`` are the daemon's Service shape."""

    name = "audit"

    def __init__(self, settings: AuditSettings, store: Store, trail: AuditTrail, *,
                 metrics: Metrics | None = None,
                 transports: Callable[[AuditRepository, int], Transport] = transport_for,
                 reloads: Callable[[], tuple[int, int]] | None = None) -> None:
        self._settings = settings
        self._store = store
        self.trail = trail
        trail.store = store
        self._source = AuditSource(settings.source_id, settings.enterprise_site_id)
        self._names = [r.name for r in settings.repositories]
        # Who claims spooled events (several instances on one database), and for how
        # long: the longest attempt, connect and TLS handshake, twice, and a margin.
        self._instance = f"audit-{uuid.uuid4().hex[:12]}"
        self._lease_s = {r.name: 2 * (r.connect_timeout_s + r.tls.handshake_timeout_s) + 10
                         for r in settings.repositories}
        # Built now: a bad TLS file stops start-up with the setting named.
        self._transports = {r.name: transports(r, i)
                            for i, r in enumerate(settings.repositories)}
        self._metrics = AuditMetrics(None if metrics is None else metrics.registry,
                                     trail=trail, depth=lambda: atna_tx.depth(store))
        self._stopping = threading.Event()  # the spool thread: drain, then end
        self._stop_delivery = threading.Event()  # the delivery thread: a last pass, then end
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_console_id = 0
        # (reloads done, reloads refused) of the mapping files: each a Security Alert.
        self._reloads = reloads
        self._reloads_seen = reloads() if reloads is not None else (0, 0)
        self._next_console_look = 0.0
        self._next_purge = 0.0

    # --- Service ---

    async def start(self) -> None:
        if not self._settings.enabled:
            return
        import asyncio

        self._last_console_id = await asyncio.to_thread(_last_console_action, self._store)
        self._stopping.clear()
        self._stop_delivery.clear()
        self._threads = [threading.Thread(target=self._spool_loop, name="audit-spool",
                                          daemon=True)]
        if self._names:
            self._threads.append(threading.Thread(target=self._deliver_loop,
                                                  name="audit-deliver", daemon=True))
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        if not self._threads:
            return
        import asyncio

        self._stopping.set()
        spool, *deliver = self._threads
        await asyncio.to_thread(spool.join)
        self._stop_delivery.set()  # after the spool: the last events get their chance
        self._wake.set()
        for t in deliver:
            await asyncio.to_thread(t.join)
        self._threads = []
        for transport in self._transports.values():
            transport.close()

    # --- audit-spool ---

    def _spool_loop(self) -> None:
        # The start and the stop go in directly: a full queue must not lose them.
        try:
            self._spool([events.application_activity(self.trail.local, start=True)])
        except Exception:
            log.exception("the audit event of the start could not be spooled")
        while True:
            stopping = self._stopping.is_set()
            if stopping:  # the last batches also look at the console's log and the mappings
                self._next_console_look = 0.0
            entries = self.trail.take(self._settings.batch, 0 if stopping else 0.5)
            try:
                self._spool(entries)
            except Exception:
                log.exception("audit events could not be spooled; retrying")
                if stopping:
                    return
                time.sleep(1.0)
                continue
            if stopping and not entries and self.trail.waiting == 0:
                try:
                    self._spool([events.application_activity(self.trail.local, start=False)])
                except Exception:
                    log.exception("the audit event of the stop could not be spooled")
                return

    def _spool(self, entries: Sequence[Entry]) -> None:
        built: list[AuditEvent] = []
        for entry in entries:
            try:
                event = entry if isinstance(entry, AuditEvent) else entry(self.trail.local)
            except Exception:
                log.exception("an audit event could not be built")
                continue
            if event is not None:
                built.append(event)
        if time.monotonic() >= self._next_console_look:
            self._next_console_look = time.monotonic() + CONSOLE_LOOK_S
            built += self._console_actions()
            built += self._mapping_reloads()
        dropped = self.trail.unreported_drops()
        if dropped:
            built.append(events.security_alert(
                self.trail.local, type_code=codes.AUDIT_RECORDING_STOPPED, what="audit queue",
                outcome=events.SERIOUS_FAILURE,
                outcome_text=f"{dropped} audit event(s) dropped: the audit queue was full"))
        now = time.monotonic()
        purge = now >= self._next_purge
        if not built and not purge:
            return
        rows = [spool_event(e, self._source) for e in built]

        def job(tx: StoreTx) -> tuple[int, int, int]:
            atna_tx.spool(tx, rows, self._names)
            removed = undelivered = given_up = 0
            if purge:
                cutoff = stamp(datetime.now(UTC) - timedelta(days=self._settings.retention_days))
                removed, undelivered = atna_tx.purge(tx, before=cutoff)
                for name in self._names:
                    given_up += atna_tx.give_up_beyond(tx, name, self._settings.max_pending)
            return removed, undelivered, given_up

        result = self._store.write_one(job)
        if purge:
            self._next_purge = now + PURGE_EVERY_S
            removed, undelivered, given_up = result
            if removed:
                log.info("audit retention: %d event(s) older than %d days removed", removed,
                         self._settings.retention_days)
            if undelivered or given_up:
                log.warning("audit: %d event(s) given up undelivered (retention or "
                            "audit.max_pending)", undelivered + given_up)
                self._metrics.given_up(undelivered + given_up)
                self.trail.security_alert(
                    codes.AUDIT_RECORDING_STOPPED, "audit spool",
                    reason=f"{undelivered + given_up} audit event(s) given up undelivered")
        self._metrics.recorded(len(rows))
        if rows:
            self._wake.set()

    def _console_actions(self) -> list[AuditEvent]:
        """The console's action log rows since the last look, as audit events."""
        from bridge.store import audit_tx, browse

        rows, _total = audit_tx.search(self._store, limit=200)
        fresh = sorted((r for r in rows if r.id > self._last_console_id), key=lambda r: r.id)
        out = []
        for r in fresh:
            self._last_console_id = r.id
            pid = ""
            accessions: tuple[str, ...] = ()
            if r.target_kind == "step" and r.target_id.isdigit():
                # The console's log keeps the scheduling; the step names the patient.
                step = browse.get_step(self._store, int(r.target_id))
                if step is not None:
                    pid = str(step.item.get("PatientID", "") or "")
                    accession = str(step.item.get("AccessionNumber", "") or "")
                    accessions = (accession,) if accession else ()
            out.append(events.operator_action(
                self.trail.local, user=r.actor, role=r.role, action=r.action,
                target_kind=r.target_kind, target_id=r.target_id, host=r.peer,
                patient_id=pid, accessions=accessions))
        return out

    def _mapping_reloads(self) -> list[AuditEvent]:
        if self._reloads is None:
            return []
        (done, refused), (seen_done, seen_refused) = self._reloads(), self._reloads_seen
        self._reloads_seen = (done, refused)
        return ([events.security_alert(self.trail.local, type_code=codes.SOFTWARE_CONFIGURATION,
                                       what="mappings", outcome=events.SUCCESS,
                                       outcome_text="")] * (done - seen_done)
                + [events.security_alert(self.trail.local,
                                         type_code=codes.SOFTWARE_CONFIGURATION,
                                         what="mappings", outcome=events.MINOR_FAILURE,
                                         outcome_text="mapping reload refused: a file is "
                                                      "broken; the previous set stays")]
                * (refused - seen_refused))

    # --- audit-deliver ---

    def _deliver_loop(self) -> None:
        backoff = {name: self._settings.retry_initial_s for name in self._names}
        hold_until = dict.fromkeys(self._names, 0.0)
        while not self._stop_delivery.is_set():
            busy = False
            for name in self._names:
                if time.monotonic() < hold_until[name]:
                    continue
                try:
                    sent = self._deliver(name)
                except OSError as exc:
                    reason = _reason(exc)
                    log.warning("audit repository %s unreachable: %s; retrying in %.0f s",
                                name, reason, backoff[name])
                    self._metrics.failed(name)
                    hold_until[name] = time.monotonic() + backoff[name]
                    backoff[name] = min(backoff[name] * 2, self._settings.retry_max_s)
                    continue
                except Exception:
                    log.exception("audit delivery to %s failed", name)
                    hold_until[name] = time.monotonic() + backoff[name]
                    continue
                backoff[name] = self._settings.retry_initial_s
                busy = busy or sent >= self._settings.batch
            if not busy:
                waits = [h - time.monotonic() for h in hold_until.values()]
                self._wake.wait(max(0.05, min([1.0, *(w for w in waits if w > 0)])))
                self._wake.clear()
        for name in self._names:  # one last pass at a stop; what fails waits for the next start
            if time.monotonic() >= hold_until[name]:
                try:
                    self._deliver(name)
                except Exception as exc:  # noqa: BLE001 - spooled: sent after the next start
                    log.info("audit repository %s: %s; the events wait in the spool", name,
                             exc)

    def _deliver(self, name: str) -> int:
        """One batch to ``name``: claimed, sent, deleted (or given back on a failure).
        Raises OSError when it could not be sent."""
        batch = self._store.write_one(lambda tx: atna_tx.claim(
            tx, name, instance=self._instance, limit=self._settings.batch,
            lease_s=self._lease_s[name]))
        if not batch:
            return 0
        host = socket.gethostname()
        frames = [frame(p.message, hostname=host, app_name=APP_NAME,
                        procid=self.trail.local.process) for p in batch]
        ids = [p.event_id for p in batch]
        try:
            self._transports[name].send(frames)
        except OSError as exc:
            # The claims go back at once and the rows stay due, so the events keep their
            # order; this instance holds the repository back (the caller's back-off).
            error = _reason(exc)
            self._store.write_one(lambda tx: atna_tx.failed(tx, name, ids, error=error))
            raise
        self._store.write_one(
            lambda tx: atna_tx.delivered(tx, name, ids, claimed_by=self._instance))
        self._metrics.delivered(name, len(ids))
        return len(ids)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc) or type(exc).__name__


def _last_console_action(store: Store) -> int:
    with reading(store) as (cur, _p):
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log")
        return int(cur.fetchone()[0])
