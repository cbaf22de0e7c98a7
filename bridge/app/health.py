"""What the metrics read on each scrape, and the facts readiness checks.

``bridge.app.services.build_services`` makes the one ``Metrics`` and the one
``Readiness``; this module supplies the callables it registers with them
(everything here reads, nothing writes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bridge.mapping import MappingReloader
from bridge.store import Store, outbox_tx
from bridge.store.sqltx import parse_stamp, reading
from bridge.telemetry import Check, MappingState, OutboxQueue


def store_reachable(store: Store) -> Callable[[], bool]:
    """One round trip on a reader connection (never the writer's lock)."""

    def probe() -> bool:
        with reading(store) as (cur, _):
            cur.execute("SELECT 1")
            return cur.fetchone() is not None

    return probe


def outbox_reader(store: Store) -> Callable[[], list[OutboxQueue]]:
    """The outbox per destination: pending and dead counts, the oldest pending's age."""

    def read() -> list[OutboxQueue]:
        now = datetime.now(UTC)
        out = []
        for destination, (pending, dead, oldest) in outbox_tx.queue_stats(store).items():
            age = None if oldest is None else max(
                0.0, (now - parse_stamp(oldest)).total_seconds())
            out.append(OutboxQueue(destination, pending, dead, age))
        return out

    return read


def mapping_reader(mappings: MappingReloader) -> Callable[[], MappingState]:
    def read() -> MappingState:
        return MappingState(reloads=mappings.reloads, failures=mappings.rejected,
                            active=len(mappings.current().names))

    return read


def readiness_checks(store: Store, *, mllp: Callable[[], bool], dicom: Callable[[], bool],
                     writer: Callable[[], bool], mappings: MappingReloader) -> list[Check]:
    """Ready: the store answers, its writer runs, both listeners listen, mappings are loaded."""
    return [
        Check("store", store_reachable(store), "reachable"),
        Check("store_writer", writer, "running"),
        Check("mllp", mllp, "listening"),
        Check("dicom", dicom, "listening"),
        Check("mappings", lambda: bool(mappings.current().names), "loaded"),
    ]
