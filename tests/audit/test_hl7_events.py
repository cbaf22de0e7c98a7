"""HL7 messages in as Order / Patient Record events (bridge/orders/audited.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.audit.events import Local
from bridge.orders.apply import Outcome
from bridge.orders.audited import KEEP_BYTES, hl7_builder
from bridge.orders.errors import Rejection

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
LOCAL = Local("MWL", "1", "host")
ACCEPTED = Outcome(b"", "AA", 1, "1 inserted")


@pytest.mark.parametrize(("fixture", "event_id", "action", "patient"), [
    ("orm-o01-ihe-ct.hl7", "110109", "C", "PAT10001"),
    ("orm-cancel-ca.hl7", "110109", "D", None),
    ("adt-a08-update.hl7", "110110", "U", None),
    ("adt-a01.hl7", "110110", "C", None),
    ("lifecycle-oru-r01-final.hl7", "110109", "U", None),
])
def test_each_message_kind_has_its_event_and_action(fixture, event_id, action, patient):
    payload = (FIXTURES / fixture).read_bytes()
    event = hl7_builder(payload, "10.1.2.3:4000", ACCEPTED)(LOCAL)
    assert event is not None
    assert (event.event_id.code, event.action, event.outcome) == (event_id, action, 0)
    assert event.participants[0].network == "10.1.2.3"
    assert len(event.patients) == 1
    if patient:
        assert event.patients == (patient,)


def test_a_rejected_message_is_a_minor_failure_with_the_error_text():
    payload = (FIXTURES / "orm-missing-pid3.hl7").read_bytes()
    rejected = Outcome(b"", "AE", 2, "rejected",
                       rejection=Rejection("AE", 101, "PID^1^3", "Patient ID missing (PID-3)"))
    event = hl7_builder(payload, "10.1.2.3:4000", rejected)(LOCAL)
    assert event is not None and event.outcome == 4
    assert event.outcome_text == "Patient ID missing (PID-3)"


def test_resends_and_frames_that_are_not_hl7_make_no_event():
    payload = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
    resend = Outcome(b"", "AA", None, "resend", replayed=True)
    assert hl7_builder(payload, "p:1", resend)(LOCAL) is None
    assert hl7_builder(b"hello", "p:1", Outcome(b"", "", None, "not HL7"))(LOCAL) is None


def test_a_large_message_waits_in_the_queue_cut_at_a_segment_boundary():
    payload = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().rstrip(b"\r") + b"\r" + \
        b"".join(b"NTE|%d||%s\r" % (i, b"x" * 1000) for i in range(200))
    builder = hl7_builder(payload, "p:1", ACCEPTED)
    kept = builder.args[0]  # type: ignore[attr-defined]
    assert len(kept) <= KEEP_BYTES and kept.endswith(b"\r") and len(payload) > KEEP_BYTES
    event = builder(LOCAL)
    assert event is not None and event.patients == ("PAT10001",)
