"""Procedure step status: the states, the one terminal set, the ORC-5 map, and the
conflict rule every path obeys (HL7 order control, ORU results, MPPS, idle rules).
Pure functions, no I/O; bridge/steps/change.py applies them in the store.

The rule (docs/mpps-outbound.md, "When HL7 and MPPS disagree"):

1. A terminal status (COMPLETED, DISCONTINUED, CANCELED) is never reopened:
   not by a later MPPS, and not by an HL7 NW/XO that still says SCHEDULED.
   An HL7 cancel (CA) therefore wins over an MPPS IN PROGRESS that arrives
   after it; the MPPS is still stored, but the step keeps CANCELED and no
   status message goes out for it.
2. Status only moves forward along SCHEDULED (or any other non-terminal
   status) -> STARTED -> COMPLETED | DISCONTINUED. An HL7 NW/XO for a step
   that a modality has STARTED keeps STARTED (the demographic update still
   applies); an HL7 terminal status (CA, DC, CM) applies over STARTED.
3. Whichever terminal status arrives first stays: an MPPS COMPLETED after an
   HL7 DC leaves DISCONTINUED, and an HL7 CA after an MPPS COMPLETED leaves
   COMPLETED.

``next_status`` is the rule in SPS terms; ``next_status_from_mpps`` first
translates an MPPS status (IN PROGRESS -> STARTED), ``next_status_from_hl7`` is
``next_status`` under the name the HL7 side has always used.
"""

from __future__ import annotations

from dataclasses import dataclass

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
MPPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
MPPS_FINAL = frozenset({COMPLETED, DISCONTINUED})

SCHEDULED = "SCHEDULED"
STARTED = "STARTED"
CANCELED = "CANCELED"
TERMINAL = frozenset({COMPLETED, DISCONTINUED, CANCELED})

HELD = "HELD"

# MPPS status -> SPS status, and SPS status -> HL7 ORC-5 (order status, table 0038).
# Only these SPS statuses are ever reported to the RIS: IP, CM and DC by MPPS and
# idle rules; CA, HD and SC by an operator's cancel, hold and release (console).
SPS_FOR_MPPS = {IN_PROGRESS: STARTED, COMPLETED: COMPLETED, DISCONTINUED: DISCONTINUED}
ORC5_FOR_SPS = {STARTED: "IP", COMPLETED: "CM", DISCONTINUED: "DC", CANCELED: "CA",
                HELD: "HD", SCHEDULED: "SC"}
ORC5_FOR_MPPS = {mpps: ORC5_FOR_SPS[sps] for mpps, sps in SPS_FOR_MPPS.items()}


@dataclass(frozen=True, slots=True)
class StatusDecision:
    """``status`` is the step's status afterwards; ``changed`` whether it moved."""

    status: str
    changed: bool
    reason: str = ""


def _rank(status: str) -> int:
    if status in TERMINAL:
        return 2
    if status == STARTED:
        return 1
    return 0


def next_status(current: str, wanted: str) -> StatusDecision:
    """The step's status after an event that asks for SPS status ``wanted``.

    The one rule for every source: a terminal status is never reopened, and a
    step a modality has started does not go back to a status before STARTED.
    """
    if current == wanted:
        return StatusDecision(current, False, f"already {current}")
    if current in TERMINAL:
        return StatusDecision(current, False,
                              f"the step is {current}, a terminal status, and is never reopened")
    if current == STARTED and _rank(wanted) < _rank(current):
        return StatusDecision(current, False,
                              "the modality has started the step; it stays STARTED")
    return StatusDecision(wanted, True)


def next_status_from_mpps(current: str, mpps_status: str) -> StatusDecision:
    """The step's status after an MPPS event with ``mpps_status``.

    Raises ValueError for a value that is not an MPPS status.
    """
    if mpps_status not in SPS_FOR_MPPS:
        raise ValueError(f"{mpps_status!r} is not an MPPS status")
    return next_status(current, SPS_FOR_MPPS[mpps_status])


# The HL7 side's name for the same rule (an order message maps to an SPS status).
next_status_from_hl7 = next_status
