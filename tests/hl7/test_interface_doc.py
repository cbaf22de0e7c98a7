"""docs/hl7-interface.md against the code: error codes, message types, allow-list refusals."""

from __future__ import annotations

import functools
import re
from datetime import date
from pathlib import Path
from typing import get_args

import pytest
import yaml

import bridge.mapping.errors as mapping_errors
import bridge.orders.errors as order_errors
from bridge.hl7 import decode_frame, hl7_error_text, parse_message
from bridge.hl7.access import UNKNOWN_KEY
from bridge.mapping import MappingSet, load_mappings
from bridge.orders.apply import MergeWork, PatientUpdateWork, ResultWork, Work
from bridge.orders.errors import Rejection
from bridge.orders.intake import Intake
from bridge.orders.settings import OrdersSettings
from bridge.outbound.loader import load_profiles
from bridge.outbound.sender import DEAD_CODES, DONE_CODES
from bridge.outbound.settings import MESSAGE_TYPES as OUTBOUND_MESSAGE_TYPES
from bridge.outbound.settings import OutboundDestination
from bridge.steps.rules import ORC5_FOR_MPPS, ORC5_FOR_SPS
from tests.doctables import markdown_table

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "hl7-interface.md"


def table(header_start: str) -> list[list[str]]:
    return markdown_table(DOC, header_start)


def module_codes(module: object) -> set[int]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, int)}


def test_error_code_table_names_every_code_the_bridge_sends():
    rows = table("| Code | Text | Sent when |")
    for code, text, _ in rows:
        assert hl7_error_text(int(code)) == text
    documented = {int(row[0]) for row in rows}
    sent = module_codes(mapping_errors) | {UNKNOWN_KEY} | module_codes(order_errors)
    assert sent <= documented


