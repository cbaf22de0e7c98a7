"""Every patient and duplicate check over real MLLP: ACK code, ERR location, error code.

Each rejected message must also be kept as a dead letter, and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Literal

import pytest
from pydicom import Dataset

from bridge.hl7 import Segment, parse_message
from bridge.mapping import MappingSet, load_mappings
from bridge.orders.checks import (
    Identity,
    check_patient,
    conflict_rejection,
    demographics_conflict,
    final_record,
    resolve_identity,
)
from bridge.orders.errors import Rejection
from bridge.orders.settings import PatientChecks
from bridge.store.orders_tx import PatientRecord
from tests.orders.conftest import REPO, Bridge, BridgeFactory, fixture, renamed

CHECKS = [
    # (fixture, settings, ACK, code, location, words in ERR-8)
    ("orm-missing-pid3.hl7", {}, "AE", 101, "PID^1^3^1^1", "Patient ID missing (PID-3)"),
    ("orm-bad-birthdate.hl7", {}, "AE", 102, "PID^1^7", "not a real calendar date"),
    ("check-future-birthdate.hl7", {}, "AE", 102, "PID^1^7", "in the future"),
    ("check-sex-code.hl7", {}, "AE", 103, "PID^1^8", "'X' is not one of"),
    ("check-no-family-name.hl7", {}, "AE", 101, "PID^1^5^1^1", "no family name"),
    ("check-long-patient-id.hl7", {}, "AE", 102, "PID^1^3^1^1", "VR LO allows 64"),
    ("check-untrusted-issuer.hl7", {"patients": {"trusted_issuers": ["HOSP"]}}, "AE", 103,
     "PID^1^3^1^4", "'OTHERHOSP' is not a trusted issuer"),
    ("check-demographics-conflict.hl7", {"patients": {"demographics_conflict": "reject"}},
     "AR", 205, "PID^1^3^1^1", "different name and birth date"),
    ("check-accession-other-patient.hl7", {}, "AR", 205, "OBR^1^18",
     "belongs to an order of another patient"),
    ("lifecycle-nw-changed.hl7", {}, "AR", 205, "ORC^1^1", "send XO"),
    ("check-control-id-reused.hl7", {}, "AR", 205, "MSH^1^10",
     "was already accepted (message #"),
]


@pytest.mark.parametrize(("name", "settings", "ack_code", "code", "location", "words"), CHECKS,
                         ids=[c[0].removesuffix(".hl7") for c in CHECKS])
async def test_check(make_bridge, name, settings, ack_code, code, location, words):
    bridge: Bridge = await make_bridge(**settings)
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"  # the known patient and order
    before = bridge.state()
    ack = await bridge.send(name)
    assert (ack.code, ack.error_code, ack.location) == (ack_code, code, location), ack
    assert words in ack.text
    assert bridge.state() == before  # items, history, patients, outbox
    # Kept whole, with its reason: a dead letter.
    (dead,) = bridge.messages(rejected=True)
    assert dead.ack_code == ack_code and dead.error.startswith(f"{code} {location} ")
    full = bridge.read(lambda o: o.get_message(dead.id))
    assert full.raw == fixture(name) and full.ack == ack.raw


SHARED = [c for c in CHECKS if sum(o[2:5] == c[2:5] for o in CHECKS) > 1]


def test_some_checks_share_code_and_location():
    # Else test_each_check_has_its_own_error below would check nothing.
    assert {c[0] for c in SHARED} == {"orm-bad-birthdate.hl7", "check-future-birthdate.hl7"}


@pytest.mark.parametrize(("name", "settings", "ack_code", "code", "location", "words"), SHARED,
                         ids=[c[0].removesuffix(".hl7") for c in SHARED])
async def test_each_check_has_its_own_error(make_bridge, name, settings, ack_code, code,
                                            location, words):
    # Where two checks share ACK code, error code and location, the ERR-8 the bridge
    # sends names this check's failure and not the other's.
    bridge: Bridge = await make_bridge(**settings)
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    ack = await bridge.send(name)
    assert (ack.code, ack.error_code, ack.location) == (ack_code, code, location), ack
    assert words in ack.text
    others = [c[5] for c in SHARED if c[2:5] == (ack_code, code, location) and c[0] != name]
    assert others and not any(w in ack.text for w in others), ack.text


async def test_an_empty_issuer_is_trusted_only_when_listed(make_bridge):
    no_issuer = fixture("lifecycle-nw.hl7").replace(b"LC10001^^^HOSP^MR", b"LC10001")
    strict = await make_bridge(patients={"trusted_issuers": ["HOSP"]})
    before = strict.state()
    ack = await strict.send(no_issuer)
    assert (ack.code, ack.error_code, ack.location) == ("AE", 103, "PID^1^3^1^4")
    assert strict.state() == before and strict.steps() == []


async def test_an_empty_issuer_listed_as_trusted_is_accepted(make_bridge):
    no_issuer = fixture("lifecycle-nw.hl7").replace(b"LC10001^^^HOSP^MR", b"LC10001")
    lenient = await make_bridge(patients={"trusted_issuers": ["HOSP", ""]})
    assert (await lenient.send(no_issuer)).code == "AA"


async def test_sex_codes_are_configurable(make_bridge):
    bridge = await make_bridge(patients={"sex_codes": ["F", "M", "O", "U", "A", "N", "X"]})
    assert (await bridge.send("check-sex-code.hl7")).code == "AA"


async def test_checks_can_be_turned_off(make_bridge):
    # The three fixtures are one order: later ones change it (new_order_exists: change).
    bridge = await make_bridge(new_order_exists="change",
                               patients={"sex_codes": [], "require_family_name": False,
                                         "reject_future_birth_date": False})
    for name in ("check-sex-code.hl7", "check-no-family-name.hl7",
                 "check-future-birthdate.hl7"):
        assert (await bridge.send(name)).code == "AA", name


async def test_known_patient_with_other_name_and_birth_date_is_accepted_and_flagged(
        bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    ack = await bridge.send("check-demographics-conflict.hl7")
    assert (ack.code, ack.err) == ("AA", None)
    (logged,) = bridge.messages(flagged=True)
    assert (logged.control_id, logged.flags) == ("LC-0506", "demographics_conflict")
    patient = bridge.patient("LC10001")
    assert patient is not None and "demographics_conflict" in patient.flags
    assert patient.name == "GARCIA^MARIA^ELENA^MRS"  # the known demographics are kept
    # The order itself is stored as sent.
    assert str(bridge.by_sps()["SPS20261130506"].item.PatientName) == "SMITH^ROBERT"


async def test_demographics_conflict_accept_policy_updates_silently(make_bridge):
    bridge = await make_bridge(patients={"demographics_conflict": "accept"})
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("check-demographics-conflict.hl7")).code == "AA"
    assert bridge.messages(flagged=True) == []
    assert bridge.patient("LC10001").name == "SMITH^ROBERT"


async def test_one_changed_demographic_is_a_correction_not_a_conflict(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    married = renamed("lifecycle-xo-reschedule.hl7", "LC-NAME").replace(
        b"GARCIA^MARIA", b"LOPEZ^MARIA")
    assert (await bridge.send(married)).code == "AA"
    assert bridge.messages(flagged=True) == []
    assert bridge.patient("LC10001").name.startswith("LOPEZ^MARIA")


async def test_identical_new_order_is_accepted_without_change(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    before = [(r.id, r.updated_at) for r in bridge.steps()]
    ack = await bridge.send("lifecycle-nw-resend-new-id.hl7")  # same order, new MSH-10
    assert (ack.code, ack.err, ack.control_id) == ("AA", None, "LC-0001R")
    assert [(r.id, r.updated_at) for r in bridge.steps()] == before
    (logged,) = bridge.messages(control_id="LC-0001R")
    assert logged.outcome == "1 unchanged"


async def test_new_order_with_other_content_can_be_treated_as_a_change(make_bridge):
    bridge = await make_bridge(new_order_exists="change")
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-nw-changed.hl7")).code == "AA"
    sps = bridge.by_sps()["SPS20261130501"].item.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStartTime == "113000"
    assert len(bridge.steps()) == 1


async def test_accession_reuse_for_another_patient_can_only_be_allowed_loudly(
        make_bridge, caplog):
    bridge = await make_bridge(accession_other_patient="allow_with_warning")
    assert "accession_other_patient is allow_with_warning" in caplog.text
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("check-accession-other-patient.hl7")).code == "AA"
    (logged,) = bridge.messages(flagged=True)
    assert logged.flags == "accession_other_patient"
    assert "Accession Number is reused for another patient" in caplog.text


async def test_the_accession_rule_has_no_silent_off_switch():
    from pydantic import ValidationError

    from bridge.orders.settings import OrdersSettings

    with pytest.raises(ValidationError, match="accession_other_patient\n  Input should be "
                                              "'reject' or 'allow_with_warning'"):
        OrdersSettings.model_validate({"accession_other_patient": "allow"})


async def test_two_groups_naming_the_same_step_are_rejected(bridge: Bridge):
    raw = fixture("lifecycle-nw.hl7")
    head, orc, tail = raw.partition(b"ORC|")
    twice = head + orc + tail + b"ORC|" + tail
    ack = await bridge.send(twice)
    assert (ack.code, ack.error_code, ack.location) == ("AE", 205, "ORC^2^1")
    assert bridge.steps() == []


async def test_logs_hold_no_patient_data(make_bridge, caplog):
    import logging

    caplog.set_level(logging.INFO)
    bridge = await make_bridge(patients={"trusted_issuers": ["HOSP"]})
    for name in ("lifecycle-nw.hl7", "check-future-birthdate.hl7", "check-sex-code.hl7",
                 "check-untrusted-issuer.hl7", "check-accession-other-patient.hl7",
                 "check-long-patient-id.hl7", "orm-bad-birthdate.hl7",
                 "check-demographics-conflict.hl7", "adt-a40-merge.hl7",
                 "lifecycle-xo-reschedule.hl7", "adt-a40-merge-of-merged.hl7"):
        await bridge.send(name)
    assert "rejected" in caplog.text and "accepted" in caplog.text
    for phi in ("GARCIA", "LC10001", "LC10002", "19680214", "20990101", "OTHERHOSP",
                "ACC20261130501", "SMITH", "LC111111", "19751345"):
        assert phi not in caplog.text, phi


# -- the check functions themselves (bridge/orders/checks.py), on real PIDs and records --

TODAY = date(2026, 11, 30)
MergedIds = Literal["reject", "redirect"]  # orders.patients.merged_ids
UNTRUSTED = ("IssuerOfPatientID (PID-3.4) 'OTHERHOSP' is not a trusted issuer "
             "(orders.patients.trusted_issuers)")
CONFLICT = ("Patient ID is known with a different name and birth date "
            "(orders.patients.demographics_conflict: reject)")


def pid_segment(pid3: str, sex: str = "F") -> Segment:
    """A PID as the bridge's own tokenizer reads it from an ORM."""
    raw = ("MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|20261130080500||ORM^O01|U-1|P|2.3.1\r"
           f"PID|1||{pid3}||GARCIA^MARIA||19680214|{sex}\r")
    pid = parse_message(raw).first("PID")
    assert pid is not None
    return pid


