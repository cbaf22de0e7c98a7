"""Every patient and duplicate check over real MLLP: ACK code, ERR location, error code.

Each rejected message must also be kept as a dead letter, and change nothing.
"""

from __future__ import annotations

import pytest

from tests.orders.conftest import Bridge, fixture, renamed

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
