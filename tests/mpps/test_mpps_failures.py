"""The MPPS SCP's failure answers (0x0110) that leave nothing applied: the real SQLite store
failing under an N-SET, and an internal error. The association and the SCP stay up, and the
modality's retry is applied once."""

from __future__ import annotations

import logging

from pydicom import Dataset

from bridge.store import mpps_tx, outbox_tx
from tests.immutable import immutable

from .conftest import MPPS, create_ds, final_ds

UID = "1.2.826.0.1.3680043.8.498.77003"


def status(rsp: Dataset) -> tuple[int, str]:
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def step_status(env, accession: str) -> str:
    row = next(r for r in env.store.list_steps(limit=100)
               if r.item.AccessionNumber == accession)
    return mpps_tx.step_status(env.store, row.id)[0]


def events(env) -> list[str]:
    return [m.event for m in outbox_tx.list_messages(env.store)]


def test_a_store_failure_on_n_set_is_0110_and_the_retry_applies_once(env, caplog):
    assoc = env.associate()
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    wal = env.store.path.with_name(env.store.path.name + "-wal")
    assert wal.exists()

    with immutable(wal), caplog.at_level(logging.ERROR, logger="bridge.mpps.service"):
        rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0110, "the store failed; nothing was applied, please retry")
    assert any(r.getMessage().startswith("MPPS not stored: ") for r in caplog.records)
    # Nothing of the N-SET: the MPPS, its step and the outbox are as the N-CREATE left them.
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"
    assert step_status(env, "ACC20261128001") == "STARTED"
    assert events(env) == ["IP"]

    # The same association: the modality's retry is applied, once.
    rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    assert mpps_tx.get_mpps(env.store, UID).status == "COMPLETED"
    assert step_status(env, "ACC20261128001") == "COMPLETED"
    assert events(env) == ["IP", "CM"]


def test_an_internal_error_is_0110_names_only_the_type_and_applies_nothing(env, monkeypatch,
                                                                          caplog):
    assoc = env.associate()
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0000, "")

    def bug(jobs):  # not a StoreError: a fault the handler did not foresee
        raise KeyError("PAT10001")

    monkeypatch.setattr(env.store, "write", bug)
    with caplog.at_level(logging.ERROR, logger="bridge.mpps.service"):
        rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0110, "internal error; nothing was applied")
    assert "MPPS N-SET failed: KeyError" in caplog.messages
    assert "PAT10001" not in caplog.text  # the error line names the type, never a value
    monkeypatch.undo()
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"
    assert step_status(env, "ACC20261128001") == "STARTED"
    assert events(env) == ["IP"]
    # The SCP and the association are still up: the retry is applied.
    rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    assert events(env) == ["IP", "CM"]