def patient(patient_id: str = "LC10001", issuer: str = "HOSP", name: str = "GARCIA^MARIA",
            birth: str = "19680214") -> Dataset:
    """The patient part of a mapped item; an empty value leaves the attribute out."""
    ds = Dataset()
    for keyword, value in (("PatientID", patient_id), ("IssuerOfPatientID", issuer),
                           ("PatientName", name), ("PatientBirthDate", birth)):
        if value:
            setattr(ds, keyword, value)
    return ds


def rejection(exc: pytest.ExceptionInfo[Rejection]) -> tuple[str, int, str, str, str]:
    r = exc.value
    return r.ack_code, r.code, r.location, r.text, r.log_text


@pytest.mark.parametrize(("pid3", "location"), [
    ("LC10001^^^OTHERHOSP^MR", "PID^1^3^1^4"),
    ("LC999^^^HOSP^MR~LC10001^^^OTHERHOSP^MR", "PID^1^3^2^4"),
    # An empty repetition and one with an empty first component come before the ID.
    ("~^^^HOSP~LC10001^^^OTHERHOSP^MR", "PID^1^3^3^4"),
    ("~&LC10001^^^HOSP~LC10001^^^OTHERHOSP^MR", "PID^1^3^3^4"),
    # The mapping took the ID from elsewhere: no repetition holds it, so the first.
    ("LC999^^^HOSP^MR~LC998^^^EAST^MR", "PID^1^3^1^4"),
], ids=["first", "second", "third-after-empty", "third-after-subcomponent", "none-matches"])
def test_untrusted_issuer_names_the_repetition_the_id_came_from(pid3: str, location: str) -> None:
    settings = PatientChecks(trusted_issuers=["HOSP"])
    with pytest.raises(Rejection) as exc:
        check_patient(patient(issuer="OTHERHOSP"), pid_segment(pid3), settings, today=TODAY)
    assert rejection(exc) == ("AE", 103, location, UNTRUSTED,
                              "IssuerOfPatientID (PID-3.4) is not a trusted issuer")


