"""``mwl-bridge import`` in process, on the real SQLite store: HL7 batch files through the
daemon's own intake, .wl folders in batches, a summary counting rejects by reason, the
dead-letter file (0600), specific errors for broken files that do not stop the rest."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore, StepFilter, atna_tx
from bridge.store.orders_tx import OrdersTx
from tests.immutable import immutable
from tests.orders.wlfiles import wl_item, write_wl

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "hl7"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n"
                   f"mapping:\n  paths: [{REPO / 'mappings'}]\n"
                   "  default_station_aet: UNASSIGNED\n", encoding="utf-8")
    return cfg


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), "import", "--no-progress", *args])
    return code, capsys.readouterr().out


def _dead(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _store(tmp: Path) -> SqliteStore:
    return SqliteStore(tmp / "data" / "bridge.sqlite3")


def test_hl7_batch_file_with_a_reject_and_a_broken_message(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_segment = _fixture("orm-o01-two-groups.hl7") + b"garbage without a segment id\r"
    batch = tmp_path / "orders.hl7"
    batch.write_bytes(b"FHS|^~\\&|RIS|HOSP\rBHS|^~\\&|RIS|HOSP\r"
                      + _fixture("orm-o01-ihe-ct.hl7") + _fixture("orm-missing-pid3.hl7")
                      + bad_segment + _fixture("lifecycle-nw.hl7") + b"FTS|1\r")
    dead = tmp_path / "rejects.jsonl"
    code, out = _run(config, capsys, str(batch), "--dead-letters", str(dead))
    assert code == 1
    assert "1 HL7 file(s): 4 message(s) in " in out
    assert "  loaded     2\n" in out and "  rejected   2\n" in out
    assert "         1  bad segment\n" in out
    assert "         1  PatientID is required but PID-3" in out  # the mapping's reason
    assert (f"{batch}: the batch opened by BHS on line 2 has no BTS (before line "
            in out)
    assert stat.S_IMODE(dead.stat().st_mode) == 0o600
    rejects = {d["message"]: d for d in _dead(dead)}
    assert set(rejects) == {2, 3}
    assert str(rejects[2]["reason"]).startswith(f"{batch} message #2 (line 10): AE 101 at "
                                                "PID^1^3^1^1: Patient ID missing (PID-3)")
    assert str(rejects[3]["reason"]).startswith(f"{batch} message #3 (line 15): line ")
    assert "is not an HL7 segment: 'garbage without a segment id'" in str(rejects[3]["reason"])
    assert str(rejects[3]["hl7"]).startswith("MSH|")  # the message, to fix and import again
    store = _store(tmp_path)
    try:
        assert store.count_matching(StepFilter(accession="ACC20261128001")) == 1
        assert store.count_matching(StepFilter(accession="ACC20261128901")) == 0
        # The daemon's own message log: the rejected one is a dead letter there too.
        (logged,) = store.write([lambda tx: OrdersTx(tx).list_messages(rejected=True)])
        assert isinstance(logged, list) and [m.control_id for m in logged] == \
            ["MSG-20261128-0901"]
        assert logged[0].peer == "import orders.hl7"
    finally:
        store.close()
    # Again: the accepted ones are resends (unchanged), nothing is stored twice.
    code, out = _run(config, capsys, str(batch), "--dead-letters", str(tmp_path / "r2.jsonl"))
    assert "  unchanged  2 (already stored with the same content)" in out


def test_mllp_frames_and_ordered_lifecycle(config: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "capture.mllp"
    frames.write_bytes(b"".join(b"\x0b" + _fixture(n) + b"\x1c\r"
                                for n in ("lifecycle-nw.hl7", "lifecycle-ca.hl7")))
    code, out = _run(config, capsys, str(frames))
    assert code == 0, out
    assert "  loaded     2\n" in out
    store = _store(tmp_path)
    try:
        (row,) = list(store.iter_steps(StepFilter(), limit=10))
        assert row.sps_status == "CANCELED"  # the cancel came after its order
    finally:
        store.close()


def test_wl_folder_with_a_corrupt_file(config: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "worklists" / "MWLSCP"
    for n in range(1, 6):
        write_wl(folder / f"wl_{n}.wl", wl_item(n))
    (folder / "broken.wl").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    (folder / "lockfile").touch()
    dead = tmp_path / "rejects.jsonl"
    code, out = _run(config, capsys, str(tmp_path / "worklists"), "--dead-letters", str(dead))
    assert code == 1
    assert "1 worklist file(s)" not in out and "6 worklist file(s): 6 item(s)" in out
    assert "  loaded     5\n" in out and "       1  corrupt DICOM file" in out
    (reject,) = _dead(dead)
    assert reject["source"] == str(folder / "broken.wl")
    assert str(reject["reason"]).startswith(f"{folder / 'broken.wl'}: cannot read the DICOM")
    assert f"dead letters: {dead} (1)" in out


def test_nothing_to_import_is_an_error(config: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, out = _run(config, capsys, str(tmp_path / "empty"), str(tmp_path / "missing.hl7"))
    assert code == 1
    assert f"{tmp_path / 'empty'}: no .wl file in this folder" in out
    assert f"{tmp_path / 'missing.hl7'}: no such file or folder" in out


def test_message_over_the_frame_limit_is_rejected_unread(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nmllp:\n  max_frame_bytes: 1024\n"
                   f"mapping:\n  paths: [{REPO / 'mappings'}]\n", encoding="utf-8")
    big = _fixture("orm-o01-ihe-ct.hl7") + b"NTE|1||" + b"x" * 2000 + b"\r"
    path = tmp_path / "big.hl7"
    path.write_bytes(big + _fixture("lifecycle-nw.hl7"))
    dead = tmp_path / "rejects.jsonl"
    code, out = _run(cfg, capsys, str(path), "--dead-letters", str(dead))
    assert code == 1 and "  loaded     1\n" in out and "       1  message too large\n" in out
    (reject,) = _dead(dead)
    assert reject["message"] == 1
    assert "more than mllp.max_frame_bytes (1024); not applied" in str(reject["reason"])


def test_a_dead_worker_process_is_reported(config: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from bridge.orders import bulk

    def dies(*args: object, **kwargs: object) -> None:  # failure injection: the pool broke
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(bulk, "import_wl", dies)
    write_wl(tmp_path / "wl" / "a.wl", wl_item(1))
    code = main(["--config", str(config), "import", "--no-progress", str(tmp_path / "wl")])
    assert code == 1
    assert ("a worker process reading .wl files died; the batches committed before stay "
            "loaded: run the import again") in capsys.readouterr().err


def test_wl_import_on_a_read_only_store_says_so_and_loads_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With audit on: the import's audit event, written after the failure (_import's
    # finally), fails too, and says so on a line of its own instead of a traceback.
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\naudit:\n  enabled: true\n",
                   encoding="utf-8")
    store = _store(tmp_path)
    store.migrate()
    store.close()
    write_wl(tmp_path / "wl" / "a.wl", wl_item(1))
    with immutable(tmp_path / "data" / "bridge.sqlite3"):
        code = main(["--config", str(cfg), "import", "--no-progress", str(tmp_path / "wl"),
                     "--dead-letters", str(tmp_path / "rejects.jsonl")])
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")  # no summary: the batch was not loaded
    readonly = "store error: OperationalError: attempt to write a readonly database"
    assert captured.err.splitlines() == [
        f"{readonly}; the batches committed before it stay loaded",
        f"{readonly}; the import is not audited"]
    store = _store(tmp_path)
    try:
        assert store.count_steps() == 0
        assert atna_tx.search(store) == ([], 0)
    finally:
        store.close()
