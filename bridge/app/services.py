"""The daemon's service set: the one place that constructs its services.

Every long-running part of the daemon is a ``Service`` with an async
``start``/``stop``. ``build_services`` makes them from the settings, an open
store and the loaded mappings, in the order the daemon starts them; the daemon
stops them in reverse:

    0. audit            the ATNA audit trail's spool and delivery threads (bridge/audit/);
                        first and last, so it records the start and the stop
    1. store-writer     the CommitQueue thread (group commit)
    2. instance         heartbeat row and maintenance leader election (several
                        instances on one database; bridge/maintenance/leader.py)
    3. outbox-sender    delivers status messages queued in the outbox (claims them;
                        on PostgreSQL LISTENs for other instances' new rows)
       mpps-forward     forwards accepted MPPS to the configured MPPS SCPs (the same
                        way: claims, LISTEN; bridge/mpps/forward.py)
    4. housekeeping     idle rules and purges (bridge/maintenance/), leader only
    5. retention        the message log's purge (bridge/maintenance/), leader only
       reconcile        the PACS query loop (bridge/reconcile/), leader only
    6. dicom            the worklist SCP, with the MPPS SCP on its AE
    7. mllp             the HL7 listener (its intake warms the resend cache first)
    8. mapping-reload   hot reload of the mapping files
    9. console          the operator console's HTTP server (admin.enabled; bridge/console/)

Starting the writer first and the MLLP listener last, and stopping them in
reverse, means no ACK is ever written for work that was not committed, and
every accepted frame gets its ACK before the writer stops.

``build_intake`` is also what ``mwl-bridge messages replay`` runs, so a replay
goes through the very wiring the daemon uses.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from bridge.app.health import mapping_reader, outbox_reader, readiness_checks
from bridge.app.settings import Settings
from bridge.audit import NO_AUDIT, AuditTrail
from bridge.audit.service import AuditService, make_trail
from bridge.console.context import ConsoleContext, PlainAnswer, ReplayHook, ReplayResult
from bridge.hl7 import AckControlIds, ConnectionLimits, MllpServer
from bridge.hl7.access import guard_sources
from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.leader import Leadership, instance_info
from bridge.maintenance.retention import Retention
from bridge.mapping import MappingReloader, MappingSet
from bridge.mpps.forward import MppsForwarder, queue_reader
from bridge.mpps.service import MppsService
from bridge.orders.apply import Outcome
from bridge.orders.ingest import Ingest
from bridge.orders.workers import DecidePool, MappingSource, pool_size
from bridge.outbound.destinations import status_messages
from bridge.outbound.sender import OutboxSender
from bridge.reconcile.ian import IanService
from bridge.reconcile.loop import Reconciler, reconcile_reader
from bridge.reconcile.push import StudyPush
from bridge.store import CommitQueue, Store, StoreTx
from bridge.store.mpps_forward_tx import FORWARD_CHANNEL
from bridge.store.outbox_tx import OUTBOX_CHANNEL
from bridge.telemetry import Metrics, Readiness
from bridge.tls import server_context
from bridge.worklist import WorklistSCP
from bridge.worklist.scp import DicomService

if TYPE_CHECKING:
    from bridge.console.server import ConsoleServer
    from bridge.steps import Reporter
    from bridge.store.ha_tx import InstanceInfo


class StartupError(Exception):
    """A service could not start for a reason the operator fixes in the config; the
    message names the listener, the address and the setting to change."""


def _bind_error(what: str, host: str, port: int, section: str, exc: OSError) -> StartupError:
    # Port conflicts and wrong addresses are the commonest deployment mistakes:
    # say which listener, where, and which keys move it.
    reason = exc.strerror or str(exc)
    return StartupError(f"the {what} cannot listen on {host}:{port}: {reason}; "
                        f"change {section}.port (or {section}.host)")


class Service(Protocol):
    """One long-running part of the daemon."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Hooks:
    """A Service made of two coroutines (most parts have their own start/stop shapes)."""

    name: str
    on_start: Callable[[], Awaitable[None]]
    on_stop: Callable[[], Awaitable[None]]

    async def start(self) -> None:
        await self.on_start()

    async def stop(self) -> None:
        await self.on_stop()


