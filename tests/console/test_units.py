"""The console's parts without a daemon: the OpenAPI document in the repository,
the failed-login limit, secrets hidden, HL7 field positions, the worklist's date
range on the store's indexes, and the audit rows written with an action."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.console import actions, views
from bridge.console.auth import Authenticator, LoginLimiter, hash_password, new_token
from bridge.console.openapi import document
from bridge.console.settings import AdminSettings, ConsoleToken, ConsoleUser
from bridge.store import SqliteStore, StepFilter, audit_tx
from tests.store.test_store import make_item

REPO = Path(__file__).resolve().parents[2]


def test_docs_openapi_json_is_the_document_the_code_makes():
    kept = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert kept == document(), ("docs/openapi.json is stale: "
                                "mwl-bridge admin openapi > docs/openapi.json")
    paths = document()["paths"]
    assert "/api/worklist/search" in paths and "/api/worklist/{id}/cancel" in paths
    # listings take their filters in a body: no patient data in URLs
    assert all("parameters" not in op or all(p["in"] == "path" for p in op["parameters"])
               for ops in paths.values() for op in ops.values())


def test_login_limit_per_user_and_per_address():
    now = [0.0]
    limiter = LoginLimiter(max_failures=2, window_s=60, clock=lambda: now[0])
    limiter.failed("user:a", "addr:1")
    assert limiter.retry_after("user:a", "addr:1") == 0
    limiter.failed("user:a", "addr:1")
    assert limiter.retry_after("user:a", "addr:1") == pytest.approx(60)
    assert limiter.retry_after("user:b", "addr:1") == 0  # the address allows 8
    now[0] = 61
    assert limiter.retry_after("user:a", "addr:1") == 0


def test_passwords_and_tokens():
    token, digest = new_token()
    settings = AdminSettings(users=[ConsoleUser(name="a", password_hash=hash_password("pw-123456"),
                                                role="operator")],
                             tokens=[ConsoleToken(name="t", token_sha256=digest)])
    auth = Authenticator(settings)
    assert auth.check_password("a", "pw-123456").role == "operator"
    assert auth.check_password("a", "wrong") is None
    assert auth.check_password("nobody", "pw-123456") is None
    assert auth.check_token(token).label == "token:t"
    assert auth.check_token(token + "x") is None
    with pytest.raises(ValueError, match="argon2"):
        ConsoleUser(name="b", password_hash="plain")


def test_secrets_are_hidden():
    shown = views.redacted({"admin": {"users": [{"name": "a", "password_hash": "$argon2..."}],
                                      "tokens": [{"name": "t", "token_sha256": "ab" * 32}]},
                            "store": {"postgresql_dsn": "host=x password=y", "backend": "pg"}})
    assert shown["admin"]["users"][0] == {"name": "a", "password_hash": "***"}
    assert shown["admin"]["tokens"][0]["token_sha256"] == "***"
    assert shown["store"] == {"postgresql_dsn": "***", "backend": "pg"}


def test_segments_number_fields_as_hl7_does():
    segs = views.segments("MSH|^~\\&|RIS|HOSP\rPID|1||PAT1\rPID|2")
    msh, pid, pid2 = segs
    assert [f["position"] for f in msh["fields"][:3]] == ["MSH-1", "MSH-2", "MSH-3"]
    assert msh["fields"][1]["value"] == "^~\\&"
    assert pid["fields"][2] == {"position": "PID-3", "value": "PAT1"}
    assert (pid2["segment"], pid2["repeat"]) == ("PID", 2)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "s.sqlite3")
    s.migrate()
    yield s
    s.close()


def test_date_range_with_and_without_station(store):
    store.upsert_steps([make_item(1, date="20261127"), make_item(2, date="20261128"),
                        make_item(3, date="20261129", station="MR01"),
                        make_item(4, date="20261130")])

    def accessions(**kw: str) -> list[str]:
        return [str(r.item.AccessionNumber) for r in store.iter_steps(StepFilter(**kw),
                                                                       limit=10)]

    assert accessions(date_from="20261128", date_to="20261129") == ["ACC00002", "ACC00003"]
    assert accessions(date_from="20261129") == ["ACC00003", "ACC00004"]
    assert accessions(station="CT01", date_to="20261128") == ["ACC00001", "ACC00002"]
    assert accessions(station="CT01", date_from="20261128", date_to="20261130") == [
        "ACC00002", "ACC00004"]
    assert store.count_matching(StepFilter(station="MR01", date_from="20261130")) == 0


def test_an_action_and_its_audit_row_share_one_transaction(store):
    store.upsert_steps([make_item(1)])
    actor = actions.Actor("alice", "admin", "127.0.0.1")
    (result,) = store.write([actions.status_job(1, "hold", actor, None, "why")])
    assert not isinstance(result, Exception) and result.status == "HELD"
    (refused,) = store.write([actions.status_job(1, "hold", actor, None)])
    assert isinstance(refused, actions.ActionRefused) and refused.status == 409
    (missing,) = store.write([actions.status_job(99, "cancel", actor, None)])
    assert isinstance(missing, actions.ActionRefused) and missing.status == 404
    rows, total = audit_tx.search(store, limit=10)
    assert total == 1  # the refused ones wrote nothing
    assert (rows[0].actor, rows[0].action, rows[0].before["status"],
            rows[0].after["status"]) == ("alice", "step.hold", "SCHEDULED", "HELD")