def test_untrusted_issuer_without_a_pid_names_the_first_repetition() -> None:
    # A worklist file (bridge/orders/wlfile.py) has no PID to tell the repetition from.
    settings = PatientChecks(trusted_issuers=["HOSP"])
    with pytest.raises(Rejection) as exc:
        check_patient(patient(issuer="OTHERHOSP"), None, settings, today=TODAY)
    assert rejection(exc)[:4] == ("AE", 103, "PID^1^3^1^4", UNTRUSTED)


@pytest.fixture
def authority_mappings(tmp_path: Path) -> MappingSet:
    """The default mapping with primary_authority OTHERHOSP: the Patient ID comes from
    the PID-3 repetition of that issuer, wherever it stands."""
    text = (REPO / "mappings" / "ihe-swf-orm-v231.yaml").read_text(encoding="utf-8")
    assert "primary_authority: ~" in text
    path = tmp_path / "ihe-swf-orm-v231.yaml"
    path.write_text(text.replace("primary_authority: ~", "primary_authority: OTHERHOSP"),
                    encoding="utf-8")
    return load_mappings([path], default_station_aet="UNASSIGNED")


@pytest.mark.parametrize(("pid3", "location"), [
    (b"LC999^^^HOSP^MR~LC10001^^^OTHERHOSP^MR", "PID^1^3^2^4"),
    (b"~LC999^^^HOSP^MR~LC10001^^^OTHERHOSP^MR", "PID^1^3^3^4"),
], ids=["second", "third"])
async def test_untrusted_issuer_err_names_the_repetition_over_mllp(
        make_bridge: BridgeFactory, authority_mappings: MappingSet, pid3: bytes,
        location: str) -> None:
    bridge: Bridge = await make_bridge(mappings=authority_mappings,
                                       patients={"trusted_issuers": ["HOSP"]})
    raw = fixture("check-untrusted-issuer.hl7")
    ack = await bridge.send(raw.replace(b"LC10001^^^OTHERHOSP^MR", pid3))
    assert (ack.code, ack.error_code, ack.location, ack.text) == ("AE", 103, location,
                                                                  UNTRUSTED), ack
    assert bridge.steps() == []


