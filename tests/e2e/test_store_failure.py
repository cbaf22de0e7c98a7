"""The daemon's failure answers on the wire, with the real store and the real listener.

- The store fails (its SQLite WAL file made immutable with ``chattr +i``: root ignores file
  permissions, not the immutable flag): the message gets AR 207 "please resend", nothing of
  it is stored, and the resend after recovery gets AA and is applied exactly once.
- A frame over ``mllp.max_frame_bytes``: AR 207 naming the limit, and the frame's head kept
  as a dead letter (``mwl-bridge messages list --rejected``).
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

from bridge.hl7 import encode_frame, parse_message
from bridge.hl7.mllp import HEAD_BYTES
from tests.immutable import immutable

from .conftest import FIXTURES, start_daemon, stop_daemon

CONTROL_ID = "MSG-20261128-0001"
ACCESSION = "ACC20261128001"
MAX_FRAME = 16384


def _message() -> bytes:
    return (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(b"\n", b"\r")


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(encode_frame(payload))
        buf = b""
        while b"\x1c" not in buf:
            chunk = s.recv(65536)
            assert chunk, "connection closed before a reply"
            buf += chunk
    return buf[buf.index(b"\x0b") + 1:buf.index(b"\x1c")]


def _rows(db: Path) -> dict[str, int]:
    """Rows per table: a transaction that was half applied shows up in one of them."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def _log_rows(db: Path, control_id: str) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT ack_code, error FROM message_log WHERE control_id = ? "
                           "ORDER BY id", (control_id,)).fetchall()
    finally:
        con.close()


def logged(d, *words: str, timeout: float = 30) -> bool:
    """Whether a daemon log line holds all ``words``, waiting for stderr to be read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(all(w in ln for w in words) for ln in list(d.log)):
            return True
        time.sleep(0.05)
    return False


def test_store_failure_answers_ar_207_and_the_resend_is_applied_once(daemon, tmp_path):
    db = daemon.data_dir / "bridge.sqlite3"
    wal = db.with_name(db.name + "-wal")
    assert wal.exists(), "the store is not in WAL mode"
    before = _rows(db)

    with immutable(wal):
        ack = parse_message(_exchange(daemon.mllp_port, _message()).decode("ascii"))
        # the store really failed, and it was the commit that said so
        assert logged(daemon, "store failed for message MSG-20261128-0001")

    msa, err = ack.first("MSA"), ack.first("ERR")
    assert (msa.value(1), msa.value(2)) == ("AR", CONTROL_ID)
    # v2.3.1: ERR-1 (ELD) only, the sentence in MSA-3 (docs/hl7-interface.md, section 6)
    assert err is not None and err.value(1, 4) == "207"
    assert msa.value(3) == "message not stored: application internal error; please resend"
    assert daemon.alive()
    # Nothing half applied: no message row, no item, no patient, no history, no outbox row.
    assert _rows(db) == before
    assert daemon.findscu(tmp_path, f"AccessionNumber={ACCESSION}") == []

    # After recovery the sender resends the same message: AA, applied exactly once.
    ack = parse_message(_exchange(daemon.mllp_port, _message()).decode("ascii"))
    assert (ack.first("MSA").value(1), ack.first("MSA").value(2)) == ("AA", CONTROL_ID)
    (item,) = daemon.findscu(tmp_path, f"AccessionNumber={ACCESSION}", "PatientID")
    assert item.PatientID == "PAT10001"
    assert _log_rows(db, CONTROL_ID) == [("AA", "")]
    after = _rows(db)
    assert after["message_log"] == before["message_log"] + 1
    assert after["procedure_step"] == before["procedure_step"] + 1


def test_oversize_frame_gets_ar_207_and_its_head_is_a_dead_letter(tmp_path):
    cfg = tmp_path / "mwl-bridge.yaml"
    repo = Path(__file__).resolve().parents[2]
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"mllp:\n  host: 127.0.0.1\n  port: 0\n  max_frame_bytes: {MAX_FRAME}\n"
        "dicom:\n  host: 127.0.0.1\n  port: 0\n  ae_title: MWLBRIDGE\n"
        f"mapping:\n  paths: [{repo / 'mappings'}]\n  default_station_aet: UNASSIGNED\n",
        encoding="utf-8")
    d = start_daemon(cfg, tmp_path / "data")
    try:
        # A real order, padded in its last segment past the limit.
        big = _message().rstrip(b"\r") + b"|" + b"X" * (MAX_FRAME * 2) + b"\r"
        size = len(big)
        ack = parse_message(_exchange(d.mllp_port, big).decode("ascii"))
        msa, err = ack.first("MSA"), ack.first("ERR")
        assert (msa.value(1), msa.value(2)) == ("AR", CONTROL_ID)
        assert err is not None and err.value(1, 4) == "207"  # v2.3.1: ERR-1, MSA-3
        assert msa.value(3) == (f"message of {size} bytes exceeds the maximum frame size "
                                f"of {MAX_FRAME} bytes")
        assert logged(d, f"frame of {size} bytes from", f"over the {MAX_FRAME} byte limit")
        # Not applied, and the daemon keeps serving.
        assert d.findscu(tmp_path, f"AccessionNumber={ACCESSION}") == []
        assert d.alive() and d.echoscu() == 0

        # The dead letter: the frame's head only, with its reason.
        listing = d.cli("messages", "list", "--rejected")
        assert listing.returncode == 0, listing.stderr
        (line,) = [ln for ln in listing.stdout.splitlines() if CONTROL_ID in ln]
        assert " AR " in f" {line} " and "(1 message(s))" in listing.stdout
        con = sqlite3.connect(tmp_path / "data" / "bridge.sqlite3")
        try:
            (stored, ack_code, error), = con.execute(
                "SELECT raw, ack_code, error FROM message_log WHERE control_id = ?",
                (CONTROL_ID,)).fetchall()
        finally:
            con.close()
        assert ack_code == "AR"
        assert error == f"207 message of {size} bytes exceeds the maximum frame size of " \
                        f"{MAX_FRAME} bytes"
        assert stored == big[:HEAD_BYTES]

        # A frame within the limit on the same listener is still accepted.
        ack = parse_message(_exchange(d.mllp_port, _message()).decode("ascii"))
        assert ack.first("MSA").value(1) == "AA"
    finally:
        assert stop_daemon(d) == 0
