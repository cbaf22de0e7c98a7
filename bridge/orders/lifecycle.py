"""Order control: what one order message does to one scheduled procedure step. Pure.

ORC-1 (with ORC-5) selects a row of the configured table (orders.order_control):
an action and an SPS status.

- ``new`` (NW): create the step. The same order again with identical content
  is accepted without change; with different content the policy
  ``orders.new_order_exists`` rejects it or treats it as a change.
- ``change`` (XO): replace the stored content in place, with the row's status.
- ``status`` (CA, OC, DC, OD, SC, HD, RL): set the status, keep the content.
  Cancel messages often carry only the keys, and a hold/release must not
  lose the station or the start time the order was scheduled with.

The stable keys a modality copies into its images never change under an
existing order: a change keeps the stored Study Instance UID, even when the
message derives another one because it has no ZDS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydicom import Dataset

from bridge.mapping import OrderControl
from bridge.orders import errors
from bridge.orders.errors import Rejection
from bridge.orders.settings import OrderControlRule, OrdersSettings
from bridge.steps import next_status, replaced
from bridge.steps import with_status as set_status
from bridge.store.items import dumps_item
from bridge.store.orders_tx import StoredStep


class ControlTable:
    """The ORC-1/ORC-5 table: an exact ORC-5 entry wins over the row's ``*``."""

    def __init__(self, rules: Sequence[OrderControlRule]) -> None:
        self._exact: dict[tuple[str, str], OrderControlRule] = {}
        self._any: dict[str, OrderControlRule] = {}
        for rule in rules:
            for control in rule.control:
                for status in rule.order_status:
                    if status == "*":
                        self._any.setdefault(control.upper(), rule)
                    else:
                        self._exact.setdefault((control.upper(), status.upper()), rule)

    def lookup(self, control: OrderControl) -> OrderControlRule:
        """The row for this ORC-1/ORC-5, or a Rejection (AE at ORC-1)."""
        if not control.code:
            raise Rejection("AE", errors.REQUIRED_FIELD_MISSING, control.location,
                            "ORC-1 (order control) is required to know what the message does")
        rule = self._exact.get((control.code, control.status)) or self._any.get(control.code)
        if rule is None:
            shown = f"{control.code}/{control.status}" if control.status else control.code
            raise Rejection("AE", errors.TABLE_VALUE_NOT_FOUND, control.location,
                            f"order control {shown} (ORC-1/ORC-5) is not in the order control "
                            "table (orders.order_control)")
        return rule


class StepChange(StrEnum):
    INSERT = "insert"
    REPLACE = "replace"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class StepDecision:
    change: StepChange
    item: Dataset
    step_id: int | None = None
    note: str = ""  # a flag for the message log (e.g. a Study UID the message disagreed on)


def _keep_keys(incoming: Dataset, stored: Dataset) -> tuple[Dataset, bool]:
    """``incoming`` with the stored Study Instance UID; True when they differed."""
    stored_uid = str(stored.get("StudyInstanceUID", "") or "")
    new_uid = str(incoming.get("StudyInstanceUID", "") or "")
    if not stored_uid or stored_uid == new_uid:
        return incoming, False
    return replaced(incoming, "StudyInstanceUID", stored_uid), True


def decide_step(incoming: Dataset, rule: OrderControlRule, existing: StoredStep | None,
                settings: OrdersSettings, *, control: OrderControl,
                locate: Callable[[str], str], uid_from_message: Callable[[], bool]
                ) -> StepDecision:
    """What to store for one step; a Rejection when the policy says no.

    ``locate(keyword)`` names the HL7 field an attribute came from, for errors;
    ``uid_from_message()`` tells a Study UID the message sent from a derived one.
    """
    if existing is None:
        if rule.action != "new" and settings.unknown_order == "reject":
            raise Rejection("AE", errors.UNKNOWN_KEY, locate("AccessionNumber") or
                            control.location,
                            f"{control.code} for an order that is not scheduled here (no step "
                            "with this Accession Number, Requested Procedure ID and SPS ID)")
        return StepDecision(StepChange.INSERT, set_status(incoming, rule.status))

    # The conflict rule of every path (bridge/steps/rules.py): a finished step
    # is never reopened, and a step a modality has started does not go back.
    status = next_status(existing.status, rule.status).status
    if rule.action == "status":
        item = set_status(existing.item, status)
        return _replace_or_keep(item, existing)

    candidate, kept = _keep_keys(incoming, existing.item)
    # A derived UID (no ZDS in a change message) differing is expected; a UID the RIS
    # sent that differs from the one modalities already have is worth a look.
    note = "study_uid_differs" if kept and uid_from_message() else ""
    if rule.action == "new":
        same = set_status(candidate, existing.status)
        if dumps_item(same) == dumps_item(existing.item):
            return StepDecision(StepChange.UNCHANGED, existing.item, existing.id, note)
        if settings.new_order_exists == "reject":
            raise Rejection("AR", errors.DUPLICATE_KEY, control.location,
                            "NW for an order that already exists with different content; "
                            "send XO to change it (orders.new_order_exists: reject)")
    item = set_status(candidate, status)
    decision = _replace_or_keep(item, existing)
    return StepDecision(decision.change, decision.item, existing.id, note)


def _replace_or_keep(item: Dataset, existing: StoredStep) -> StepDecision:
    if dumps_item(item) == dumps_item(existing.item):
        return StepDecision(StepChange.UNCHANGED, existing.item, existing.id)
    return StepDecision(StepChange.REPLACE, item, existing.id)
