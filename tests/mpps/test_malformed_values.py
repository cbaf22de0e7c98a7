"""MPPS values of the wrong kind, over real associations (fuzz findings,
fuzz/corpus/mpps_validate/crash-*):

- a DS value that is no number (``2,5``) passed every check, was stored, and
  could never be read back: every later N-SET of that MPPS was 0x0110. It is
  now refused 0x0106 by name (DS, IS, FL/FD alike, in items too), what passes
  must come back from the store as it went in, and an MPPS stored with such a
  value before still reads and takes its N-SET;
- a Scheduled Step Attributes Sequence sent with VR UL raised a TypeError in
  the checks: 0x0110 "internal error". An attribute that is not a sequence where
  the dictionary has one (or the other way round) is now 0x0106 by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, Association

from bridge.store import mpps_tx
from bridge.store.base import StoreTx

from .conftest import MPPS, MppsEnv, create_ds, final_ds

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR",
                                        "ignore:Value \"",
                                        "ignore:The value length")

UID = "1.2.826.0.1.3680043.8.498.77002"
SLICE_THICKNESS = Tag(0x0018, 0x0050)
SSAS = Tag(0x0040, 0x0270)


def status(rsp: Dataset) -> tuple[int, str]:
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def tags(rsp: Dataset) -> list[Tag]:
    """The Attribute Identifier List of a failure (VM 1-n: one tag reads as a tag)."""
    value = rsp.AttributeIdentifierList
    return [Tag(t) for t in value] if isinstance(value, list | MultiValue) else [Tag(value)]


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element as a modality sent it: pydicom keeps what it cannot convert."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


@pytest.fixture
def explicit(env: MppsEnv) -> Iterator[Association]:
    """An association offering explicit VR only: the VR the modality sends is kept."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", env.scp.port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


@pytest.mark.parametrize(("tag", "vr", "value", "comment"), [
    (SLICE_THICKNESS, "DS", b"2,5 ", "invalid SliceThickness: not a DS number"),
    (SLICE_THICKNESS, "DS", b"NaN ", "invalid SliceThickness: not a DS number"),
    (SLICE_THICKNESS, "DS", b"1e400 ", "invalid SliceThickness: not a DS number"),
    (SLICE_THICKNESS, "DS", b"2.5\\3,1 ", "invalid SliceThickness: not a DS number"),
    (0x00200013, "IS", b"1.5 ", "invalid InstanceNumber: not an IS number"),
    (0x00200013, "IS", b"99999999999 ", "invalid InstanceNumber: not an IS number"),
    (0x00189328, "FD", b"\x00\x00\x00\x00\x00\x00\xf8\x7f",  # a NaN
     "invalid ExposureTimeInms: not a finite number"),
])
def test_a_number_that_is_none_is_0106_by_name_and_nothing_is_stored(
        env: MppsEnv, explicit: Association, tag: int, vr: str, value: bytes,
        comment: str) -> None:
    ds = create_ds(env.steps[0])
    ds[tag] = raw(tag, vr, value)
    rsp, _ = explicit.send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106, comment)
    assert mpps_tx.get_mpps(env.store, UID) is None


def test_a_bad_number_in_an_item_is_named_by_its_path(env: MppsEnv, explicit: Association
                                                      ) -> None:
    ds = create_ds(env.steps[0])
    series = Dataset()
    series.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    series[SLICE_THICKNESS] = raw(SLICE_THICKNESS, "DS", b"2,5 ")
    ds.PerformedSeriesSequence = [series]
    rsp, _ = explicit.send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106,
                           "invalid PerformedSeriesSequence>SliceThickness: not a DS number")