def _version() -> str:
    try:
        return metadata.version("mwl-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def load_mappings(settings: Settings) -> MappingReloader:
    """The mapping set, loaded now (MappingLoadError: the daemon must not start), and
    kept following the files (the mapping-reload service, SIGHUP)."""
    return MappingReloader(settings.mapping)


def build_intake(settings: Settings, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 ack_ids: AckControlIds, metrics: Metrics | None = None,
                 workers: MappingSource | None = None,
                 audit: AuditTrail = NO_AUDIT) -> Ingest:
    """The MLLP frame handler: decode, map, apply, record, ACK. With ``workers`` (the
    reloader the worker processes follow), frames are decided in a pool sized by
    ``orders.workers``; without, in this process (a replay)."""
    size, use = pool_size(settings.orders.workers)
    pool = (DecidePool(size, workers, settings.mllp, settings.orders,
                       log_phi=settings.logging.log_phi, use=use)
            if workers is not None and size > 0 else None)
    return Ingest(mappings, commits, settings.mllp, log_phi=settings.logging.log_phi,
                  orders=settings.orders, ack_ids=ack_ids, metrics=metrics, pool=pool,
                  audit=audit)


class _ThenCommits(CommitQueue):
    """A writer that runs ``then(tx, outcome)`` in the transaction of each message it
    records (a job returning an ``Outcome`` with a message log row): the console's
    replay writes its audit row there, with the replayed message, or neither."""

    def __init__(self, store: Store, then: Callable[[StoreTx, Outcome], None]) -> None:
        super().__init__(store, max_batch=1)
        self._then = then

    async def submit(self, job: Callable[[StoreTx], Any]) -> Any:
        def with_then(tx: StoreTx) -> Any:
            result = job(tx)
            if isinstance(result, Outcome) and result.message_id is not None:
                self._then(tx, result)
            return result

        return await super().submit(with_then)


@asynccontextmanager
async def replay_intake(settings: Settings, store: Store, mappings: MappingSet, *,
                        then: Callable[[StoreTx, Outcome], None] | None = None,
                        max_batch: int = 1) -> AsyncIterator[Ingest]:
    """The daemon's intake on its own writer, for ``mwl-bridge messages replay``
    (which may run beside the daemon: the store serialises the two writers).
    ``then`` runs in the transaction that records each message (the console's
    audit row of a replay). ``mwl-bridge import`` asks for up to ``max_batch``
    messages per transaction."""
    commits = (CommitQueue(store, max_batch=max_batch) if then is None
               else _ThenCommits(store, then))
    commits.start()
    try:
        yield build_intake(settings, lambda: mappings, commits, AckControlIds())
    finally:
        await asyncio.to_thread(commits.stop)


@dataclass
class MllpService:
    """The HL7 listener; ``port`` is known once started (the config may say 0)."""

    settings: Settings
    intake: Ingest
    ack_ids: AckControlIds
    audit: AuditTrail = NO_AUDIT  # a Security Alert per refused source
    name: str = "mllp"
    port: int = 0
    _server: MllpServer | None = field(default=None, init=False)

    async def start(self) -> None:
        m = self.settings.mllp
        await self.intake.open()  # the resend cache, before the first frame
        # Everything loaded so far (modules, mappings, settings) lives as long as the
        # daemon: out of the collector's sight, a full collection triggered by one large
        # message scans only what messages made, and stalls every thread for less.
        gc.freeze()
        try:
            self._server = await MllpServer.start(
                guard_sources(self.intake, m.allow, self.ack_ids, on_refused=lambda peer, why:
                              self.audit.source_refused(listener="MLLP", peer=peer,
                                                        reason=why)),
                host=m.host, port=m.port,
                max_frame_bytes=m.max_frame_bytes, idle_timeout_s=m.idle_timeout_s,
                ssl=server_context(m.tls, "mllp.tls"),
                ssl_handshake_timeout_s=m.tls.handshake_timeout_s,
                limits=ConnectionLimits.of(m),
                on_tls_failed=lambda peer, why: self.audit.tls_failed(
                    listener="MLLP", peer=peer, reason=why))
        except OSError as exc:
            raise _bind_error("MLLP listener", m.host, m.port, "mllp", exc) from None
        self.port = self._server.port

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return 0 if self._server is None else self._server.connection_count

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
        await self.intake.close()


@dataclass
class DicomScpService:
    """The worklist SCP (pynetdicom threads) with its other services on the same AE."""

    scp: WorklistSCP
    settings: Settings
    name: str = "dicom"
    port: int = 0
    listening: bool = False

    async def start(self) -> None:
        d = self.settings.dicom
        try:
            self.scp.start()
        except OSError as exc:
            raise _bind_error(f"DICOM SCP (AE {d.ae_title})", d.host, d.port, "dicom",
                              exc) from None
        self.port = self.scp.port
        self.listening = True

    async def stop(self) -> None:
        self.listening = False
        await asyncio.to_thread(self.scp.stop)


@dataclass
class ServiceSet:
    """The daemon's services in start order, and the two whose ports the daemon reports."""

    services: list[Service]
    mllp: MllpService
    dicom: DicomScpService
    # The one registry of the daemon's metrics, and its readiness (bridge.telemetry):
    # what /metrics and /readyz serve.
    metrics: Metrics
    readiness: Readiness
    console: ConsoleService | None = None  # admin.enabled


def _writer(commits: CommitQueue) -> Service:
    async def start() -> None:
        commits.start()

    async def stop() -> None:
        await asyncio.to_thread(commits.stop)  # finishes the jobs already queued

    return Hooks("store-writer", start, stop)


def _task(name: str, start: Callable[[], None], stop: Callable[[], Awaitable[None]]
          ) -> Service:
    async def on_start() -> None:
        start()

    return Hooks(name, on_start, stop)


def build_services(settings: Settings, store: Store, mappings: MappingReloader
                   ) -> ServiceSet:
    """Every service of the daemon, wired, in start order (see the module docstring).

    Raises MappingLoadError for a broken outbound profile or destination, and
    bridge.tls.TlsConfigError for an unreadable TLS file or a bad setting.
    """
    s = settings
    metrics = Metrics(known_aes=s.dicom.known_aes,
                      destinations=[d.name for d in s.outbound.destinations if d.enabled],
                      forward_destinations=[d.name for d in s.mpps.forward.destinations
                                            if d.enabled])
    commits = CommitQueue(store, max_batch=s.store.max_batch, metrics=metrics)
    # The ATNA audit trail (bridge/audit/): started first and stopped last, so it sees
    # the whole run; every domain service records to its trail without waiting.
    audit = AuditService(s.audit, store, make_trail(s.audit, s.dicom.ae_title),
                         metrics=metrics,
                         reloads=lambda: (mappings.reloads, mappings.rejected))
    # One reporter for every source of status changes (bridge.steps.Reporter).
    reporter = status_messages(s.outbound)
    # The whole list: the sender skips disabled ones, and names each by position.
    me = instance_info(s.store.instance_id, _version())
    sender = OutboxSender(store, s.outbound.destinations, submit=commits.submit,
                          poll_interval_s=s.outbound.poll_interval_s, instance=me.id,
                          metrics=metrics, audit=audit.trail)
    # MPPS forwarding to other MPPS SCPs (bridge/mpps/forward.py); same claims as the outbox.
    forwarder = MppsForwarder(store, s.mpps.forward, calling_ae=s.dicom.ae_title,
                              submit=commits.submit, instance=me.id, metrics=metrics,
                              audit=audit.trail)
    roles = ["mllp", "dicom", *(["mpps"] if s.mpps.enabled else []),
             *(["outbox"] if sender.destinations else []),
             *(["mpps-forward"] if forwarder.destinations else [])]
    # Several instances on one database: the heartbeat row, and the maintenance leader.
    leadership = Leadership(commits.submit, me, heartbeat_s=s.store.heartbeat_s,
                            lease_s=s.store.leader_lease_s, roles=lambda: roles)
    housekeeping = Housekeeping(s.housekeeping, commits.submit, messages=reporter,
                                notify=sender.wake, leader=leadership)
    # PACS reconciliation (bridge/reconcile/): the query loop, leader only.
    reconciler = Reconciler(s.reconcile, store, commits.submit, calling_aet=s.dicom.ae_title,
                            messages=reporter, notify=sender.wake, leader=leadership,
                            audit=audit.trail, metrics=metrics)

    def elected() -> None:
        housekeeping.kick()
        reconciler.kick()

    leadership.on_elected(elected)
    retention = Retention(commits, s.orders.messages, leader=leadership)
    dicom_services: Sequence[DicomService] = (
        [MppsService(store, s.mpps, messages=reporter, notify=sender.wake,
                     max_data_set_bytes=s.dicom.max_message_bytes, metrics=metrics,
                     forward_to=forwarder.destinations, notify_forward=forwarder.wake,
                     audit=audit.trail)]
        if s.mpps.enabled else [])
    if s.reconcile.ian:  # Instance Availability Notification on the same AE
        dicom_services = [*dicom_services, IanService(
            store, messages=reporter, notify=sender.wake,
            max_data_set_bytes=s.dicom.max_message_bytes, audit=audit.trail, metrics=metrics)]
    dicom = DicomScpService(WorklistSCP(store, s.dicom, s.worklist, services=dicom_services,
                                        metrics=metrics, audit=audit.trail), s)
    ack_ids = AckControlIds()  # one MSH-10 source for every ACK this daemon sends
    mllp = MllpService(s, build_intake(s, mappings.current, commits, ack_ids, metrics,
                                    workers=mappings, audit=audit.trail),
                       ack_ids, audit.trail)
    readiness = Readiness(readiness_checks(
        store, mllp=lambda: mllp.listening, dicom=lambda: dicom.listening,
        writer=lambda: commits.running, mappings=mappings))
    metrics.watch_outbox(outbox_reader(store))
    metrics.watch_forward(queue_reader(store))
    metrics.watch_mappings(mapping_reader(mappings))
    metrics.watch_connections(mllp=lambda: mllp.open_connections,
                              dicom=lambda: dicom.scp.open_associations)
    metrics.watch_readiness(readiness.results)
    if s.reconcile.enabled:  # the items watched, found, in conflict (per scrape)
        metrics.watch_reconcile(reconcile_reader(store))
    watch: list[asyncio.Task[None]] = []

    async def watch_start() -> None:
        watch.append(asyncio.create_task(mappings.watch(), name="mapping-reload"))

    async def watch_stop() -> None:
        for task in watch:
            task.cancel()
        await asyncio.gather(*watch, return_exceptions=True)
        watch.clear()

    listening: list[Callable[[], None]] = []

    async def sender_start() -> None:
        await sender.start()
        # PostgreSQL: every instance's new outbox rows wake this sender at once.
        listening.append(store.listen(OUTBOX_CHANNEL, lambda _payload: sender.wake()))

    async def sender_stop() -> None:
        for close in listening:
            await asyncio.to_thread(close)
        listening.clear()
        await sender.stop()

    forward_listening: list[Callable[[], None]] = []

    async def forwarder_start() -> None:
        await forwarder.start()
        if forwarder.destinations:  # PostgreSQL: other instances' new rows wake it at once
            forward_listening.append(store.listen(FORWARD_CHANNEL,
                                                  lambda _payload: forwarder.wake()))

    async def forwarder_stop() -> None:
        for close in forward_listening:
            await asyncio.to_thread(close)
        forward_listening.clear()
        await forwarder.stop()

    # The operator console (admin.enabled), started after the listeners, stopped first.
    console = (ConsoleService(s, _console_server(s, store, commits, reporter, sender.wake,
                                                 mappings, metrics, readiness, me,
                                                 audit.trail))
               if s.admin.enabled else None)
    return ServiceSet(
        services=[
            audit,
            _writer(commits),
            Hooks("instance", leadership.start, leadership.stop),
            Hooks("outbox-sender", sender_start, sender_stop),
            Hooks("mpps-forward", forwarder_start, forwarder_stop),
            _task("housekeeping", housekeeping.start, housekeeping.stop),
            _task("retention", retention.start, retention.stop),
            _task("reconcile", reconciler.start, reconciler.stop),
            dicom,
            mllp,
            Hooks("mapping-reload", watch_start, watch_stop),
            *([console] if console is not None else []),
        ],
        mllp=mllp, dicom=dicom, metrics=metrics, readiness=readiness, console=console)


@dataclass
class ConsoleService:
    """The operator console (bridge/console/): uvicorn on the daemon's loop."""

    settings: Settings
    server: ConsoleServer
    name: str = "console"

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        a = self.settings.admin
        try:
            await self.server.start()
        except OSError as exc:
            raise _bind_error("operator console", a.host, a.port, "admin", exc) from None

    async def stop(self) -> None:
        await self.server.stop()


def _console_server(s: Settings, store: Store, commits: CommitQueue,
                    reporter: Reporter | None,
                    wake: Callable[[], None], mappings: MappingReloader, metrics: Metrics,
                    readiness: Readiness, me: InstanceInfo,
                    audit: AuditTrail = NO_AUDIT) -> ConsoleServer:
    """The console, given what it shows and acts through: the store, the daemon's
    writer, the one Reporter and the sender's wake (operator actions reach the RIS
    like MPPS), replay through the daemon's intake, the mappings, /metrics and
    /readyz. The web stack is imported only when the console is on."""
    from bridge.console.server import ConsoleRefused, ConsoleServer
    from bridge.mapping import MappingLoadError
    from bridge.mapping.loader import load_configured
    from bridge.store import browse, ha_tx
    from bridge.telemetry import healthz_endpoint, metrics_endpoint, readyz_endpoint

    def result_of(outcome: Outcome) -> ReplayResult:
        what = outcome.summary if outcome.ack_code == "AA" or outcome.rejection is None \
            else outcome.rejection.text
        return ReplayResult(outcome.message_id, outcome.ack_code, what, outcome.ack)

    async def replay(message_id: int, within: ReplayHook | None = None) -> ReplayResult:
        original = await asyncio.to_thread(browse.get_message, store, message_id)
        if original is None:
            raise LookupError(f"no message {message_id}")
        try:  # the files as they are on disk now, after the fix (as `messages replay`)
            fresh = await asyncio.to_thread(load_configured, s.mapping)
        except MappingLoadError as exc:
            failed = ReplayResult(None, "", "the mapping files do not load: "
                                  + "; ".join(str(e) for e in exc.errors), b"")
            if within is not None:  # nothing else is written: the audit row alone
                await commits.submit(lambda tx: within(tx, failed))
            return failed
        then = None if within is None else (
            lambda tx, outcome: within(tx, result_of(outcome)))
        async with replay_intake(s, store, fresh, then=then) as ingest:
            outcome = await ingest.process(original.raw, f"replay of #{message_id}",
                                           replay_of=message_id)
        return result_of(outcome)

    def check_mappings() -> list[str]:
        try:
            load_configured(s.mapping)
        except MappingLoadError as exc:
            return [str(e) for e in exc.errors]
        return []

    def instances() -> list[dict[str, Any]]:
        rows = ha_tx.list_instances(store)
        if not rows:
            return [{"id": me.id, "host": me.host, "pid": me.pid, "version": me.version,
                     "started_at": me.started_at, "last_seen": "", "roles": "",
                     "stopped_at": "", "this": True}]
        # The heartbeat's roles name the maintenance leader ("maintenance") too.
        return [{"id": r.id, "host": r.host, "pid": r.pid, "version": r.version,
                 "started_at": r.started_at, "last_seen": r.last_seen,
                 "roles": ", ".join(r.roles),
                 "stopped_at": r.stopped_at, "this": r.id == me.id} for r in rows
                if not r.stopped_at]

    def plain(fn: Callable[[], Any]) -> Callable[[], Any]:
        async def endpoint() -> PlainAnswer:
            answer = await asyncio.to_thread(fn)  # /metrics and /readyz read the store
            return PlainAnswer(answer.status, answer.content_type, answer.body)

        return endpoint

    ctx = ConsoleContext(
        settings=s.admin, store=store, submit=commits.submit, reporter=reporter, notify=wake,
        replay=replay, mappings=mappings.current, check_mappings=check_mappings,
        charset=s.mllp.default_charset, charset_aliases=dict(s.mllp.charset_aliases),
        config=lambda: s.model_dump(mode="json"), instances=instances, live=metrics.live,
        plain={"/metrics": plain(lambda: metrics_endpoint(metrics)),
               "/healthz": plain(healthz_endpoint),
               "/readyz": plain(lambda: readyz_endpoint(readiness))},
        version=_version(), audit=audit,
        study_push=StudyPush(commits.submit, messages=reporter, notify=wake, audit=audit,
                             metrics=metrics))
    try:
        return ConsoleServer(ctx, server_context(s.admin.tls, "admin.tls"))
    except ConsoleRefused as exc:
        raise StartupError(str(exc)) from None
