"""The Instance Availability Notification SCP (PS3.4 Annex R) on the worklist's AE,
beside the MPPS SCP, over real associations (pynetdicom as the PACS sending IAN):
every status it sends, and the items it completes by the reconciliation rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, Association
from pynetdicom.sop_class import InstanceAvailabilityNotification as IAN
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from bridge.mpps.service import MppsService
from bridge.mpps.settings import MppsSettings
from bridge.reconcile.ian import IanService
from bridge.steps import Source, StepState, change_status
from bridge.store import Store, history_tx, mpps_tx, outbox_tx, reconcile_tx
from bridge.store.base import StoreError
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.mpps.conftest import create_ds

from .conftest import make_step, reporter


@dataclass
class IanEnv:
    store: Store
    scp: WorklistSCP
    notified: list[int]
    ids: dict[str, int]

    def associate(self) -> Association:
        ae = AE(ae_title="DCM4CHEE")
        ae.add_requested_context(IAN)
        ae.add_requested_context(MPPS)
        assoc = ae.associate("127.0.0.1", self.scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        return assoc


@pytest.fixture
def env(store) -> Iterator[IanEnv]:
    store.upsert_steps([make_step(1), make_step(2)])
    ids = {str(r.item.AccessionNumber): r.id for r in store.list_steps(limit=10)}
    notified: list[int] = []
    ian = IanService(store, messages=reporter(), notify=lambda: notified.append(1))
    mpps = MppsService(store, MppsSettings(), messages=reporter())
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings(), services=(mpps, ian))
    scp.start()
    yield IanEnv(store, scp, notified, ids)
    scp.stop()


def ian(study_uid: str | None, *, series: int = 1, per_series: int = 2,
        availability: str = "ONLINE") -> Dataset:
    ds = Dataset()
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    ds.ReferencedPerformedProcedureStepSequence = []
    items = []
    for _ in range(series):
        s = Dataset()
        s.SeriesInstanceUID = generate_uid()
        sops = []
        for _ in range(per_series):
            sop = Dataset()
            sop.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            sop.ReferencedSOPInstanceUID = generate_uid()
            sop.InstanceAvailability = availability
            sop.RetrieveAETitle = "DCM4CHEE"
            sops.append(sop)
        s.ReferencedSOPSequence = sops
        items.append(s)
    ds.ReferencedSeriesSequence = items
    return ds


UID1 = "1.2.826.0.1.3680043.8.498.900001"


def status(rsp: Dataset) -> tuple[int, str]:
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def test_an_ian_completes_the_items_of_its_study_and_queues_one_cm(env: IanEnv):
    rsp, _ = env.associate().send_n_create(ian(UID1, series=2, per_series=3), IAN,
                                           generate_uid())
    assert status(rsp) == (0x0000, "")
    step_id = env.ids["ACC0000001"]
    assert mpps_tx.step_status(env.store, step_id)[0] == "COMPLETED"
    assert mpps_tx.step_status(env.store, env.ids["ACC0000002"])[0] == "SCHEDULED"
    (msg,) = outbox_tx.list_messages(env.store)
    assert msg.event == "CM" and msg.step_id == step_id
    last = history_tx.for_step(env.store, step_id)[-1]
    assert (last.source, last.note) == ("ian", "IAN from DCM4CHEE: 2 series, 6 instances")
    assert env.notified == [1]
    # Sent again (a PACS retries): success, nothing more happens.
    rsp, _ = env.associate().send_n_create(ian(UID1), IAN, generate_uid())
    assert status(rsp) == (0x0000, "")
    assert len(outbox_tx.list_messages(env.store)) == 1


def test_an_ian_for_a_study_no_item_expects_is_accepted_and_changes_nothing(env: IanEnv):
    rsp, _ = env.associate().send_n_create(ian("1.2.3.4.5"), IAN, generate_uid())
    assert status(rsp) == (0x0000, "")
    assert outbox_tx.list_messages(env.store) == []


def test_instances_not_available_complete_nothing(env: IanEnv):
    rsp, _ = env.associate().send_n_create(ian(UID1, availability="UNAVAILABLE"), IAN,
                                           generate_uid())
    assert status(rsp) == (0x0000, "")
    assert mpps_tx.step_status(env.store, env.ids["ACC0000001"])[0] == "SCHEDULED"


def test_an_mpps_that_discontinued_the_step_wins_over_the_ian(env: IanEnv):
    step_id = env.ids["ACC0000001"]

    def discontinue(tx):
        (r,) = mpps_tx.steps_by_id(tx, [step_id])
        change_status(tx, StepState(r.id, r.sps_status, r.item), "DISCONTINUED",
                      source=Source.MPPS)

    env.store.write([discontinue])
    rsp, _ = env.associate().send_n_create(ian(UID1), IAN, generate_uid())
    assert status(rsp) == (0x0000, "")
    assert mpps_tx.step_status(env.store, step_id)[0] == "DISCONTINUED"
    assert outbox_tx.list_messages(env.store) == []


@pytest.mark.parametrize(("ds", "code", "comment"), [
    (ian(None), 0x0120, "StudyInstanceUID is missing"),
    (ian(""), 0x0121, "StudyInstanceUID is empty"),
    (ian("1.2.abc"), 0x0106, "StudyInstanceUID is not a valid UID"),
])
def test_study_instance_uid_statuses(env: IanEnv, ds: Dataset, code: int, comment: str):
    rsp, _ = env.associate().send_n_create(ds, IAN, generate_uid())
    assert status(rsp) == (code, comment)


def test_series_statuses(env: IanEnv):
    no_series = ian(UID1)
    del no_series.ReferencedSeriesSequence
    rsp, _ = env.associate().send_n_create(no_series, IAN, generate_uid())
    assert status(rsp) == (0x0120, "ReferencedSeriesSequence is missing")
    empty = ian(UID1)
    empty.ReferencedSeriesSequence = []
    rsp, _ = env.associate().send_n_create(empty, IAN, generate_uid())
    assert status(rsp) == (0x0121, "ReferencedSeriesSequence is empty")
    no_sops = ian(UID1)
    del no_sops.ReferencedSeriesSequence[0].ReferencedSOPSequence
    rsp, _ = env.associate().send_n_create(no_sops, IAN, generate_uid())
    assert status(rsp) == (0x0106, "a series item has no ReferencedSOPSequence")
    assert mpps_tx.step_status(env.store, env.ids["ACC0000001"])[0] == "SCHEDULED"


def test_a_malformed_instance_uid_is_0117(env: IanEnv):
    rsp, _ = env.associate().send_n_create(ian(UID1), IAN, "1.2.03")
    assert status(rsp)[0] == 0x0117


def test_a_store_failure_is_0110_and_nothing_is_applied(env: IanEnv, monkeypatch):
    def broken(jobs):
        raise StoreError("disk full")

    monkeypatch.setattr(env.store, "write", broken)
    rsp, _ = env.associate().send_n_create(ian(UID1), IAN, generate_uid())
    assert status(rsp) == (0x0110, "the store failed; nothing was applied, please retry")
    monkeypatch.undo()
    assert mpps_tx.step_status(env.store, env.ids["ACC0000001"])[0] == "SCHEDULED"
    assert reconcile_tx.conflicts(env.store) == []


def test_mpps_n_create_still_reaches_the_mpps_scp_on_the_same_ae(env: IanEnv):
    step = make_step(2)
    rsp, _ = env.associate().send_n_create(create_ds(step), MPPS, generate_uid())
    assert status(rsp) == (0x0000, "")
    assert mpps_tx.step_status(env.store, env.ids["ACC0000002"])[0] == "STARTED"


def test_the_daemon_serves_ian_on_its_ae_when_configured(tmp_path):
    """The wiring (bridge/app/services.py): `reconcile.ian: true` puts the IAN SCP on the
    daemon's AE, beside MPPS; an IAN completes the item and the RIS gets its CM."""
    from tests.e2e.conftest import FIXTURES, start_daemon, stop_daemon, write_config
    from tests.e2e.test_mpps_roundtrip import outbound_config
    from tests.outbound.mllp_receiver import MllpReceiver

    receiver = MllpReceiver()
    receiver.start()
    daemon = start_daemon(write_config(tmp_path, outbound_config(receiver.port)
                                       + "reconcile:\n  ian: true\n"), tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        ae = AE(ae_title="DCM4CHEE")
        ae.add_requested_context(IAN)
        assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title=daemon.ae_title)
        assert assoc.is_established
        try:
            rsp, _ = assoc.send_n_create(
                ian("1.2.840.113619.2.55.3.604688119.969.1764318615.101"), IAN,
                generate_uid())
        finally:
            assoc.release()
        assert status(rsp) == (0x0000, "")
        (cm,) = receiver.wait_for(1)
        assert cm.field("ORC", 5) == "CM" and cm.field("OBR", 18) == "ACC20261128001"
    finally:
        code = stop_daemon(daemon)
        receiver.stop()
    assert code == 0, "\n".join(daemon.log[-30:])