@pytest.mark.parametrize(("ds", "pid", "settings", "expected"), [
    (patient(patient_id=""), pid_segment(""), PatientChecks(),
     ("AE", 101, "PID^1^3^1^1", "Patient ID missing (PID-3)", "Patient ID missing (PID-3)")),
    (patient(name="^MARIA"), pid_segment("LC10001^^^HOSP"), PatientChecks(),
     ("AE", 101, "PID^1^5^1^1", "PatientName has no family name (PID-5.1 is empty)",
      "PatientName has no family name (PID-5.1 is empty)")),
    (patient(), pid_segment("LC10001^^^HOSP", sex="X"), PatientChecks(),
     ("AE", 103, "PID^1^8", "PatientSex (PID-8) 'X' is not one of F, M, O, U, A, N "
      "(orders.patients.sex_codes)", "PatientSex (PID-8) is not in orders.patients.sex_codes")),
    (patient(birth="20261201"), pid_segment("LC10001^^^HOSP"), PatientChecks(),
     ("AE", 102, "PID^1^7", "PatientBirthDate (PID-7) 20261201 is in the future",
      "PatientBirthDate (PID-7) is in the future")),
], ids=["no-id", "no-family-name", "sex", "future-birth-date"])
def test_each_patient_check_rejects_with_its_own_error(
        ds: Dataset, pid: Segment, settings: PatientChecks,
        expected: tuple[str, int, str, str, str]) -> None:
    with pytest.raises(Rejection) as exc:
        check_patient(ds, pid, settings, today=TODAY)
    assert rejection(exc) == expected


