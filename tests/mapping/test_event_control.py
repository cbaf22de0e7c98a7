"""``order_control:``: the trigger event of a message without ORC (SIU) as its ORC-1."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingLoadError, load_mappings

from .mapping_helpers import FIXTURES, MAPPINGS, er7, load_text, read_fixture

SIU = """
name: siu-test
match:
  message_type: [SIU^S12, SIU^S15, SIU^S26, ORM^O01]
group_by: {group_by}
order_control:
  S12: NW
  S15: CA
  S26: DC/CA
attributes:
  PatientID: PID-3.1
  AccessionNumber: SCH-2.1 | OBR-18
  RequestedProcedureID: SCH-2.1 | OBR-18
  ScheduledProcedureStepSequence:
    - ScheduledProcedureStepID: SCH-2.1 | OBR-18
      Modality: {{const: MR}}
"""


def test_each_event_reads_as_its_order_control() -> None:
    shipped = load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")
    for name, code in [("siu-s12-new.hl7", "NW"), ("siu-s13-reschedule.hl7", "XO"),
                       ("siu-s14-modify.hl7", "XO"), ("siu-s15-cancel.hl7", "CA"),
                       ("siu-s17-delete.hl7", "CA"), ("siu-s26-noshow.hl7", "DC")]:
        (step,) = shipped.map(read_fixture(name)).steps
        control = step.order_control
        assert (control.code, control.status, control.location) == (code, "",
                                                                     "MSH^1^9^1^2"), name
    assert FIXTURES.is_dir()


def test_a_status_after_the_slash_is_orc5_and_an_orc_still_wins(write_mapping) -> None:
    mappings = load_text(write_mapping, SIU.format(group_by="RGS"))
    message = er7("MSH|^~\\&|S|H|M|R|20261130||SIU^S26^SIU_S12|1|P|2.5",
                  "SCH|A1|F1", "PID|1||P1", "RGS|1")
    (step,) = mappings.map(message).steps
    assert (step.order_control.code, step.order_control.status) == ("DC", "CA")
    plain = load_text(write_mapping, SIU.format(group_by="ORC"))
    order = er7("MSH|^~\\&|S|H|M|R|20261130||ORM^O01|1|P|2.3.1", "PID|1||P1",
                "ORC|XO|PLC1", "OBR|1|PLC1||||||||||||||||ACC1")
    (step,) = plain.map(order).steps
    assert (step.order_control.code, step.order_control.location) == ("XO", "ORC^1^1")


@pytest.mark.parametrize(("table", "key"), [
    ("{s12: NW}", r"order_control\.s12\.\[key\]: String should match pattern"),
    ("{S12: NEW}", r"order_control\.S12: String should match pattern"),
    ("{S12: N1}", r"order_control\.S12: String should match pattern")])
def test_a_malformed_order_control_is_refused_at_load(write_mapping, table, key) -> None:
    text = SIU.format(group_by="RGS").replace(
        "order_control:\n  S12: NW\n  S15: CA\n  S26: DC/CA", f"order_control: {table}")
    # The error names the file, the line of the table and the offending key.
    with pytest.raises(MappingLoadError, match=r"m\.yaml:5: " + key):
        load_text(write_mapping, text)