def test_a_bad_number_in_an_n_set_is_0106_naming_it_and_changes_nothing(
        env: MppsEnv, explicit: Association) -> None:
    assert status(explicit.send_n_create(create_ds(env.steps[0]), MPPS, UID)[0])[0] == 0
    final = final_ds()
    final[SLICE_THICKNESS] = raw(SLICE_THICKNESS, "DS", b"2,5 ")
    rsp, _ = explicit.send_n_set(final, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid SliceThickness: not a DS number")
    assert tags(rsp) == [SLICE_THICKNESS]
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"  # type: ignore[union-attr]
    assert status(explicit.send_n_set(final_ds(), MPPS, UID)[0]) == (0x0000, "")


def test_an_mpps_stored_with_a_bad_number_before_still_takes_its_n_set(
        env: MppsEnv) -> None:
    # What the bridge stored before these checks: the DS as the modality sent it.
    assoc = env.associate()
    assert status(assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)[0])[0] == 0

    def spoil(tx: StoreTx) -> None:
        p = tx.param
        tx.cur.execute(f"SELECT item FROM mpps WHERE sop_instance_uid = {p}", (UID,))
        item = json.loads(tx.cur.fetchone()[0])
        item[f"{int(SLICE_THICKNESS):08X}"] = {"vr": "DS", "Value": ["2,5"]}
        tx.cur.execute(f"UPDATE mpps SET item = {p} WHERE sop_instance_uid = {p}",
                       (json.dumps(item), UID))

    env.store.write([spoil])
    rsp, _ = assoc.send_n_set(final_ds(), MPPS, UID)
    assert status(rsp) == (0x0000, "")  # was 0x0110: the stored item did not read
    record = mpps_tx.get_mpps(env.store, UID)
    assert record is not None and record.status == "COMPLETED"
    assert record.item[SLICE_THICKNESS].value == "2,5"  # kept as it was, not lost


def test_the_scheduled_step_attributes_sequence_as_ul_is_0106(
        env: MppsEnv, explicit: Association) -> None:
    ds = create_ds(env.steps[0])
    del ds.ScheduledStepAttributesSequence
    ds.add(DataElement(SSAS, "UL", 1))
    rsp, _ = explicit.send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid ScheduledStepAttributesSequence: not a sequence")
    assert mpps_tx.get_mpps(env.store, UID) is None


@pytest.mark.parametrize(("keyword", "element", "comment"), [
    # check_final read it as a sequence: COMPLETED with a string "sequence".
    ("PerformedSeriesSequence", DataElement(0x00400340, "LO", "CHEST"),
     "invalid PerformedSeriesSequence: not a sequence"),
    ("PerformedProcedureStepEndDate", DataElement(0x00400250, "SQ", [Dataset()]),
     "invalid PerformedProcedureStepEndDate: sent as a sequence"),
    ("PerformedProcedureStepStatus",
     DataElement(0x00400252, "CS", ["COMPLETED", "DISCONTINUED"]),
     "invalid PerformedProcedureStepStatus: more than one value"),
])
def test_an_n_set_value_of_the_wrong_kind_is_0106_naming_it(
        env: MppsEnv, explicit: Association, keyword: str, element: DataElement,
        comment: str) -> None:
    assert status(explicit.send_n_create(create_ds(env.steps[0]), MPPS, UID)[0])[0] == 0
    final = final_ds()
    final[element.tag] = element
    rsp, _ = explicit.send_n_set(final, MPPS, UID)
    assert status(rsp) == (0x0106, comment)
    assert tags(rsp) == [element.tag]
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"  # type: ignore[union-attr]


def test_a_second_performed_station_ae_title_is_0106(env: MppsEnv,
                                                     explicit: Association) -> None:
    # It used to pass as the text "['CT01', 'CT02']" and be stored as the station.
    ds = create_ds(env.steps[0])
    ds.PerformedStationAETitle = ["CT01", "CT02"]
    rsp, _ = explicit.send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid PerformedStationAETitle: more than one value")


def test_what_the_store_would_not_read_back_is_refused_by_name(
        env: MppsEnv, explicit: Association, monkeypatch: pytest.MonkeyPatch) -> None:
    # The net behind the value checks: a value that passed them but would not come
    # back from the store (here: the number check off, the store's strict read of
    # before) is refused by name, not stored to fail every later N-SET.
    from pydicom import config

    from bridge.mpps import validate
    from bridge.store import items

    monkeypatch.setattr(validate, "valid_number", lambda text, vr: True)
    monkeypatch.setattr(items, "_element", lambda tag, vr, value: DataElement(
        tag, vr, value, validation_mode=config.IGNORE))
    ds = create_ds(env.steps[0])
    ds[SLICE_THICKNESS] = raw(SLICE_THICKNESS, "DS", b"2,5 ")
    rsp, _ = explicit.send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid SliceThickness: cannot be stored")
    assert mpps_tx.get_mpps(env.store, UID) is None