def test_message_type_table_lists_every_shipped_mapping():
    documented = {(row[0], row[2].strip("`")) for row in table("| Message | Versions")}
    for path in sorted((REPO / "mappings").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        types = doc["match"].get("message_type", [])
        for message_type in [types] if isinstance(types, str) else types:
            assert (message_type, doc["name"]) in documented, path.name


def test_allow_list_refusals_use_the_documented_code():
    rows = table("| Refusal | MSA-1 | ERR-3 | ERR-2 | ERR-8 |")
    assert {(r[1], int(r[2])) for r in rows} == {("AR", UNKNOWN_KEY)}


# --- section 6: limits -----------------------------------------------------------------


def test_limits_table_is_the_settings_and_what_the_limits_answer():
    """Each row's setting exists with the documented default; the rows are every
    structural limit; and a message one over each mllp limit gets the row's answer."""
    from bridge.hl7 import HL7LimitError, Limits
    from bridge.hl7.settings import MllpSettings

    rows = table("| Limit | Setting | Default | MSA-1 | ERR-3 | ERR-2 |")
    sections = {"mllp": MllpSettings(), "orders": OrdersSettings()}
    documented = {}
    for _, setting, default, ack, code, _ in rows:
        section, key = setting.strip("`").split(".")
        assert getattr(sections[section], key) == int(default), setting
        documented[key] = (ack, int(code))
    assert documented["max_item_bytes"] == ("AE", order_errors.VALUE_TOO_LONG)
    assert documented["max_items_per_message"] == ("AE", order_errors.SEGMENT_SEQUENCE_ERROR)
    assert set(documented) == {"max_segments", "max_fields", "max_repetitions",
                               "max_components", "max_items_per_message", "max_item_bytes"}
    tight = Limits(segments=3, fields=70, repetitions=2, components=30)
    over = {"max_segments": "MSH|^~\\&|A\rPID|1\rPV1|1\rORC|1\r",
            "max_fields": "MSH|^~\\&|A\rZXX" + "|" * 71 + "\r",
            "max_repetitions": "MSH|^~\\&|A\rPID|1||a~b~c\r",
            "max_components": "MSH|^~\\&|A\rPID|1||" + "^" * 30 + "\r"}
    for key, text in over.items():
        with pytest.raises(HL7LimitError) as caught:
            parse_message(text, tight)
        # ingest answers every HL7LimitError with AE (bridge/orders/ingest.py)
        assert ("AE", caught.value.code) == documented[key], key
        assert f"(mllp.{key})" in str(caught.value)


# --- section 2: messages the order side handles itself ---------------------------------

FIXTURES = REPO / "fixtures" / "hl7"
ORDERS_DOC = REPO / "docs" / "orders.md"
TODAY = date(2026, 11, 30)


@functools.cache
def shipped_mappings() -> MappingSet:
    return load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")


def prepare(data: bytes, settings: OrdersSettings | None = None) -> Work | Rejection:
    """What the order side makes of ``data`` before anything is stored (no store needed)."""
    text = decode_frame(data, default="ascii", aliases={}).text
    intake = Intake(shipped_mappings, settings or OrdersSettings(), today=lambda: TODAY)
    return intake.prepare(parse_message(text)).work


def with_event(name: str, event: str) -> bytes:
    """A fixture with MSH-9.2 (and EVN-1, if any) set to ``event``."""
    data = (FIXTURES / name).read_bytes()
    old = data.split(b"|")[8].split(b"^")[1]
    return data.replace(b"^" + old + b"^", b"^" + event.encode() + b"^", 1) \
               .replace(b"\rEVN|" + old, b"\rEVN|" + event.encode())


# Per "Handled as": a fixture of that kind, and what the order side must make of it.
HANDLED_AS = {
    "patient update": ("adt-a08-update.hl7", lambda w: isinstance(w, PatientUpdateWork)),
    "merge": ("adt-a40-merge.hl7", lambda w: isinstance(w, MergeWork) and not w.change_id),
    "identifier change": ("adt-a47-change-id.hl7",
                          lambda w: isinstance(w, MergeWork) and w.change_id),
    "result": ("lifecycle-oru-r01-final.hl7", lambda w: isinstance(w, ResultWork)),
}


def test_order_side_message_table_is_what_intake_does():
    rows = table("| Message | Setting | Handled as | What it does |")
    defaults = OrdersSettings()
    settings = {"`orders.adt.update_events`": defaults.adt.update_events,
                "`orders.adt.merge_events`": defaults.adt.merge_events,
                "`orders.adt.change_id_events`": defaults.adt.change_id_events}
    documented: dict[str, set[str]] = {name: set() for name in settings}
    for message, setting, handled_as, _ in rows:
        code, event = message.split("^")
        if code == "ORU":
            assert (event, setting) == ("R01", "`orders.results`") and defaults.results.enabled
        else:
            assert code == "ADT" and event in settings[setting], message
            documented[setting].add(event)
        fixture, check = HANDLED_AS[handled_as]
        work = prepare(with_event(fixture, event))
        assert check(work), (message, work)
    # Every event the defaults handle has its row.
    assert documented == {name: set(events) for name, events in settings.items()}


def test_an_event_taken_out_of_its_setting_goes_to_the_mappings():
    settings = OrdersSettings(adt={"update_events": ["A08"]})
    rejection = prepare(with_event("adt-a08-update.hl7", "A04"), settings)
    assert isinstance(rejection, Rejection)
    assert (rejection.ack_code, rejection.code, rejection.location) == ("AR", 200, "MSH^1^9")


# --- section 6: order-side rejections ---------------------------------------------------


def orders_doc_rejections() -> set[tuple[str, ...]]:
    lines = ORDERS_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("| what | ACK | ERR code | ERR location |")
    rows = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.add(tuple(cell.strip() for cell in line.strip().strip("|").split("|")))
    return rows


def without_segments(name: str, *segments: bytes) -> bytes:
    lines = (FIXTURES / name).read_bytes().split(b"\r")
    return b"\r".join(line for line in lines if line[:3] not in segments)


# Rows the order side decides before the store: the fixture, settings, and the message.
BEFORE_THE_STORE = {
    "PID-3 missing": ((FIXTURES / "orm-missing-pid3.hl7").read_bytes(), None),
    "Patient ID too long": ((FIXTURES / "check-long-patient-id.hl7").read_bytes(), None),
    "birth date not a date": ((FIXTURES / "orm-bad-birthdate.hl7").read_bytes(), None),
    "birth date in the future": ((FIXTURES / "check-future-birthdate.hl7").read_bytes(), None),
    "sex code not in `sex_codes`": ((FIXTURES / "check-sex-code.hl7").read_bytes(), None),
    "empty family name": ((FIXTURES / "check-no-family-name.hl7").read_bytes(), None),
    "issuer not trusted": ((FIXTURES / "check-untrusted-issuer.hl7").read_bytes(),
                           OrdersSettings(patients={"trusted_issuers": ["HOSP"]})),
    "ORC-1 empty": ((FIXTURES / "lifecycle-nw.hl7").read_bytes().replace(b"\rORC|NW|",
                                                                         b"\rORC||"), None),
    "ORC-1/ORC-5 not in the table": (
        (FIXTURES / "lifecycle-xx-unknown-control.hl7").read_bytes(), None),
    "A40/A47 without MRG-1": ((FIXTURES / "adt-a40-no-mrg.hl7").read_bytes(), None),
    "ORU^R01 without OBR": (without_segments("lifecycle-oru-r01-final.hl7", b"OBR", b"OBX"),
                            None),
}
# Rows that need what the store knows; tests/orders sends each through the real pipeline.
IN_THE_WRITE_JOB = {
    "known ID, other name and birth date (`reject`)",
    "ID merged or replaced (`merged_ids: reject`)",
    "NW for an existing order, other content (`reject`)",
    "two groups name the same step",
    "Accession Number of another patient",
    "status message for an unknown order (`unknown_order: reject`)",
    "MSH-10 reused with other content",
    "MRG-1 equal to PID-3",
    "prior patient already merged (`merge_of_merged: reject`)",
    "surviving patient merged away (`merge_of_merged: reject`)",
    "A47 to an ID in use",
    "final result for an unknown order (`unknown_order: reject`)",
}


def location_pattern(documented: str) -> str:
    """``ORC^n^1`` -> a regex where n (segment) and r (repetition) are numbers."""
    text = documented.strip("`")
    return "^" + re.sub(r"(?<=\^)[nr](?=\^|$)", r"\\d+", re.escape(text).replace(r"\^", "^")
                        ).replace("^", r"\^") + "$"


def test_order_rejection_table_agrees_with_orders_md_and_the_codes():
    rows = table("| Rejection | MSA-1 | ERR-3 | ERR-2 |")
    order_codes = module_codes(order_errors) | module_codes(mapping_errors)
    assert {r[0] for r in rows} == set(BEFORE_THE_STORE) | IN_THE_WRITE_JOB
    full = orders_doc_rejections()
    for what, ack, code, location in rows:
        assert (what, ack, code, location) in full, what
        assert ack in ("AE", "AR") and int(code) in order_codes, what


@pytest.mark.parametrize("what", sorted(BEFORE_THE_STORE))
def test_order_rejection_rows_are_what_the_order_side_answers(what):
    row = next(r for r in table("| Rejection | MSA-1 | ERR-3 | ERR-2 |") if r[0] == what)
    _, ack, code, location = row
    data, settings = BEFORE_THE_STORE[what]
    rejection = prepare(data, settings)
    assert isinstance(rejection, Rejection), rejection
    assert (rejection.ack_code, rejection.code) == (ack, int(code))
    assert re.match(location_pattern(location), rejection.location), rejection.location


# --- section 7: outbound status messages ------------------------------------------------


def test_outbound_message_table_lists_every_shipped_profile():
    rows = table("| Message | Version (MSH-12) | Profile | Carries the order's keys in |")
    profiles = {p.name: p for p in load_profiles([REPO / "mappings" / "outbound"])}
    assert {r[2].strip("`") for r in rows} == set(profiles)
    assert [r[0] for r in rows] == list(OUTBOUND_MESSAGE_TYPES)
    for message, version, name, keys in rows:
        profile = profiles[name.strip("`")]
        assert (profile.event_type, profile.version) == (message, version), name
        written = {(seg.name, f.field) for seg in profile.segments for f in seg.fields}
        bare = re.sub(r"\([^)]*\)", "", keys)  # "(IHE SWF)", "(Study Instance UID)"
        for ref in re.findall(r"\b([A-Z][A-Z0-9]{2})(?:-([0-9/.]+))?", bare):
            segment, numbers = ref
            if not numbers:
                assert any(s == segment for s, _ in written), (name, segment)
                continue
            if ".." in numbers:
                low, high = numbers.split("..")
                fields = range(int(low), int(high) + 1)
            else:
                fields = [int(n) for n in numbers.split("/")]
            for field in fields:
                assert (segment, field) in written, (name, f"{segment}-{field}")


def test_outbound_event_table_is_the_status_rule():
    rows = table("| Event | ORC-5 | Sent when |")
    events = get_args(OutboundDestination.model_fields["events"].annotation.__args__[0])
    assert [r[0] for r in rows] == list(events)
    assert {r[0]: r[1] for r in rows} == {v: v for v in ORC5_FOR_SPS.values()}
    for event, _, when in rows:
        mpps_status = next((m for m, orc5 in ORC5_FOR_MPPS.items() if orc5 == event), None)
        if mpps_status is None:  # only the operator's actions report the other statuses
            assert "an operator" in when and "(console)" in when
        else:
            assert f"MPPS {'N-CREATE (IN PROGRESS)' if event == 'IP' else mpps_status}" in when


def test_outbound_reply_table_is_the_sender_s():
    rows = {r[0]: r[1] for r in table("| Reply | Outcome |")}
    assert {code for code, outcome in rows.items() if outcome == "sent"} == DONE_CODES
    assert {code for code, outcome in rows.items()
            if outcome.startswith("dead letter")} == DEAD_CODES
    retried = next(code for code, outcome in rows.items() if outcome.startswith("retried"))
    assert retried.startswith("CE,") and "TLS" in retried