@pytest.mark.parametrize(("ds", "pid", "settings"), [
    (patient(), None, PatientChecks()),  # a worklist file: no PID, so no PID-8 to check
    (patient(), pid_segment("LC10001^^^HOSP", sex=""), PatientChecks()),
    (patient(birth="20261130"), pid_segment("LC10001^^^HOSP"), PatientChecks()),  # today
    (patient(), pid_segment("LC10001^^^HOSP"), PatientChecks(trusted_issuers=["HOSP"])),
    (patient(issuer="OTHERHOSP"), pid_segment("LC10001^^^OTHERHOSP"), PatientChecks()),
    (patient(name="^MARIA", birth="20990101"), pid_segment("LC10001^^^HOSP", sex="X"),
     PatientChecks(sex_codes=[], require_family_name=False, reject_future_birth_date=False)),
], ids=["no-pid", "no-sex", "born-today", "trusted-issuer", "any-issuer", "checks-off"])
def test_patient_checks_accept(ds: Dataset, pid: Segment | None, settings: PatientChecks) -> None:
    check_patient(ds, pid, settings, today=TODAY)  # raises nothing


@pytest.mark.parametrize(("known_name", "known_birth", "name", "birth", "conflict"), [
    ("GARCIA^MARIA", "19680214", "SMITH^ROBERT", "19750101", True),
    ("GARCIA^MARIA", "19680214", "GARCIA^MARIA", "19680214", False),
    ("GARCIA^MARIA", "19680214", "García^María^", "19750101", False),  # same name, folded
    ("GARCIA^MARIA", "19680214", "SMITH^ROBERT", "19680214", False),
    # An empty value on either side is unknown, not different.
    ("", "19680214", "SMITH^ROBERT", "19750101", False),
    ("GARCIA^MARIA", "19680214", "", "19750101", False),
    ("GARCIA^MARIA", "", "SMITH^ROBERT", "19750101", False),
    ("GARCIA^MARIA", "19680214", "SMITH^ROBERT", "", False),
], ids=["both-differ", "both-same", "name-same", "birth-same", "no-known-name",
        "no-name", "no-known-birth", "no-birth"])
def test_demographics_conflict_needs_both_values_on_both_sides_to_differ(
        known_name: str, known_birth: str, name: str, birth: str, conflict: bool) -> None:
    known = PatientRecord("LC10001", "HOSP", name=known_name, birth_date=known_birth)
    assert demographics_conflict(known, patient(name=name, birth=birth)) is conflict


def test_conflict_rejection_is_an_ar_duplicate_key_at_pid3() -> None:
    r = conflict_rejection()
    assert (r.ack_code, r.code, r.location, r.text, r.log_text) == (
        "AR", 205, "PID^1^3^1^1", CONFLICT, CONFLICT)


async def test_demographics_conflict_reject_policy_acks_exactly(
        make_bridge: BridgeFactory) -> None:
    bridge: Bridge = await make_bridge(patients={"demographics_conflict": "reject"})
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    ack = await bridge.send("check-demographics-conflict.hl7")
    assert (ack.code, ack.error_code, ack.location, ack.text) == (
        "AR", 205, "PID^1^3^1^1", CONFLICT), ack


def merge_lookup(*links: str) -> tuple[dict[tuple[str, str], PatientRecord],
                                        Callable[[str, str], PatientRecord | None],
                                        list[str]]:
    """Patients from "A>B" (A merged into B) or "A" (not merged), issuer HOSP, and a
    lookup over them that records each read: the store's interface to final_record."""
    records = {}
    for link in links:
        pid, _, into = link.partition(">")
        records[(pid, "HOSP")] = PatientRecord(
            pid, "HOSP", merged_into_id=into, merged_into_issuer="HOSP" if into else "",
            merge_event="A40" if into else "")
    reads: list[str] = []

    def lookup(patient_id: str, issuer: str) -> PatientRecord | None:
        reads.append(patient_id)
        # A loop that is not caught would read forever: fail instead of hanging.
        assert len(reads) <= 10, f"the merge chain was followed without end: {reads}"
        return records.get((patient_id, issuer))

    return records, lookup, reads


