"""bridge.telemetry on a real registry: names, labels, bounds, the scrape-time readers,
readiness and the plain endpoint functions."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bridge.telemetry import (
    Check,
    LabelCap,
    MappingState,
    Metrics,
    OutboxQueue,
    Readiness,
    healthz_endpoint,
    metrics_endpoint,
    readyz_endpoint,
    rejection_reason,
)


def scrape(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return scrape(m).get((name, tuple(sorted(labels.items()))), 0.0)


def test_each_metrics_object_has_its_own_registry_not_the_global_one():
    a, b = Metrics(), Metrics()
    a.message("ORM^O01", "AA", 0.01)
    assert value(a, "mwl_bridge_hl7_messages_total", type="ORM^O01", outcome="AA") == 1
    assert value(b, "mwl_bridge_hl7_messages_total", type="ORM^O01", outcome="AA") == 0
    assert a.registry is not REGISTRY
    assert not any(n.startswith("mwl_bridge") for n in REGISTRY._names_to_collectors)


def test_hl7_messages_by_type_and_outcome_and_the_ack_latency():
    m = Metrics()
    m.message("ORM^O01", "AA", 0.004)
    m.message("ORM^O01", "AE", 0.002)
    m.message("ADT^A08", "AA", 0.003, resend=True)
    m.message("", "", 0.001)  # not HL7: no ACK
    s = scrape(m)
    assert s[("mwl_bridge_hl7_messages_total", (("outcome", "AA"), ("type", "ORM^O01")))] == 1
    assert s[("mwl_bridge_hl7_messages_total", (("outcome", "AE"), ("type", "ORM^O01")))] == 1
    assert s[("mwl_bridge_hl7_messages_total", (("outcome", "none"), ("type", "none")))] == 1
    assert s[("mwl_bridge_hl7_resends_total", ())] == 1
    assert s[("mwl_bridge_hl7_ack_latency_seconds_count", ())] == 4
    assert s[("mwl_bridge_hl7_ack_latency_seconds_bucket", (("le", "0.0025"),))] == 2


def test_label_values_from_the_network_are_bounded():
    m = Metrics(known_aes=["CT01", "MR01"], extra_label_values=3)
    for i in range(50):
        m.association(f"STRANGER{i}")
        m.message(f"Z{i:02d}^Z01", "AR", 0.001)
    m.association("CT01")
    m.association("bad\\ae")  # not an AE title: never a label of its own
    m.message("<script>", "AR", 0.001)
    s = scrape(m)
    aes = {dict(k[1])["calling_ae"] for k in s if k[0] == "mwl_bridge_dicom_associations_total"}
    assert aes == {"CT01", "STRANGER0", "STRANGER1", "STRANGER2", "other"}
    assert s[("mwl_bridge_dicom_associations_total", (("calling_ae", "other"),))] == 48
    types = {dict(k[1])["type"] for k in s if k[0] == "mwl_bridge_hl7_messages_total"}
    assert len(types) <= 3 * 2 + 1 and "other" in types and "<script>" not in types


def test_label_cap_is_stable_for_values_already_seen():
    cap = LabelCap(["A"], extra=1)
    assert [cap("B"), cap("C"), cap("B"), cap("A"), cap(" ")] == ["B", "other", "B", "A",
                                                                    "none"]


def test_associations_rejections_cfind_and_mpps():
    m = Metrics(known_aes=["CT01"])
    m.association_rejected_rj(1, 3)
    m.association_rejected_rj(3, 2)
    m.association_rejected("address_not_allowed")
    m.cfind("CT01", "success", 0.02, 7)
    m.cfind("CT01", "refused", 0.001, 0)
    m.mpps("n_create", "IN PROGRESS")
    m.mpps("n_set", "COMPLETED")
    m.mpps("n_set", "refused")
    s = scrape(m)
    rj = "mwl_bridge_dicom_association_rejections_total"
    assert s[(rj, (("reason", "calling_ae_not_recognized"),))] == 1
    assert s[(rj, (("reason", "local_limit_exceeded"),))] == 1
    assert s[(rj, (("reason", "address_not_allowed"),))] == 1
    assert s[(rj, (("reason", "called_ae_not_recognized"),))] == 0  # pre-set to 0
    assert s[("mwl_bridge_cfind_requests_total",
              (("calling_ae", "CT01"), ("outcome", "success")))] == 1
    assert s[("mwl_bridge_cfind_answers_sum", ())] == 7
    assert s[("mwl_bridge_cfind_duration_seconds_count", ())] == 2
    ev = "mwl_bridge_mpps_events_total"
    assert s[(ev, (("operation", "n_create"), ("status", "in_progress")))] == 1
    assert s[(ev, (("operation", "n_set"), ("status", "completed")))] == 1
    assert s[(ev, (("operation", "n_set"), ("status", "refused")))] == 1
    assert rejection_reason(2, 9) == "other"


def test_outbox_counters_start_at_zero_and_the_queue_is_read_on_each_scrape():
    m = Metrics(destinations=["ris", "lab"])
    queues = [OutboxQueue("ris", 3, 1, 42.5)]
    m.watch_outbox(lambda: queues)
    m.outbox_outcome("ris", "sent")
    m.outbox_outcome("ris", "retry")
    m.outbox_outcome("ris", "dead")
    s = scrape(m)
    assert s[("mwl_bridge_outbox_sent_total", (("destination", "ris"),))] == 1
    assert s[("mwl_bridge_outbox_sent_total", (("destination", "lab"),))] == 0
    assert s[("mwl_bridge_outbox_retries_total", (("destination", "ris"),))] == 1
    assert s[("mwl_bridge_outbox_dead_letters_total", (("destination", "ris"),))] == 1
    assert s[("mwl_bridge_outbox_pending", (("destination", "ris"),))] == 3
    assert s[("mwl_bridge_outbox_dead", (("destination", "ris"),))] == 1
    assert s[("mwl_bridge_outbox_oldest_pending_age_seconds", (("destination", "ris"),))] == 42.5
    # A configured destination with nothing queued is there, at 0.
    assert s[("mwl_bridge_outbox_pending", (("destination", "lab"),))] == 0
    queues[:] = []
    assert value(m, "mwl_bridge_outbox_pending", destination="ris") == 0


def test_a_reader_that_fails_costs_its_values_not_the_scrape(caplog):
    m = Metrics()

    def broken() -> list[OutboxQueue]:
        raise OSError("database is down")

    m.watch_outbox(broken)
    m.watch_mappings(lambda: MappingState(reloads=2, failures=1, active=4))
    s = scrape(m)
    assert ("mwl_bridge_outbox_pending", ()) not in s
    assert s[("mwl_bridge_metrics_read_errors_total", (("source", "outbox"),))] == 1
    assert s[("mwl_bridge_mapping_reloads_total", (("outcome", "success"),))] == 2
    assert s[("mwl_bridge_mapping_reloads_total", (("outcome", "failure"),))] == 1
    assert s[("mwl_bridge_mappings_active", ())] == 4
    assert "cannot read outbox: OSError" in caplog.text
    assert "database is down" not in caplog.text


def test_store_commits_and_open_connections():
    m = Metrics()
    m.commit(0.003, 5)
    m.commit(0.5, 1, ok=False)
    m.watch_connections(mllp=lambda: 3, dicom=lambda: 2)
    s = scrape(m)
    assert s[("mwl_bridge_store_commit_duration_seconds_count", ())] == 2
    assert s[("mwl_bridge_store_commit_jobs_sum", ())] == 6
    assert s[("mwl_bridge_store_commit_failures_total", ())] == 1
    assert s[("mwl_bridge_mllp_connections_open", ())] == 3
    assert s[("mwl_bridge_dicom_associations_open", ())] == 2


def test_readiness_and_the_endpoint_functions():
    state = {"store": True}

    def store() -> bool:
        if not state["store"]:
            raise ConnectionError("secret host details")
        return True

    ready = Readiness([Check("store", store, "reachable"), Check("mllp", lambda: True,
                                                                  "listening")])
    m = Metrics()
    m.watch_readiness(ready.results)
    answer = readyz_endpoint(ready)
    assert answer.status == 200 and answer.content_type == "application/json"
    assert json.loads(answer.body) == {
        "status": "ready", "checks": {"store": {"ok": True, "detail": "reachable"},
                                      "mllp": {"ok": True, "detail": "listening"}}}
    assert value(m, "mwl_bridge_ready", check="all") == 1
    state["store"] = False
    answer = readyz_endpoint(ready)
    assert answer.status == 503
    body = json.loads(answer.body)
    assert body["status"] == "not ready"
    assert body["checks"]["store"] == {"ok": False, "detail": "ConnectionError"}
    assert value(m, "mwl_bridge_ready", check="all") == 0
    assert value(m, "mwl_bridge_ready", check="mllp") == 1
    health = healthz_endpoint()
    assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
    exposition = metrics_endpoint(m)
    assert exposition.status == 200 and b"mwl_bridge_ready" in exposition.body


def test_names_lists_every_series_even_those_read_on_scrape():
    names = Metrics().names()
    for name in ("mwl_bridge_hl7_messages_total", "mwl_bridge_hl7_ack_latency_seconds_bucket",
                 "mwl_bridge_outbox_pending", "mwl_bridge_outbox_oldest_pending_age_seconds",
                 "mwl_bridge_mapping_reloads_total", "mwl_bridge_ready",
                 "mwl_bridge_store_commit_duration_seconds_sum"):
        assert name in names
