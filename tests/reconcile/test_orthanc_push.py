"""Orthanc's stable-study push (docs/orthanc/on-stable-study.lua) with the real Orthanc:
the modality stores a study, Orthanc's Lua OnStableStudy calls the console's
``POST /api/reconcile/study`` with an operator's API token, and the item becomes
COMPLETED (source ``pacs push``) and the RIS gets its CM; a study under an item's
accession with another Study Instance UID is flagged and shown by the API."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from tests.console.conftest import TOKENS, admin_config, console_url
from tests.e2e.conftest import start_daemon, stop_daemon, write_config
from tests.e2e.test_mpps_roundtrip import outbound_config
from tests.e2e.test_study_arrival import item_keys, order_file, step_row, until
from tests.outbound.mllp_receiver import MllpReceiver

from .orthanc import ct_study, orthanc, store_study

REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "docs" / "orthanc" / "on-stable-study.lua"


def test_orthancs_stable_study_hook_completes_the_item_and_flags_a_conflict(tmp_path: Path):
    receiver = MllpReceiver()
    receiver.start()
    daemon = start_daemon(write_config(tmp_path, outbound_config(receiver.port)
                                       + admin_config()), tmp_path / "data")
    url = console_url(daemon)
    try:
        # Only an operator's token may push.
        body = {"study_instance_uid": "1.2.3"}
        assert httpx.post(f"{url}/api/reconcile/study", json=body).status_code == 401
        viewer = {"Authorization": f"Bearer {TOKENS['viewer']}"}
        assert httpx.post(f"{url}/api/reconcile/study", json=body,
                          headers=viewer).status_code == 403
        bad = httpx.post(f"{url}/api/reconcile/study", json={"study_instance_uid": "1.2.x"},
                         headers={"Authorization": f"Bearer {TOKENS['operator']}"})
        assert bad.status_code == 422 and "study_instance_uid" in bad.text

        done, acc_done, uid_done = order_file(tmp_path, 5)
        flagged, acc_flagged, _ = order_file(tmp_path, 6)
        assert daemon.send(done, flagged).returncode == 0
        (item,) = daemon.findscu(tmp_path, *item_keys(acc_done))
        env = {"MWL_BRIDGE_URL": url, "MWL_BRIDGE_TOKEN": TOKENS["operator"]}
        with orthanc(tmp_path, lua=LUA, env=env) as pacs:
            store_study(pacs, ct_study(tmp_path / "s5", study_uid=uid_done, accession=acc_done,
                                       patient_id=str(item.PatientID), images=2))
            got = receiver.wait_for(1)
            assert [m.field("ORC", 5) for m in got] == ["CM"]
            assert got[0].field("OBR", 18) == acc_done
            step_id, status = step_row(daemon, acc_done)
            assert status == "COMPLETED"
            history = daemon_history(daemon, step_id)
            assert history[-1] == ("COMPLETED", "pacs push", "orthanc: 1 series, 2 instances")
            assert daemon.findscu(tmp_path, *item_keys(acc_done)) == []

            other = generate_uid()
            store_study(pacs, ct_study(tmp_path / "s6", study_uid=other,
                                       accession=acc_flagged, patient_id=str(item.PatientID)))
            operator = {"Authorization": f"Bearer {TOKENS['operator']}"}

            def listed() -> list[dict[str, object]]:
                rsp = httpx.get(f"{url}/api/reconcile/conflicts", headers=operator)
                assert rsp.status_code == 200, rsp.text
                return list(rsp.json()["items"])

            (conflict,) = until(listed, "Orthanc's push did not flag the conflict", daemon)
            flagged_id, status = step_row(daemon, acc_flagged)
            assert conflict["step_id"] == flagged_id and conflict["kind"] == "study_uid"
            assert conflict["found_study_uid"] == other and conflict["pacs"] == "orthanc"
            assert status == "SCHEDULED"
        assert len(receiver.messages) == 1
    finally:
        code = stop_daemon(daemon)
        receiver.stop()
    assert code == 0, "\n".join(daemon.log[-30:])


def daemon_history(daemon, step_id: int) -> list[tuple[str, str, str]]:
    import sqlite3

    with sqlite3.connect(daemon.data_dir / "bridge.sqlite3") as db:
        return [(str(r[0]), str(r[1]), str(r[2])) for r in db.execute(
            "SELECT to_status, source, note FROM step_history WHERE step_id = ? ORDER BY id",
            (step_id,))]