@pytest.mark.parametrize(("links", "final", "reads"), [
    (["A"], "A", []),
    (["A>B", "B>C", "C"], "C", ["B", "C"]),
    (["A>B"], None, ["B"]),  # leads nowhere
    (["A>B", "B>A"], None, ["B"]),  # back to the start: known without reading A again
    (["A>B", "B>C", "C>B"], None, ["B", "C"]),  # a loop that does not pass the start
    (["A>B", "B>C", "C>A"], None, ["B", "C"]),
], ids=["not-merged", "chain", "dangling", "back-to-start", "loop-after-start",
        "loop-through-start"])
def test_final_record_follows_a_merge_chain_and_stops_on_a_loop(
        links: list[str], final: str | None, reads: list[str]) -> None:
    records, lookup, read = merge_lookup(*links)
    result = final_record(records[("A", "HOSP")], lookup)
    assert (result.patient_id if result is not None else None) == final
    assert read == reads


@pytest.mark.parametrize(("links", "expected"), [
    ([], Identity(("A", "HOSP"), None)),
    (["A"], Identity(("A", "HOSP"), PatientRecord("A", "HOSP"))),
], ids=["unknown", "not-merged"])
@pytest.mark.parametrize("policy", ["reject", "redirect"])
def test_resolve_identity_keeps_an_id_that_was_not_merged(
        links: list[str], expected: Identity, policy: MergedIds) -> None:
    _, lookup, _ = merge_lookup(*links)
    identity = resolve_identity(("A", "HOSP"), lookup, PatientChecks(merged_ids=policy))
    assert identity == expected and identity.redirected_from is None


def test_resolve_identity_redirects_to_the_end_of_the_chain() -> None:
    records, lookup, _ = merge_lookup("A>B", "B>C", "C")
    identity = resolve_identity(("A", "HOSP"), lookup, PatientChecks(merged_ids="redirect"))
    assert identity == Identity(("C", "HOSP"), records[("C", "HOSP")],
                                redirected_from=("A", "HOSP"))


def record(into_issuer: str, event: str) -> PatientRecord:
    return PatientRecord("A", "HOSP", merged_into_id="B", merged_into_issuer=into_issuer,
                         merge_event=event)


@pytest.mark.parametrize(("merged", "others", "policy", "text", "log_text"), [
    (record("HOSP", "A40"), ["B"], "reject",
     "Patient ID 'A' was merged into B (HOSP) (A40); send messages for the surviving ID",
     "Patient ID was merged into another (A40)"),
    (record("", "A47"), ["B"], "reject",
     "Patient ID 'A' was replaced by B (A47); send messages for the surviving ID",
     "Patient ID was replaced by another (A47)"),
    # Redirected, but the chain leads nowhere or loops: rejected as under reject.
    (record("HOSP", "A40"), [], "redirect",
     "Patient ID 'A' was merged into B (HOSP) (A40); send messages for the surviving ID",
     "Patient ID was merged into another (A40)"),
    (record("HOSP", "A40"), ["B>A"], "redirect",
     "Patient ID 'A' was merged into B (HOSP) (A40); send messages for the surviving ID",
     "Patient ID was merged into another (A40)"),
], ids=["a40", "a47-no-issuer", "redirect-dangling", "redirect-loop"])
def test_resolve_identity_rejects_a_merged_id(merged: PatientRecord, others: list[str],
                                              policy: MergedIds, text: str, log_text: str) -> None:
    records, lookup, _ = merge_lookup(*others)
    records[("A", "HOSP")] = merged
    with pytest.raises(Rejection) as exc:
        resolve_identity(("A", "HOSP"), lookup, PatientChecks(merged_ids=policy),
                         location="MRG^1^1^1^1")
    assert rejection(exc) == ("AE", 204, "MRG^1^1^1^1", text, log_text)
    with pytest.raises(Rejection) as exc:
        resolve_identity(("A", "HOSP"), lookup, PatientChecks(merged_ids=policy))
    assert rejection(exc)[2] == "PID^1^3^1^1"  # the default location
