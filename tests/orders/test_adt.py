"""ADT over real MLLP: demographic updates, merges, identifier changes and their policies."""

from __future__ import annotations

from tests.orders.conftest import Bridge, fixture, renamed

SPS_A = "SPS20261130501"


def item(bridge: Bridge, sps: str = SPS_A):
    return bridge.by_sps()[sps].item


async def test_a08_and_a31_update_every_item_of_the_patient(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-omi-o23-nw.hl7")).code == "AA"  # another patient
    assert (await bridge.send("lifecycle-ca.hl7")).code == "AA"  # hidden items change too
    ack = await bridge.send("adt-a08-update.hl7")
    assert (ack.code, ack.err) == ("AA", None)
    ds = item(bridge)
    assert str(ds.PatientName) == "GARCIA LOPEZ^MARIA^ELENA^MRS"
    assert ds.PatientAddress.startswith("45 Oak Ave")
    # Order-level content is untouched.
    assert ds.AccessionNumber == "ACC20261130501"
    assert ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"
    assert bridge.by_sps()[SPS_A].sps_status == "CANCELED"
    assert str(item(bridge, "SPS20261130511A").PatientName) == "OKAFOR^CHIDI^EMEKA"
    assert (await bridge.send("adt-a31-update.hl7")).code == "AA"
    assert item(bridge).PatientBirthDate == "19680224"
    patient = bridge.patient("LC10001")
    assert (patient.name, patient.birth_date) == ("GARCIA^MARIA^ELENA^MRS", "19680224")


async def test_a08_for_an_unknown_patient_registers_it(bridge: Bridge):
    assert (await bridge.send("adt-a08-update.hl7")).code == "AA"
    assert bridge.patient("LC10001").name == "GARCIA LOPEZ^MARIA^ELENA^MRS"
    assert bridge.steps() == []


async def test_adt_patient_checks_apply(bridge: Bridge):
    future = fixture("adt-a08-update.hl7").replace(b"19680214", b"20990214")
    ack = await bridge.send(future)
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^7")
    no_id = fixture("adt-a08-update.hl7").replace(b"LC10001^^^HOSP^MR", b"")
    ack = await bridge.send(renamed_bytes(no_id, "LC-NOID"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 101, "PID^1^3^1^1")


def renamed_bytes(raw: bytes, control_id: str) -> bytes:
    first, sep, rest = raw.partition(b"\r")
    fields = first.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + sep + rest


async def test_a40_merge_moves_the_items_to_the_surviving_patient(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    ack = await bridge.send("adt-a40-merge.hl7")
    assert (ack.code, ack.err) == ("AA", None)
    assert item(bridge).PatientID == "LC10002"
    assert item(bridge).IssuerOfPatientID == "HOSP"
    prior = bridge.patient("LC10001")
    assert (prior.merged_into_id, prior.merge_event) == ("LC10002", "A40")
    # The same merge again under a new control ID changes nothing.
    ack = await bridge.send(renamed("adt-a40-merge.hl7", "LC-0403B"))
    assert ack.code == "AA"
    (logged,) = bridge.messages(control_id="LC-0403B")
    assert "already merged" in logged.outcome


async def test_messages_for_a_merged_id_are_rejected_by_default(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("adt-a40-merge.hl7")).code == "AA"
    before = bridge.state()
    ack = await bridge.send("lifecycle-xo-reschedule.hl7")
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "PID^1^3^1^1")
    assert "merged into LC10002" in ack.text
    ack = await bridge.send("adt-a08-update.hl7")
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "PID^1^3^1^1")
    assert bridge.state() == before


async def test_messages_for_a_merged_id_can_be_redirected(make_bridge):
    bridge = await make_bridge(patients={"merged_ids": "redirect"})
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("adt-a40-merge.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-xo-reschedule.hl7")).code == "AA"
    ds = item(bridge)
    assert ds.PatientID == "LC10002"
    assert ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT02"
    (logged,) = bridge.messages(control_id="LC-0003")
    assert logged.flags == "patient_redirected"


async def test_merging_an_already_merged_patient_is_rejected_by_default(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("adt-a40-merge.hl7")).code == "AA"  # LC10001 -> LC10002
    before = bridge.state()
    ack = await bridge.send("adt-a40-merge-of-merged.hl7")  # LC10001 -> LC10003
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "MRG^1^1^1^1")
    assert "already merged into 'LC10002'" in ack.text
    assert item(bridge).PatientID == "LC10002"
    assert bridge.state() == before


async def test_merging_an_already_merged_patient_can_follow_the_merge(make_bridge):
    bridge = await make_bridge(patients={"merge_of_merged": "follow"})
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("adt-a40-merge.hl7")).code == "AA"
    ack = await bridge.send("adt-a40-merge-of-merged.hl7")
    assert ack.code == "AA"
    # LC10001 led to LC10002, which is now merged into LC10003 with its items.
    assert item(bridge).PatientID == "LC10003"
    assert bridge.patient("LC10002").merged_into_id == "LC10003"
    assert bridge.patient("LC10001").merged_into_id == "LC10003"  # chains stay one hop


async def test_a40_needs_mrg1_and_a_different_patient(bridge: Bridge):
    # The patient is known, with an item: a rejected merge must leave both as they were.
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    before = bridge.state()
    assert len(before["patient"]) == 1 and len(before["procedure_step"]) == 1
    ack = await bridge.send("adt-a40-no-mrg.hl7")
    assert (ack.code, ack.error_code, ack.location) == ("AE", 101, "MRG^1^1^1^1")
    assert bridge.state() == before
    merge = fixture("adt-a40-merge.hl7")
    for n, (pid, mrg) in enumerate([(b"LC10002", b"LC10002"),    # an unknown patient
                                    (b"LC10001", b"LC10001")]):  # the known one
        self_merge = merge.replace(b"PID|1||LC10002", b"PID|1||" + pid).replace(
            b"MRG|LC10001", b"MRG|" + mrg)
        ack = await bridge.send(renamed_bytes(self_merge, f"LC-SELF{n}"))
        assert (ack.code, ack.error_code, ack.location) == ("AE", 205, "MRG^1^1^1^1"), pid
        assert bridge.state() == before, pid
    assert bridge.patient("LC10001").merged_into_id in ("", None)
    assert bridge.patient("LC10002") is None


async def test_a47_changes_the_patient_identifier(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    ack = await bridge.send("adt-a47-change-id.hl7")
    assert (ack.code, ack.err) == ("AA", None)
    assert item(bridge).PatientID == "LC10009"
    old = bridge.patient("LC10001")
    assert (old.merged_into_id, old.merge_event) == ("LC10009", "A47")
    ack = await bridge.send("lifecycle-xo-reschedule.hl7")  # an order under the old ID
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "PID^1^3^1^1")
    assert "replaced by LC10009" in ack.text


async def test_a47_to_an_id_in_use_is_rejected(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    taken = fixture("lifecycle-omi-o23-nw.hl7")  # registers LC10011
    assert (await bridge.send(taken)).code == "AA"
    into_taken = fixture("adt-a47-change-id.hl7").replace(b"LC10009", b"LC10011")
    ack = await bridge.send(renamed_bytes(into_taken, "LC-A47X"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 205, "PID^1^3^1^1")
    assert item(bridge).PatientID == "LC10001"


async def test_adt_events_are_configurable(make_bridge):
    bridge = await make_bridge(adt={"update_events": ["A08"]})
    ack = await bridge.send("adt-a31-update.hl7")  # no longer an update event
    assert (ack.code, ack.error_code, ack.location) == ("AR", 200, "MSH^1^9")
