"""Two instances on one PostgreSQL database, active-active (issue 11), as a site runs
them: two `python -m bridge serve` processes, a RIS (an MLLP receiver) for status
messages, orders over several connections to both, modalities' MPPS to both, and the
maintenance leader SIGKILLed half-way, then restarted.

Checked: every ACKed order is stored exactly once (and was never answered AR);
every status message reaches the RIS, in order per order; a duplicate has the same
MSH-10, and there are at most as many as the killed instance had connections in
flight; the maintenance role moves to the survivor within leader_lease_s +
heartbeat_s; findscu (DCMTK) gets the same answers from either instance.
(Scaled down from the issue's 3,000 orders / 300 MPPS to run in well under a minute.)
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from bridge.hl7 import MllpClient
from tests.outbound.mllp_receiver import MllpReceiver

from .conftest import (
    DCMTK,
    REPO,
    RunningDaemon,
    dcmtk_env,
    start_daemon,
    stop_daemon,
    write_config,
)
from .test_mpps_roundtrip import n_create, n_set_completed

psycopg = pytest.importorskip("psycopg")

PG = "host=127.0.0.1 port=5432 user=postgres"
ORDERS_BEFORE, ORDERS_AFTER = 300, 100  # before and after the restart
KILL_AT = 150  # orders ACKed when the leader is killed
MPPS_COUNT = 60
CONNECTIONS = 8
PATIENTS = 50  # several orders per new patient, at both instances at once
HEARTBEAT_S, LEADER_LEASE_S = 0.5, 2.0
MAX_CONNECTIONS = 2  # per destination and instance: the bound on duplicates


@pytest.fixture
def database() -> Iterator[str]:
    name = f"ha_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{PG} dbname={name}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def config(tmp: Path, dsn: str, instance: str, ris_port: int) -> Path:
    tmp.mkdir()
    return write_config(tmp, (
        "store:\n  backend: postgresql\n"
        f"  postgresql_dsn: \"{dsn}\"\n  instance_id: {instance}\n"
        f"  heartbeat_s: {HEARTBEAT_S}\n  leader_lease_s: {LEADER_LEASE_S}\n"
        "housekeeping:\n  interval_s: 1\n"
        "outbound:\n"
        f"  profiles: [{REPO / 'mappings' / 'outbound'}]\n"
        "  poll_interval_s: 0.5\n"
        "  destinations:\n"
        f"    - {{name: ris, host: 127.0.0.1, port: {ris_port}, message_type: ORM^O01,\n"
        "       receiving_application: RIS, receiving_facility: HOSP,\n"
        f"       connect_timeout_s: 1, ack_timeout_s: 2, max_connections: {MAX_CONNECTIONS},\n"
        "       backoff_initial_s: 0.2, backoff_max_s: 1}\n"))


def patient(n: int) -> tuple[str, str]:
    k = n % PATIENTS
    return f"HA{k:05d}", "DOE^" + "".join(chr(65 + int(d)) for d in f"{k:02d}")


def order(n: int) -> bytes:
    pid, name = patient(n)
    return (
        f"MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|20261130080500||ORM^O01|HA-{n}|P|2.3.1"
        "|||AL|NE\r"
        f"PID|1||{pid}^^^HOSP^MR||{name}||19700101|F\r"
        "PV1|1|O|RAD^WAIT^2\r"
        f"ORC|NW|PLC{n:06d}^RIS|FIL{n:06d}^RIS||SC||1^once^^20261130100000^^R||"
        "20261130080000|||4321^WHITE^SARAH^^^DR|||||RAD^St. Mary Radiology|CT01^CT Room 1\r"
        f"OBR|1|PLC{n:06d}^RIS|FIL{n:06d}^RIS|CTABD^CT Abdomen^LOCAL||||||||||||"
        f"4321^WHITE^SARAH^^^DR||ACCHA{n:05d}|RPHA{n:05d}|SPSHA{n:05d}||||CT|||"
        "1^once^^20261130100000^^R||||^Abdominal pain\r"
        f"ZDS|1.2.826.0.1.3680043.8.498.77.{n}^RIS^Application^DICOM\r").encode()


def scheduled_item(n: int) -> Dataset:
    """What the worklist offered for order n, as far as a modality copies it."""
    pid, name = patient(n)
    item = Dataset()
    item.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{n}"
    item.AccessionNumber = f"ACCHA{n:05d}"
    item.RequestedProcedureID = f"RPHA{n:05d}"
    item.PlacerOrderNumberImagingServiceRequest = f"PLC{n:06d}"
    item.FillerOrderNumberImagingServiceRequest = f"FIL{n:06d}"
    item.PatientID = pid
    item.PatientName = name
    sps = Dataset()
    sps.ScheduledProcedureStepID = f"SPSHA{n:05d}"
    item.ScheduledProcedureStepSequence = [sps]
    return item


class Site:
    """The two instances; ``live`` is who the RIS and the modalities may reach."""

    def __init__(self, a: RunningDaemon, b: RunningDaemon) -> None:
        self.daemons = {"ha-a": a, "ha-b": b}
        self.acks: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def live(self) -> list[RunningDaemon]:
        return [d for d in self.daemons.values() if d.alive()]


async def send_orders(site: Site, numbers: list[int], first: int) -> None:
    """One RIS connection: each order to its instance, and on a lost connection
    (the instance died) the same message again to whichever is up."""
    target = first
    client: MllpClient | None = None
    for n in numbers:
        for _attempt in range(20):
            live = site.live()
            d = live[target % len(live)]
            try:
                if client is None:
                    client = await MllpClient.connect("127.0.0.1", d.mllp_port, timeout=5)
                reply = await client.send(order(n), timeout=20)
                break
            except (OSError, ConnectionError, TimeoutError):
                if client is not None:
                    await client.close()
                client = None
                target += 1
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"order {n} never acknowledged")
        with site.lock:
            site.acks[n] = reply
    if client is not None:
        await client.close()


async def load(site: Site, numbers: list[int]) -> None:
    slices = [numbers[i::CONNECTIONS] for i in range(CONNECTIONS)]
    await asyncio.gather(*(send_orders(site, s, i) for i, s in enumerate(slices)))


def perform(site: Site, n: int, k: int) -> None:
    """A modality: N-CREATE then N-SET COMPLETED for order n, at instance k (or the
    other one, when k's is down); a repeat after a lost response is answered with
    "exists" / "already final", which is success here."""
    uid = f"1.2.826.0.1.3680043.8.498.88.{n}"
    steps = [("create", 0x0111), ("set", 0x0110)]
    for step, again in steps:
        for attempt in range(30):
            live = site.live()
            d = live[(k + attempt) % len(live)]
            ae = AE(ae_title="CT01")
            ae.add_requested_context(MPPS)
            assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title=d.ae_title)
            if not assoc.is_established:
                time.sleep(0.1)
                continue
            try:
                if step == "create":
                    status, _ = assoc.send_n_create(n_create(scheduled_item(n)), MPPS, uid)
                else:
                    status, _ = assoc.send_n_set(n_set_completed(), MPPS, uid)
            finally:
                if assoc.is_established:
                    assoc.release()
            code = getattr(status, "Status", None)
            if code == 0x0000 or (code == again and attempt > 0):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"MPPS {step} for order {n} never succeeded")


def findscu(d: RunningDaemon, tmp: Path) -> list[tuple[str, str, str]]:
    out = tmp / f"find-{d.dicom_port}-{time.monotonic_ns()}"
    out.mkdir()
    res = subprocess.run(
        [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aec", d.ae_title,
         "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
         "-k", "AccessionNumber", "-k", "PatientID",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus",
         "127.0.0.1", str(d.dicom_port)],
        capture_output=True, text=True, timeout=120, env=dcmtk_env())
    text = res.stdout + res.stderr
    # findscu exits 0 even when the query failed: its final status says.
    assert "Received Final Find Response (Success)" in text, text[-2000:]
    from pydicom import dcmread

    rows = []
    for p in out.glob("rsp*.dcm"):
        ds = dcmread(p)
        rows.append((str(ds.AccessionNumber), str(ds.PatientID),
                     str(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)))
    return sorted(rows)


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql).fetchall())


def leader(dsn: str) -> str:
    rows = query(dsn, "SELECT holder FROM role_lease WHERE role = 'maintenance' "
                      "AND lease_until > to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    return str(rows[0][0]) if rows else ""


def test_two_instances_share_one_database_and_survive_a_kill(tmp_path: Path, database: str):
    ris = MllpReceiver()
    ris.start()
    configs = {name: config(tmp_path / name, database, name, ris.port)
               for name in ("ha-a", "ha-b")}
    a = start_daemon(configs["ha-a"], tmp_path / "ha-a" / "data")
    b = start_daemon(configs["ha-b"], tmp_path / "ha-b" / "data")
    site = Site(a, b)
    mpps_orders = list(range(0, 2 * MPPS_COUNT, 2))  # among the first orders
    errors: list[BaseException] = []
    killed = ""
    moved_after = 0.0
    try:
        deadline = time.monotonic() + 10
        while not leader(database) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leader(database) in site.daemons

        def modalities() -> None:
            try:
                while len(site.acks) < 2 * MPPS_COUNT:
                    time.sleep(0.05)
                for k, n in enumerate(mpps_orders):
                    perform(site, n, k)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def killer() -> None:
            nonlocal killed, moved_after
            try:
                while len(site.acks) < KILL_AT:
                    time.sleep(0.01)
                killed = leader(database)
                victim = site.daemons[killed]
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                t0 = time.monotonic()
                survivor = next(n for n in site.daemons if n != killed)
                while leader(database) != survivor:
                    assert time.monotonic() - t0 < 30, "the maintenance role did not move"
                    time.sleep(0.05)
                moved_after = time.monotonic() - t0
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=modalities), threading.Thread(target=killer)]
        for t in threads:
            t.start()
        asyncio.run(load(site, list(range(ORDERS_BEFORE))))
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert killed
        # Bounded failover: the dead leader's lease, then the survivor's next heartbeat.
        assert moved_after <= LEADER_LEASE_S + HEARTBEAT_S + 1.5, moved_after
        survivor = next(n for n in site.daemons if n != killed)
        status = site.daemons[survivor].cli("status")
        assert status.returncode == 0, status.stderr
        assert f"maintenance leader: {survivor} since" in status.stdout, status.stdout
        assert f"{killed} " in status.stdout

        # The killed instance comes back, and takes its share of the rest.
        site.daemons[killed] = start_daemon(configs[killed], tmp_path / killed / "data")
        asyncio.run(load(site, list(range(ORDERS_BEFORE, ORDERS_BEFORE + ORDERS_AFTER))))

        # Every ACKed order: AA, stored exactly once, accepted exactly once.
        total = ORDERS_BEFORE + ORDERS_AFTER
        assert sorted(site.acks) == list(range(total))
        codes = Counter(reply.split(b"MSA|")[1][:2] for reply in site.acks.values())
        assert codes == {b"AA": total}
        steps = dict(query(database, "SELECT accession_number, COUNT(*) FROM procedure_step "
                                     "GROUP BY accession_number"))
        assert steps == {f"ACCHA{n:05d}": 1 for n in range(total)}
        accepted = Counter(r[0] for r in query(
            database, "SELECT control_id FROM message_log WHERE ack_code = 'AA'"))
        assert accepted == {f"HA-{n}": 1 for n in range(total)}
        assert query(database, "SELECT COUNT(*) FROM patient") == [(PATIENTS,)]

        # Every status message reaches the RIS, in order per order.
        deadline = time.monotonic() + 40
        while query(database, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") != [(0,)]:
            assert time.monotonic() < deadline, query(
                database, "SELECT control_id, state, claimed_by, last_error FROM outbox "
                          "WHERE state <> 'sent'")
            time.sleep(0.2)
        got = list(ris.messages)
        by_order: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for m in got:
            by_order[m.field("ORC", 2)].append((m.field("ORC", 5), m.control_id))
        assert sorted(by_order) == sorted(f"PLC{n:06d}" for n in mpps_orders)
        for placer, events in by_order.items():
            kinds = [e for e, _ in events]
            # IP (perhaps twice), then CM (perhaps twice): never CM before an IP.
            assert kinds == sorted(kinds, key=["IP", "CM"].index), (placer, events)
            assert set(kinds) == {"IP", "CM"}
            ids = {e: {c for k, c in events if k == e} for e in ("IP", "CM")}
            assert all(len(c) == 1 for c in ids.values()), (placer, events)  # same MSH-10
        duplicates = len(got) - len({m.control_id for m in got})
        assert duplicates <= MAX_CONNECTIONS, duplicates
        assert query(database, "SELECT COUNT(*) FROM outbox") == [(2 * MPPS_COUNT,)]

        # Either instance answers the worklist the same.
        answers = [findscu(d, tmp_path) for d in site.daemons.values()]
        assert answers[0] == answers[1]
        assert len(answers[0]) == total - MPPS_COUNT  # completed ones are hidden
    finally:
        codes = {name: stop_daemon(d) for name, d in site.daemons.items()}
        ris.stop()
    assert all(c == 0 for c in codes.values()), {
        n: "\n".join(d.log[-20:]) for n, d in site.daemons.items()}


def test_an_instance_older_than_the_schema_refuses_to_start_with_one_line(
        tmp_path: Path, database: str):
    from bridge.store import migrations
    from bridge.store.postgresql import PostgresStore

    store = PostgresStore(database)
    latest = store.migrate()
    store.close()
    assert latest == migrations.latest_version()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"INSERT INTO schema_version (version) VALUES ({latest + 1})")
    cfg = config(tmp_path / "old", database, "old", 9)
    res = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "serve"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if "schema" in ln]
    assert lines == [f"cannot start: the database schema is version {latest + 1}, newer "
                     f"than this program knows ({latest}); upgrade mwl-bridge"], res.stderr
