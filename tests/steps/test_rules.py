"""The status rule between MPPS and the HL7 order lifecycle, as a table."""

from __future__ import annotations

import pytest

from bridge.steps.rules import (
    StatusDecision,
    next_status,
    next_status_from_hl7,
    next_status_from_mpps,
)


@pytest.mark.parametrize(("current", "mpps", "after", "changed"), [
    ("SCHEDULED", "IN PROGRESS", "STARTED", True),
    ("SCHEDULED", "COMPLETED", "COMPLETED", True),  # N-CREATE was missed
    ("SCHEDULED", "DISCONTINUED", "DISCONTINUED", True),
    ("ARRIVED", "IN PROGRESS", "STARTED", True),
    ("STARTED", "IN PROGRESS", "STARTED", False),  # a second MPPS for the same step
    ("STARTED", "COMPLETED", "COMPLETED", True),
    ("STARTED", "DISCONTINUED", "DISCONTINUED", True),
    ("CANCELED", "IN PROGRESS", "CANCELED", False),  # HL7 CA wins over IN PROGRESS
    ("CANCELED", "COMPLETED", "CANCELED", False),
    ("DISCONTINUED", "COMPLETED", "DISCONTINUED", False),  # the first terminal stays
    ("COMPLETED", "IN PROGRESS", "COMPLETED", False),
    ("COMPLETED", "DISCONTINUED", "COMPLETED", False),
])
def test_mpps_moves_a_step_only_forward_and_never_reopens(current, mpps, after, changed):
    decision = next_status_from_mpps(current, mpps)
    assert (decision.status, decision.changed) == (after, changed)
    if not changed:
        assert decision.reason


@pytest.mark.parametrize(("current", "hl7", "after"), [
    ("STARTED", "SCHEDULED", "STARTED"),  # an XO does not undo the modality's start
    ("STARTED", "CANCELED", "CANCELED"),  # an HL7 cancel applies over IN PROGRESS
    ("STARTED", "COMPLETED", "COMPLETED"),
    ("COMPLETED", "CANCELED", "COMPLETED"),  # the first terminal status stays
    ("CANCELED", "SCHEDULED", "CANCELED"),  # never reopened by a later NW/XO
    ("SCHEDULED", "DISCONTINUED", "DISCONTINUED"),
])
def test_hl7_side_of_the_same_rule(current, hl7, after):
    assert next_status_from_hl7(current, hl7).status == after


def test_an_unknown_mpps_status_is_an_error():
    with pytest.raises(ValueError, match="'DONE' is not an MPPS status"):
        next_status_from_mpps("SCHEDULED", "DONE")


@pytest.mark.parametrize(("current", "wanted", "decision"), [
    ("STARTED", "SCHEDULED", StatusDecision(
        "STARTED", False, "the modality has started the step; it stays STARTED")),
    ("STARTED", "HELD", StatusDecision(
        "STARTED", False, "the modality has started the step; it stays STARTED")),
    ("CANCELED", "SCHEDULED", StatusDecision(
        "CANCELED", False, "the step is CANCELED, a terminal status, and is never reopened")),
    ("SCHEDULED", "SCHEDULED", StatusDecision("SCHEDULED", False, "already SCHEDULED")),
    ("HELD", "SCHEDULED", StatusDecision("SCHEDULED", True)),
    ("SCHEDULED", "HELD", StatusDecision("HELD", True)),
])
def test_each_refusal_says_why(current, wanted, decision):
    """The whole decision, reason included (the console and the logs show it)."""
    got = next_status(current, wanted)
    assert got == decision
    assert got.changed is decision.changed
