"""The ``orders`` configuration section: order control table, checks, policies, retention.

Kept beside the code it configures; ``bridge.app.settings.Settings`` holds it as
``orders``. Every policy has a safe default, documented in docs/orders.md and
mwl-bridge.example.yaml.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bridge.section import Section, sps_status

OrderAction = Literal["new", "change", "status"]


class OrderControlRule(Section):
    """One row of the ORC-1/ORC-5 table.

    ``action`` says what the message does to the order: ``new`` creates it
    (duplicate checks apply), ``change`` replaces its content in place (XO),
    ``status`` only sets the SPS status and keeps the stored content (cancel,
    discontinue, hold, release, status change).
    """

    control: list[str] = Field(min_length=1, description="ORC-1 values")
    order_status: list[str] = Field(default_factory=lambda: ["*"],
                                    description='ORC-5 values; "" empty, "*" any')
    action: OrderAction
    status: str

    _check_status = field_validator("status")(classmethod(lambda cls, v: sps_status(v)))


def _rule(control: list[str], order_status: list[str], action: OrderAction,
          status: str) -> OrderControlRule:
    return OrderControlRule(control=control, order_status=order_status, action=action,
                            status=status)


def default_order_control() -> list[OrderControlRule]:
    """The reference defaults (IHE SWF as dcm4chee-arc implements it); HD/RL hide and show."""
    return [
        _rule(["NW"], ["", "SC", "IP"], "new", "SCHEDULED"),
        _rule(["XO"], ["", "SC"], "change", "SCHEDULED"),
        _rule(["XO"], ["IP"], "change", "STARTED"),
        _rule(["XO"], ["CM", "A"], "change", "COMPLETED"),
        _rule(["SC"], ["SC"], "status", "SCHEDULED"),
        _rule(["SC"], ["IP"], "status", "STARTED"),
        _rule(["SC"], ["CM", "A"], "status", "COMPLETED"),
        _rule(["SC"], ["CA"], "status", "CANCELED"),
        _rule(["SC"], ["DC"], "status", "DISCONTINUED"),
        _rule(["SC"], ["HD"], "status", "HELD"),
        _rule(["CA", "OC"], ["*"], "status", "CANCELED"),
        _rule(["DC", "OD"], ["*"], "status", "DISCONTINUED"),
        _rule(["HD"], ["*"], "status", "HELD"),
        _rule(["RL"], ["*"], "status", "SCHEDULED"),
    ]


class PatientChecks(Section):
    # HL7 table 0001 (administrative sex); [] turns the check off.
    sex_codes: list[str] = Field(default_factory=lambda: ["F", "M", "O", "U", "A", "N"])
    require_family_name: bool = True
    reject_future_birth_date: bool = True
    # Issuers of Patient ID (PID-3.4.1) accepted; [] accepts any. List "" to
    # accept IDs without an issuer.
    trusted_issuers: list[str] = Field(default_factory=list)
    # A known Patient ID arriving with a different name AND birth date.
    demographics_conflict: Literal["accept_flag", "accept", "reject"] = "accept_flag"
    # An order or update for a Patient ID that was merged away (A40) or replaced (A47).
    merged_ids: Literal["reject", "redirect"] = "reject"
    # An A40 whose prior patient (or survivor) was itself already merged elsewhere.
    merge_of_merged: Literal["reject", "follow"] = "reject"


class AdtSettings(Section):
    # Events whose PID replaces the patient's demographics on every stored item.
    # A11/A13 (cancel admit/discharge), A23 (delete visit data), A35 (merge account)
    # and A37 (unlink) change nothing the worklist holds but their current PID.
    update_events: list[str] = Field(
        default_factory=lambda: ["A01", "A04", "A05", "A08", "A28", "A31",
                                 "A11", "A13", "A23", "A35", "A37"])
    # A34 and A36 (v2.3.1 merges of the patient ID) carry MRG-1 as A40 does.
    merge_events: list[str] = Field(default_factory=lambda: ["A40", "A34", "A36"])
    change_id_events: list[str] = Field(default_factory=lambda: ["A47"])
    # The mapping whose patient rules (PatientID, PatientName, ...) read the PID of
    # ADT messages; "" means the first mapping in routing order.
    patient_mapping: str = ""


class ResultSettings(Section):
    enabled: bool = True
    final_statuses: list[str] = Field(default_factory=lambda: ["F"])  # OBR-25 values
    status: str = "COMPLETED"
    accession: str = "OBR-18 | OBR-3.1"
    requested_procedure_id: str = "OBR-19"
    unknown_order: Literal["accept", "reject"] = "accept"

    _check_status = field_validator("status")(classmethod(lambda cls, v: sps_status(v)))

    @field_validator("accession", "requested_procedure_id")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            return ""
        from bridge.mapping.paths import PathSyntax, PathSyntaxError

        try:
            PathSyntax({}).chain(value)
        except PathSyntaxError as exc:
            raise ValueError(f"not a field path: {exc}") from None
        return value


class MessageLogSettings(Section):
    # Accepted (AA) messages are purged after this many days; 0 keeps them forever.
    accepted_days: float = Field(default=30.0, ge=0)
    # Rejected messages (dead letters) likewise; 0 keeps them until deleted.
    rejected_days: float = Field(default=180.0, ge=0)
    purge_interval_s: float = Field(default=3600.0, gt=0)
    # Recent accepted messages answered from memory when resent (exact resends
    # cost no database access); older ones are found in the database.
    replay_cache: int = Field(default=20000, ge=0)


class OrdersSettings(Section):
    order_control: list[OrderControlRule] = Field(default_factory=default_order_control)
    # XO, CA, SC, ... for an order the bridge has never seen.
    unknown_order: Literal["create", "reject"] = "create"
    # NW for an order that exists with different content (identical content is
    # always accepted without change).
    new_order_exists: Literal["reject", "change"] = "reject"
    # The same Accession Number for a different patient. Allowing it is loud:
    # a warning at start and on every message that does it.
    accession_other_patient: Literal["reject", "allow_with_warning"] = "reject"
    # The most one stored worklist item (its DICOM JSON) may take; a message that
    # would store a larger one is answered AE 104 naming its largest attribute.
    max_item_bytes: int = Field(default=256 * 1024, ge=16 * 1024)
    # Worklist items one message may make: each is written in the message's one
    # transaction, on the store's only writer, while every other sender's commit
    # waits (490 items: half a second). More: AE 100 at the first group too many.
    max_items_per_message: int = Field(default=50, ge=1)
    # Processes that decode, tokenize and map frames (bridge/orders/workers.py): "auto"
    # is one fewer than the cores, for frames over 64 KiB, and on three cores or more
    # also for small frames while another is in flight and a worker is idle; N sends
    # every frame to N workers; 0 decides everything in the daemon.
    workers: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = "auto"
    patients: PatientChecks = PatientChecks()
    adt: AdtSettings = AdtSettings()
    results: ResultSettings = ResultSettings()
    messages: MessageLogSettings = MessageLogSettings()

    @model_validator(mode="after")
    def _unambiguous_table(self) -> OrdersSettings:
        seen: dict[tuple[str, str], int] = {}
        for i, rule in enumerate(self.order_control):
            for control in rule.control:
                for status in rule.order_status:
                    key = (control, status)
                    if key in seen:
                        raise ValueError(
                            f"order_control[{i}]: {control}/{status or '(empty)'} is already "
                            f"in order_control[{seen[key]}]")
                    seen[key] = i
        return self
