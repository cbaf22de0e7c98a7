"""Procedure step status: its one home.

    rules.py   the states, the terminal set, the ORC-5 map, the conflict rule (pure)
    change.py  ``change_status``: the one function that writes a status change and
               queues its HL7 status messages in the same transaction

Every path that changes a step's status (HL7 order control, ORU results, MPPS,
idle rules, later PACS reconciliation and operator actions) calls
``change_status``. This package sits just above ``store``: it imports nothing
of orders, mpps, outbound or maintenance, which all import it.
"""

from bridge.steps.change import (
    Reporter,
    Source,
    StatusChange,
    StepState,
    StepUpdate,
    change_status,
    order_key,
    replaced,
    report,
    report_step,
    step_status,
    with_status,
)
from bridge.steps.rules import (
    CANCELED,
    COMPLETED,
    DISCONTINUED,
    HELD,
    IN_PROGRESS,
    MPPS_FINAL,
    MPPS_STATUSES,
    ORC5_FOR_MPPS,
    ORC5_FOR_SPS,
    SCHEDULED,
    SPS_FOR_MPPS,
    STARTED,
    TERMINAL,
    StatusDecision,
    next_status,
    next_status_from_hl7,
    next_status_from_mpps,
)

__all__ = [
    "CANCELED", "COMPLETED", "DISCONTINUED", "HELD", "IN_PROGRESS", "MPPS_FINAL", "MPPS_STATUSES",
    "ORC5_FOR_MPPS", "ORC5_FOR_SPS", "SCHEDULED", "SPS_FOR_MPPS", "STARTED", "TERMINAL",
    "Reporter", "Source", "StatusChange", "StatusDecision", "StepState", "StepUpdate",
    "change_status", "next_status", "next_status_from_hl7", "next_status_from_mpps",
    "order_key", "replaced", "report", "report_step", "step_status", "with_status",
]
