"""The dashboard's live figures from bridge.telemetry: C-FIND in the last minute(s)
and the connections open now, without a store query."""

from __future__ import annotations

from bridge.telemetry import Metrics, RecentEvents


def test_recent_events_count_the_last_minutes_only():
    now = [1000.0]
    recent = RecentEvents(clock=lambda: now[0])
    recent.add()
    recent.add(2)
    assert recent.count(60) == 3
    now[0] += 65
    recent.add()
    assert (recent.count(60), recent.count(300)) == (1, 4)
    now[0] += 400
    assert recent.count(300) == 0
    for _ in range(100):  # old buckets are dropped as new ones come
        now[0] += 10
        recent.add()
    assert len(recent._buckets) <= 32


def test_live_figures():
    m = Metrics()
    assert m.live() == {"cfind_per_minute": 0, "cfind_5m": 0}
    m.watch_connections(mllp=lambda: 2, dicom=lambda: 1)
    m.cfind("CT01", "success", 0.01, 3)
    m.cfind("CT01", "refused", 0.01, 0)
    assert m.live() == {"cfind_per_minute": 2, "cfind_5m": 2, "associations_open": 1,
                        "mllp_connections_open": 2}

    def broken() -> int:
        raise RuntimeError("down")

    m.watch_connections(mllp=broken, dicom=lambda: 0)
    assert m.live()["mllp_connections_open"] == 0
