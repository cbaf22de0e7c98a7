"""Broken MSH-1/MSH-2 over a real MLLP connection (fuzz findings, fuzz/corpus/):

- a control character as the field separator (ESC, SO: ISO 2022 shifts) used to
  crash the MSH-18 reader (``ValueError: empty separator``): the connection
  closed with no ACK and nothing kept, and the sender resent forever. It is now
  a frame without a readable MSH: the documented "not HL7" answer (no ACK, the
  connection closed, the frame kept in the message log);
- a field separator that is one of ``^~\\&`` with a broken MSH-2 used to get an
  ACK written with two equal delimiters, which no parser (ours included) can
  read. It now gets an AR 102 at MSH-2 that parses, naming MSH-1.

SQLite only: none of this depends on the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.hl7 import MllpClient, MllpServer, parse_message
from bridge.hl7.settings import MllpSettings
from bridge.orders.ingest import Ingest
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, SqliteStore
from bridge.store.orders_tx import LoggedMessage, OrdersTx
from tests.orders.conftest import fixture, shipped_mappings

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus"
NW = fixture("lifecycle-nw.hl7")
WAIT_S = 30.0


class Side:
    def __init__(self, store: SqliteStore, commits: CommitQueue, ingest: Ingest,
                 server: MllpServer) -> None:
        self.store, self.commits, self.ingest, self.server = store, commits, ingest, server
        self.clients: list[MllpClient] = []

    async def send(self, data: bytes) -> bytes:
        client = await MllpClient.connect("127.0.0.1", self.server.port)
        self.clients.append(client)
        return await client.send(data, timeout=WAIT_S)

    def messages(self) -> list[LoggedMessage]:
        (rows,) = self.store.write([lambda tx: OrdersTx(tx).list_messages(limit=100)])
        assert isinstance(rows, list)
        return rows


Start = Callable[[], Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    sides: list[Side] = []

    async def make() -> Side:
        store = SqliteStore(tmp_path / "bridge.sqlite3")
        store.migrate()
        commits = CommitQueue(store)
        commits.start()
        mappings = shipped_mappings()
        ingest = Ingest(lambda: mappings, commits, MllpSettings(), orders=OrdersSettings())
        await ingest.open()
        server = await MllpServer.start(ingest, host="127.0.0.1", port=0,
                                        max_frame_bytes=1 << 20, idle_timeout_s=60)
        side = Side(store, commits, ingest, server)
        sides.append(side)
        return side

    yield make
    for side in sides:
        for client in side.clients:
            await client.close()
        await side.server.close(grace_s=10)
        await side.ingest.close()
        side.commits.stop()
        side.store.close()


def with_field_separator(data: bytes, sep: bytes) -> bytes:
    """``data`` with MSH-1 replaced by ``sep`` and every other "|" of the MSH kept."""
    return data[:3] + sep + data[4:]


ESC_AS_SEPARATOR = (CORPUS / "msh18_charset" / "crash-esc-as-field-separator").read_bytes()
ENCODING_CHAR_AS_SEPARATOR = (CORPUS / "er7_tokenizer"
                              / "crash-ack-field-separator-is-a-standard-delimiter").read_bytes()


@pytest.mark.parametrize("frame", [
    ESC_AS_SEPARATOR,                                  # the fuzz reproducer
    with_field_separator(NW, b"\x1b"),                 # ESC in MSH-1 of a whole order
    with_field_separator(NW, b"\x0e"),                 # SO
    NW.replace(b"|", b"\x1b"),                         # ESC as every field separator
    b"MSH\x00|^~\\&|RIS|HOSP|||20261128||ORM^O01|X1|P|2.3.1\r",             # NUL
], ids=["reproducer", "esc", "so", "esc-throughout", "nul"])
async def test_a_control_character_as_field_separator_is_not_hl7_kept_and_closed(
        start: Start, frame: bytes) -> None:
    side = await start()
    with pytest.raises(ConnectionError, match="closed the connection before replying"):
        await side.send(frame)
    (logged,) = side.messages()
    assert (logged.ack_code, logged.error) == ("", "not HL7: no readable MSH segment")
    # The listener goes on serving.
    ack = parse_message((await side.send(NW)).decode("latin-1"))
    assert ack.first("MSA").value(1) == "AA"  # type: ignore[union-attr]


@pytest.mark.parametrize("sep", [b"\\", b"^", b"~", b"&"])
async def test_a_field_separator_that_is_an_encoding_character_gets_an_ar_that_parses(
        start: Start, sep: bytes) -> None:
    side = await start()
    frame = (ENCODING_CHAR_AS_SEPARATOR if sep == b"\\"
             else ENCODING_CHAR_AS_SEPARATOR[:3] + sep + ENCODING_CHAR_AS_SEPARATOR[4:])
    raw = await side.send(frame)
    assert raw[3:4] == sep  # answered in the sender's own field separator ...
    ack = parse_message(raw.decode("latin-1"))  # ... with five different delimiters
    d = ack.delimiters
    assert len({d.field, d.component, d.repetition, d.escape, d.subcomponent}) == 5
    msa, err = ack.first("MSA"), ack.first("ERR")
    assert msa is not None and err is not None
    assert msa.value(1) == "AR"
    assert err.value(3, 1) == "102"
    assert (err.value(2, 1), err.value(2, 2), err.value(2, 3)) == ("MSH", "1", "2")
    text = err.value(8)
    assert "MSH-2 (encoding characters) must be four characters" in text
    assert f"MSH-1 (field separator) is {sep.decode()!r}" in text
    (logged,) = side.messages()  # kept as a dead letter, as every rejection
    assert logged.ack_code == "AR"
