"""Every ACK the daemon sends has its own MSH-10, refusals by the allow-list included.

Before the application layer wired one AckControlIds into both, the intake and
the allow-list each counted from 1, so the first ACK and the first refusal of a
second carried the same MSH-10 (time + 000001).
"""

from __future__ import annotations

import asyncio

from bridge.hl7 import MllpClient

from .conftest import FIXTURES, start_daemon, stop_daemon, write_config


def _msh10(ack: bytes) -> str:
    return ack.split(b"\r")[0].decode("latin-1").split("|")[9]


def _with_control_id(message: bytes, control_id: str) -> bytes:
    msh, rest = message.split(b"\r", 1)
    fields = msh.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + b"\r" + rest


async def _send_both(port: int, accepted: bytes, refused: bytes) -> list[bytes]:
    client = await MllpClient.connect("127.0.0.1", port, timeout=30)
    try:
        acks = []
        for i in range(3):  # new control IDs: a resend would get its original ACK back
            acks.append(await client.send(_with_control_id(accepted, f"OK{i}"), timeout=30))
            acks.append(await client.send(_with_control_id(refused, f"NO{i}"), timeout=30))
        return acks
    finally:
        await client.close()


def test_acks_and_refusals_never_share_a_control_id(tmp_path):
    cfg = write_config(tmp_path)
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(b"\n", b"\r")
    msh = text.split(b"\r")[0].split(b"|")
    sender = msh[2].decode()
    cfg.write_text(cfg.read_text().replace(
        "mllp:\n  host: 127.0.0.1\n  port: 0\n",
        "mllp:\n  host: 127.0.0.1\n  port: 0\n  allow:\n    senders:\n"
        f"      - application: {sender}\n"), encoding="utf-8")
    refused = text.replace(b"|" + msh[2] + b"|", b"|INTRUDER|", 1)
    d = start_daemon(cfg, tmp_path / "data")
    try:
        acks = asyncio.run(_send_both(d.mllp_port, text, refused))
    finally:
        assert stop_daemon(d) == 0
    codes = [a.split(b"\r")[1].split(b"|")[1] for a in acks]
    assert codes == [b"AA", b"AR"] * 3
    ids = [_msh10(a) for a in acks]
    assert len(set(ids)) == len(ids), ids
