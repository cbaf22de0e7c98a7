"""The console's JSON API over real HTTP, against the running daemon: search, item
detail as DICOM JSON, operator actions that reach the RIS through the outbox, the
dead letters and their replay, mapping explain, config without secrets, audit."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import FIXTURES, REPO, stop_daemon
from tests.e2e.test_mpps_roundtrip import outbound_config
from tests.outbound.mllp_receiver import MllpReceiver, Received, Reply

from .conftest import Console, start_console

ACCESSION = "ACC20261128001"
SPS = "ScheduledProcedureStepSequence[0]"
FIND_KEYS = ("AccessionNumber", "PatientID", f"{SPS}.ScheduledStationAETitle=CT01",
             f"{SPS}.ScheduledProcedureStepStatus")


def test_the_served_openapi_document_is_the_one_in_the_repository(console: Console):
    served = console.client().get("/api/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads((REPO / "docs" / "openapi.json").read_text()), (
        "docs/openapi.json is stale: mwl-bridge admin openapi > docs/openapi.json")


def _send_order(c: Console) -> int:
    res = c.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    assert res.returncode == 0, res.stdout + res.stderr
    page = c.client("viewer").post("/api/worklist/search", json={"accession": ACCESSION})
    assert page.status_code == 200, page.text
    (row,) = page.json()["items"]
    return int(row["id"])


@pytest.fixture
def with_ris(tmp_path):
    receiver = MllpReceiver()
    receiver.start()
    c = start_console(tmp_path, outbound_config(receiver.port))
    yield c, receiver
    code = stop_daemon(c.daemon)
    receiver.stop()
    assert code == 0, "\n".join(c.daemon.log[-30:])


def test_search_filters_and_the_item_as_dicom_json(console: Console):
    step = _send_order(console)
    api = console.client("viewer")
    for body, found in (({"station": "CT01", "date_from": "20261128", "date_to": "20261128"}, 1),
                        ({"station": "CT01", "date_from": "20261129"}, 0),
                        ({"modality": "CT", "status": "SCHEDULED"}, 1),
                        ({"patient_id": "PAT10001"}, 1), ({"patient_id": "nobody"}, 0),
                        ({"date_to": "20261127"}, 0), ({"limit": 1, "offset": 1}, 1)):
        page = api.post("/api/worklist/search", json=body).json()
        assert page["total"] == found, body
    item = api.get(f"/api/worklist/{step}").json()
    assert item["item"]["00080050"] == {"vr": "SH", "Value": [ACCESSION]}  # DICOM JSON
    assert item["status"] == "SCHEDULED" and item["message_id"] is not None
    assert api.get("/api/worklist/999999").status_code == 404


def test_operator_actions_reach_the_ris_and_the_modality_and_are_audited(with_ris, tmp_path):
    c, ris = with_ris
    step = _send_order(c)
    op = c.client("operator")
    assert op.post(f"/api/worklist/{step}/hold", json={"reason": "contrast allergy check"}
                   ).json()["status"] == "HELD"
    assert c.daemon.findscu(tmp_path, *FIND_KEYS) == []  # HELD is hidden from consoles
    assert op.post(f"/api/worklist/{step}/release", json={}).json()["status"] == "SCHEDULED"
    moved = op.post(f"/api/worklist/{step}/reschedule",
                    json={"date": "20261128", "time": "1015", "reason": "room swap"})
    assert moved.status_code == 200, moved.text
    (found,) = c.daemon.findscu(tmp_path, *FIND_KEYS, "ScheduledProcedureStepSequence[0]."
                                "ScheduledProcedureStepStartTime")
    assert found.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "101500"

    cancel = op.post(f"/api/worklist/{step}/cancel", json={"reason": "patient left"})
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["queued"] == 1
    assert c.daemon.findscu(tmp_path, *FIND_KEYS) == []
    # HD, SC (release), SC (reschedule: the status it keeps), CA: the RIS hears of
    # every change the operator made.
    got = ris.wait_for(4)
    assert [m.field("ORC", 5) for m in got] == ["HD", "SC", "SC", "CA"]
    assert {m.field("ORC", 1) for m in got} == {"SC"}
    assert all(m.field("OBR", 18) == ACCESSION for m in got)
    again = op.post(f"/api/worklist/{step}/cancel", json={})
    assert again.status_code == 409 and "CANCELED" in again.json()["error"]["message"]

    audit = c.client("admin").post("/api/audit/search", json={"target_kind": "step"}).json()
    actions = [a["action"] for a in reversed(audit["items"])]
    assert actions == ["step.hold", "step.release", "step.reschedule", "step.cancel"]
    last = audit["items"][0]
    assert last["actor"] == "token:operator-script" and last["role"] == "operator"
    assert (last["before"]["status"], last["after"]["status"]) == ("SCHEDULED", "CANCELED")
    detail = c.client("viewer").get(f"/api/worklist/{step}").json()
    assert [h["action"] for h in detail["history"]][-1] == "step.cancel"
    assert [m["event"] for m in detail["outbox"]] == ["HD", "SC", "SC", "CA"]
    # The status history: every change with its source (the reschedule is not one).
    assert [(h["from"], h["to"], h["source"], h["actor"]) for h in detail["status_history"]
            ] == [("", "SCHEDULED", "created", ""),
                  ("SCHEDULED", "HELD", "operator", "token:operator-script"),
                  ("HELD", "SCHEDULED", "operator", "token:operator-script"),
                  ("SCHEDULED", "CANCELED", "operator", "token:operator-script")]
    assert detail["status_history"][1]["note"] == "contrast allergy check"


def test_an_item_made_by_hand_is_offered_to_the_modality_and_told_to_the_ris(
        with_ris, tmp_path):
    console, ris = with_ris
    body = {"patient_id": "DT0001", "patient_name": "DOWNTIME^DORA", "accession": "DT-1",
            "modality": "CT", "station": "CT01", "date": "20261128", "time": "1400",
            "procedure": "CT head"}
    made = console.client("operator").post("/api/worklist", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["queued"] == 1
    (item,) = console.daemon.findscu(tmp_path, *FIND_KEYS)
    assert item.AccessionNumber == "DT-1" and item.PatientID == "DT0001"
    dup = console.client("operator").post("/api/worklist", json=body)
    assert dup.status_code == 409
    # The RIS has no order for it: ORC-1 SN (send order number), ORC-5 SC, the accession.
    (sn,) = ris.wait_for(1)
    assert (sn.field("ORC", 1), sn.field("ORC", 5), sn.field("OBR", 18)) == ("SN", "SC", "DT-1")
    detail = console.client("viewer").get(f"/api/worklist/{made.json()['id']}").json()
    assert [(h["from"], h["to"], h["source"], h["note"]) for h in detail["status_history"]
            ] == [("", "SCHEDULED", "operator", "made by hand")]


def test_the_dashboard_shows_cfind_rates_associations_and_instances(console: Console,
                                                                    tmp_path):
    viewer = console.client("viewer")
    before = viewer.get("/api/dashboard").json()
    assert before["live"]["cfind_per_minute"] == 0
    assert before["live"]["associations_open"] == 0
    console.daemon.findscu(tmp_path, *FIND_KEYS)
    console.daemon.findscu(tmp_path, *FIND_KEYS)
    after = viewer.get("/api/dashboard").json()
    assert after["live"]["cfind_per_minute"] == 2 and after["live"]["cfind_5m"] == 2
    assert after["instance_count"] == 1
    (me,) = after["instances"]
    assert me["this"] and "mllp" in me["roles"] and me["version"]


def test_dead_letters_show_the_reason_and_replay(console: Console):
    res = console.daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    assert res.returncode == 1
    api = console.client("viewer")
    page = api.post("/api/messages/search", json={"outcome": "rejected"}).json()
    (dead,) = page["items"]
    detail = api.get(f"/api/messages/{dead['id']}").json()
    assert detail["ack_code"] == "AE" and "Patient ID missing (PID-3)" in detail["error"]
    pid = next(s for s in detail["segments"] if s["segment"] == "PID")
    assert pid["fields"][2]["position"] == "PID-3"
    assert any(s["segment"] == "MSA" for s in detail["ack_segments"])
    replayed = console.client("operator").post(f"/api/messages/{dead['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["ack_code"] == "AE"  # the mapping was not fixed
    # Its audit row was written with the replayed message (one transaction).
    (audit,) = console.client("admin").post("/api/audit/search",
                                            json={"target_kind": "message"}).json()["items"]
    assert audit["action"] == "message.replay" and audit["target_id"] == str(dead["id"])
    assert audit["after"]["message_id"] == replayed.json()["replayed_as"]
    again = api.get(f"/api/messages/{dead['id']}").json()
    assert [r["id"] for r in again["replays"]] == [replayed.json()["replayed_as"]]
    accepted = _accepted_id(console)
    assert console.client("operator").post(f"/api/messages/{accepted}/replay").status_code == 409


def _accepted_id(c: Console) -> int:
    c.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    page = c.client("viewer").post("/api/messages/search", json={"outcome": "accepted"})
    return int(page.json()["items"][0]["id"])


def test_a_dead_status_message_is_retried(tmp_path):
    replies = iter(["AE"])

    def respond(_: Received, __: int) -> Reply:
        return Reply(next(replies, "AA"), error="RIS busy")

    ris = MllpReceiver(respond=respond)
    ris.start()
    c = start_console(tmp_path, outbound_config(ris.port))
    try:
        step = _send_order(c)
        c.client("operator").post(f"/api/worklist/{step}/cancel", json={})
        viewer = c.client("viewer")
        dead = _wait(lambda: viewer.post("/api/outbox/search",
                                         json={"states": ["dead"]}).json()["items"])
        retried = c.client("operator").post(f"/api/outbox/{dead[0]['id']}/retry")
        assert retried.status_code == 200, retried.text
        sent = _wait(lambda: viewer.post("/api/outbox/search",
                                         json={"states": ["sent"]}).json()["items"])
        assert sent[0]["id"] == dead[0]["id"]
        assert c.client("operator").post(f"/api/outbox/{dead[0]['id']}/retry"
                                         ).status_code == 409
    finally:
        code = stop_daemon(c.daemon)
        ris.stop()
    assert code == 0


def _wait(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_mapping_explain_and_check(console: Console):
    api = console.client("viewer")
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_text()
    exp = api.post("/api/mapping/explain", json={"message": text}).json()
    assert exp["mapping"] == "ihe-swf-orm-v231" and exp["error"] is None
    rows = {r["attribute"]: r for r in exp["items"][0]["rows"]}
    assert rows["AccessionNumber"]["value"] == ACCESSION
    assert rows["AccessionNumber"]["field"].startswith("OBR-18")
    bad = api.post("/api/mapping/explain", json={"message": "hello"})
    assert bad.status_code == 422 and "MSH" in bad.json()["error"]["message"]
    check = api.get("/api/mapping/check").json()
    assert check["ok"] and check["active"]


def test_bad_input_is_a_4xx_with_a_clear_message(console: Console):
    api = console.client("operator")
    cases = [
        (api.post("/api/worklist/search", json={"date_from": "2026-11-28"}), 422,
         "date_from"),
        (api.post("/api/worklist/search", json={"limit": 0}), 422, "limit"),
        (api.post("/api/worklist/search", json={"colour": "blue"}), 422, "colour"),
        (api.post("/api/worklist/search", content=b"{not json",
                  headers={"content-type": "application/json"}), 422, "JSON"),
        (api.post("/api/worklist/search", data={"station": "CT01"}), 415, "application/json"),
        (api.post("/api/worklist/1/reschedule", json={"date": "20260230", "time": "1000"}),
         422, "calendar date"),
        (api.post("/api/worklist/424242/cancel", json={}), 404, "no worklist item"),
        (api.post("/api/mapping/explain", content=b'{"message": "' + b"x" * 5 * 2**20 + b'"}',
                  headers={"content-type": "application/json"}), 413, "larger than 4 MiB"),
        (api.post("/api/worklist/99999999999999999999/cancel", json={}), 404, ""),
        (api.get("/api/nothing-here"), 404, ""),
        (api.delete("/api/worklist/search"), 405, ""),
    ]
    for res, status, words in cases:
        assert res.status_code == status, (res.request.url, res.text)
        assert words in res.json()["error"]["message"]


def test_config_in_effect_hides_secrets(console: Console):
    cfg = console.client("admin").get("/api/config").json()
    users = cfg["admin"]["users"]
    assert users and all(u["password_hash"] == "***" for u in users)
    assert all(t["token_sha256"] == "***" for t in cfg["admin"]["tokens"])
    assert "argon2" not in json.dumps(cfg)
    assert cfg["mllp"]["host"] == "127.0.0.1"
