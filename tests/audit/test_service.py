"""The audit service against a real rsyslog: events spooled, delivered once over TLS
and UDP, kept through an outage and a restart; a full queue never blocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audit import AuditSettings, codes
from bridge.audit.service import AuditService, make_trail
from bridge.store import SqliteStore, Store, atna_tx
from bridge.telemetry import Metrics
from tests.tlscerts import make_pki

from .rsyslog import Rsyslog, summary, validate


@pytest.fixture
def rsyslog(tmp_path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog", make_pki(tmp_path / "pki"))
    r.folder.mkdir()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def sqlite(tmp_path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "bridge.sqlite3")
    s.migrate()
    yield s
    s.close()


def settings(r: Rsyslog, *, udp: bool = True, **extra) -> AuditSettings:
    repos = [{"name": "arr", "port": r.tls_port, "transport": "tls",
              "tls": {"enabled": True, "ca_file": str(r.pki.ca)}}]
    if udp:
        repos.append({"name": "arr-udp", "port": r.udp_port, "transport": "udp"})
    return AuditSettings.model_validate({"enabled": True, "repositories": repos,
                                         "retry_initial_s": 0.2, "retry_max_s": 0.5,
                                         **extra})


def alert(service: AuditService, n: int) -> None:
    service.trail.security_alert(codes.NODE_AUTHENTICATION, f"node-{n}", peer="127.0.0.1")


def objects(messages) -> list[str]:
    return [o.get("ParticipantObjectID") for m in messages
            for o in m.findall("ParticipantObjectIdentification")]


def test_events_reach_the_repository_once_over_tls_and_udp(rsyslog, sqlite):
    metrics = Metrics()
    service = AuditService(settings(rsyslog), sqlite, make_trail(settings(rsyslog), "MWL"),
                           metrics=metrics)

    async def run() -> None:
        await service.start()
        for n in range(3):
            alert(service, n)
        rsyslog.wait_for(lambda got: len(got) >= 4)  # the start and three alerts
        await service.stop()

    asyncio.run(run())
    for which in ("tls", "udp"):
        got = rsyslog.wait_for(lambda got: len(got) >= 5, which)
        for m in got:
            validate(m)
        assert [summary(m) for m in got] == ["110100/110120/0"] + ["110113/110126/4"] * 3 + [
            "110100/110121/0"], which
        assert objects(got) == ["node-0", "node-1", "node-2"]
    assert atna_tx.depth(sqlite) == {}
    assert atna_tx.search(sqlite)[1] == 5
    text = metrics.render()[0].decode()
    assert 'mwl_bridge_audit_delivered_total{repository="arr"} 5.0' in text
    assert 'mwl_bridge_audit_events_total{fate="recorded"} 5.0' in text


def test_an_outage_and_a_restart_lose_nothing_and_send_nothing_twice(rsyslog, sqlite):
    s = settings(rsyslog, udp=False)
    first = AuditService(s, sqlite, make_trail(s, "MWL"))

    async def outage() -> None:
        await first.start()
        rsyslog.wait_for(lambda got: len(got) == 1)  # the start
        rsyslog.stop()
        for n in range(5):
            alert(first, n)
        await first.stop()

    asyncio.run(outage())
    assert atna_tx.depth(sqlite) == {"arr": 6}  # five alerts and the stop
    rsyslog.start()
    second = AuditService(s, sqlite, make_trail(s, "MWL"))

    async def back() -> None:
        await second.start()
        rsyslog.wait_for(lambda got: len(got) >= 8)
        await second.stop()

    asyncio.run(back())
    got = rsyslog.wait_for(lambda got: len(got) >= 9)
    assert [summary(m) for m in got] == (["110100/110120/0"] + ["110113/110126/4"] * 5
                                         + ["110100/110121/0", "110100/110120/0",
                                            "110100/110121/0"])
    assert objects(got) == [f"node-{n}" for n in range(5)]
    assert atna_tx.depth(sqlite) == {}


def test_a_full_queue_drops_counts_and_raises_a_security_alert(sqlite, tmp_path):
    s = AuditSettings(enabled=True, queue_size=10)
    metrics = Metrics()
    service = AuditService(s, sqlite, make_trail(s, "MWL"), metrics=metrics)
    started = time.perf_counter()
    for n in range(25):  # nothing drains the queue yet: 15 of these cannot wait
        alert(service, n)
    assert time.perf_counter() - started < 5  # generous: the point is it never waits
    assert service.trail.dropped == 15

    async def run() -> None:
        await service.start()
        await service.stop()

    asyncio.run(run())
    stored, total = atna_tx.search(sqlite, limit=100)
    names = [e.event_name for e in reversed(stored)]
    assert total == 13 and names.count("Security Alert") == 11
    lost = [e for e in stored if b"dropped" in e.message]
    assert len(lost) == 1 and b"15 audit event(s) dropped" in lost[0].message
    assert 'mwl_bridge_audit_events_total{fate="dropped"} 15.0' in metrics.render()[0].decode()


def test_disabled_records_nothing_and_starts_no_thread(sqlite):
    s = AuditSettings()
    service = AuditService(s, sqlite, make_trail(s, "MWL"))
    alert(service, 1)

    async def run() -> None:
        await service.start()
        await service.stop()

    asyncio.run(run())
    assert atna_tx.search(sqlite)[1] == 0


def test_a_tls_repository_needs_tls_settings(tmp_path: Path):
    with pytest.raises(ValueError, match=r"transport tls needs tls\.enabled"):
        AuditSettings.model_validate({"repositories": [{"name": "a", "port": 1}]})


def test_an_unreadable_tls_file_stops_the_start_naming_the_setting(sqlite, tmp_path):
    from bridge.tls import TlsConfigError

    s = AuditSettings.model_validate({"enabled": True, "repositories": [
        {"name": "arr", "port": 6514,
         "tls": {"enabled": True, "ca_file": str(tmp_path / "missing.crt")}}]})
    with pytest.raises(TlsConfigError, match=r"audit\.repositories\[0\]\.tls\.ca_file"):
        AuditService(s, sqlite, make_trail(s, "MWL"))
