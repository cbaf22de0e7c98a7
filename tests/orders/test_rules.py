"""The order control table and the orders settings, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from bridge.app.settings import ConfigError, load_settings
from bridge.mapping import OrderControl
from bridge.orders.errors import Rejection
from bridge.orders.lifecycle import ControlTable, StepChange, decide_step
from bridge.orders.settings import OrdersSettings
from bridge.steps import with_status as set_status
from bridge.store.orders_tx import StoredStep

REPO = Path(__file__).resolve().parents[2]
DEFAULT = ControlTable(OrdersSettings().order_control)

# The reference defaults (shared/domain/ihe-hl7-to-mwl.md) plus hold/release.
TABLE = [
    ("NW", "", "new", "SCHEDULED"), ("NW", "SC", "new", "SCHEDULED"),
    ("NW", "IP", "new", "SCHEDULED"), ("XO", "SC", "change", "SCHEDULED"),
    ("XO", "", "change", "SCHEDULED"), ("XO", "CM", "change", "COMPLETED"),
    ("XO", "A", "change", "COMPLETED"), ("XO", "IP", "change", "STARTED"),
    ("SC", "IP", "status", "STARTED"), ("SC", "CM", "status", "COMPLETED"),
    ("SC", "A", "status", "COMPLETED"), ("SC", "SC", "status", "SCHEDULED"),
    ("SC", "CA", "status", "CANCELED"), ("SC", "DC", "status", "DISCONTINUED"),
    ("SC", "HD", "status", "HELD"),
    ("CA", "CA", "status", "CANCELED"), ("CA", "", "status", "CANCELED"),
    ("OC", "CA", "status", "CANCELED"), ("DC", "DC", "status", "DISCONTINUED"),
    ("OD", "", "status", "DISCONTINUED"), ("HD", "HD", "status", "HELD"),
    ("RL", "SC", "status", "SCHEDULED"),
]


@pytest.mark.parametrize(("code", "status", "action", "sps_status"), TABLE)
def test_default_table(code, status, action, sps_status):
    rule = DEFAULT.lookup(OrderControl(code, status, 1))
    assert (rule.action, rule.status) == (action, sps_status)


@pytest.mark.parametrize(("code", "status", "err"), [
    ("SC", "", 103), ("NW", "CM", 103), ("ZZ", "", 103), ("", "", 101)])
def test_unmapped_combinations_are_rejected_at_orc1(code, status, err):
    with pytest.raises(Rejection) as info:
        DEFAULT.lookup(OrderControl(code, status, 2))
    assert (info.value.ack_code, info.value.code, info.value.location) == ("AE", err, "ORC^2^1")


def test_an_ambiguous_table_is_refused_with_its_position(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("orders:\n  order_control:\n"
                   "    - {control: [NW], action: new, status: SCHEDULED}\n"
                   "    - {control: [CA, NW], action: status, status: CANCELED}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    assert "order_control[1]: NW/* is already in order_control[0]" in str(info.value)


def test_a_status_must_be_a_dicom_code_string(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("orders:\n  order_control:\n"
                   "    - {control: [NW], action: new, status: scheduled}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    assert "c.yaml:3" in str(info.value) and "VR CS" in str(info.value)


def test_a_result_path_must_parse(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("orders:\n  results:\n    accession: OBR-18 |\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    assert "orders.results.accession" in str(info.value) and "not a field path" in str(
        info.value)


def test_the_example_file_documents_the_defaults():
    example = load_settings(REPO / "mwl-bridge.example.yaml", {})
    assert example.orders == OrdersSettings()
    assert "HELD" in example.worklist.hidden_statuses


def test_policies_come_from_the_environment_too():
    s = load_settings(None, {"MWL_BRIDGE_ORDERS__PATIENTS__MERGED_IDS": "redirect"})
    assert s.orders.patients.merged_ids == "redirect"


def stored(item: Dataset, status: str = "SCHEDULED") -> StoredStep:
    return StoredStep(id=7, item=set_status(item, status), status=status, patient_id="P",
                      issuer="", accession="A")


def item(start: str = "0900", uid: str = "1.2.3") -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = uid
    sps = Dataset()
    sps.ScheduledProcedureStepStartTime = start
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def decide(incoming, code, status, existing, **settings):
    rule = DEFAULT.lookup(OrderControl(code, status, 1))
    return decide_step(incoming, rule, existing, OrdersSettings.model_validate(settings),
                       control=OrderControl(code, status, 1), locate=lambda k: "OBR^1^18",
                       uid_from_message=lambda: False)


def test_a_change_keeps_the_stored_study_uid():
    d = decide(item("1000", uid="2.25.99"), "XO", "SC", stored(item()))
    assert d.change is StepChange.REPLACE and d.item.StudyInstanceUID == "1.2.3"
    assert d.note == ""  # a derived UID differs as a matter of course


def test_a_change_with_another_sent_study_uid_is_flagged():
    rule = DEFAULT.lookup(OrderControl("XO", "SC", 1))
    d = decide_step(item("1000", uid="1.2.9"), rule, stored(item()), OrdersSettings(),
                    control=OrderControl("XO", "SC", 1), locate=lambda k: "",
                    uid_from_message=lambda: True)
    assert (d.item.StudyInstanceUID, d.note) == ("1.2.3", "study_uid_differs")


def test_a_status_change_keeps_the_stored_content():
    d = decide(item("1000"), "CA", "", stored(item()))
    assert d.item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "0900"
    assert d.item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "CANCELED"


def test_an_identical_new_order_keeps_the_current_status():
    d = decide(item(), "NW", "SC", stored(item(), "STARTED"))
    assert d.change is StepChange.UNCHANGED


def test_the_same_status_twice_is_unchanged():
    existing = stored(item(), "CANCELED")
    d = decide(item(), "CA", "", existing)
    # Unchanged names the stored step and hands back its item as it is, so the
    # caller logs the right step and writes nothing.
    assert (d.change, d.item, d.step_id) == (StepChange.UNCHANGED, existing.item, 7)


def test_a_change_to_a_stored_item_without_study_uid_takes_the_message_s():
    # An item imported without a Study UID (e.g. from a .wl file) gets the one the
    # change derives or sends; nothing to keep, so nothing to flag either.
    bare = item()
    del bare.StudyInstanceUID
    d = decide(item("1000", uid="2.25.99"), "XO", "SC", stored(bare))
    assert (d.change, d.item.StudyInstanceUID, d.note) == (StepChange.REPLACE, "2.25.99", "")
