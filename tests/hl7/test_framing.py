import asyncio
from datetime import datetime

import pytest

from bridge.hl7.ack import ErrorDetail, build_ack, read_header_bytes
from bridge.hl7.client import ack_code_of, acked_control_id_of
from bridge.hl7.mllp import (
    CR,
    END,
    HEAD_BYTES,
    START,
    Frame,
    FrameDecoder,
    OversizeFrame,
    encode_frame,
)
from bridge.hl7.server import MllpServer

BOM = b"\xef\xbb\xbf"
MAX_FRAME = 1024


def message(n: int, *, pad: int = 0, eol: bytes = b"\r") -> bytes:
    head = f"MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|C{n}|P|2.3.1||||||8859/1".encode()
    return head + eol + b"PID|1||" + str(n).encode() + b"||M\xfcller" + b"x" * pad + eol


class AckHandler:
    """Answers AA to readable frames and AR + ERR to oversize ones, like the application."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.oversize: list[tuple[bytes, int]] = []

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        self.payloads.append(payload)
        return self._ack(payload, "AA", ())

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        self.oversize.append((head, size))
        return self._ack(head, "AR", (ErrorDetail(207, "", f"message exceeds {MAX_FRAME}"),))

    @staticmethod
    def _ack(data: bytes, code: str, errors: tuple[ErrorDetail, ...]) -> bytes | None:
        header = read_header_bytes(data)
        if header is None:
            return None
        return build_ack(header, code, errors=errors, control_id="A",
                         now=datetime(2026, 11, 28)).encode("latin-1")


@pytest.fixture
async def served():
    handler = AckHandler()
    server = await MllpServer.start(handler, host="127.0.0.1", port=0,
                                    max_frame_bytes=MAX_FRAME, idle_timeout_s=30)
    yield server, handler
    await server.close()


async def exchange(server: MllpServer, chunks: list[bytes], replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        decoder, frames = FrameDecoder(1 << 20), []
        while len(frames) < replies:
            data = await reader.read(65536)
            assert data, "server closed the connection early"
            frames += decoder.feed(data)
        return [f.payload for f in frames]
    finally:
        writer.close()
        await writer.wait_closed()


def acked(replies: list[bytes]) -> list[tuple[str, str]]:
    return [(ack_code_of(r), acked_control_id_of(r)) for r in replies]


# --- the decoder alone ---------------------------------------------------------------

def test_one_frame():
    assert FrameDecoder(100).feed(encode_frame(b"abc")) == [Frame(b"abc")]


def test_split_byte_by_byte():
    decoder = FrameDecoder(1000)
    data = encode_frame(message(1)) + encode_frame(message(2))
    frames = [f for i in range(len(data)) for f in decoder.feed(data[i:i + 1])]
    assert frames == [Frame(message(1)), Frame(message(2))]
    assert decoder.discarded == 0


def test_many_frames_in_one_chunk_without_trailing_cr():
    chunk = b"".join(START + message(i) + END for i in range(5))
    assert FrameDecoder(1000).feed(chunk) == [Frame(message(i)) for i in range(5)]


def test_stray_bytes_and_bom_are_counted_not_framed():
    decoder = FrameDecoder(1000)
    frames = decoder.feed(BOM + encode_frame(b"a") + b"\r\nnoise" + END + encode_frame(b"b"))
    assert frames == [Frame(b"a"), Frame(b"b")]
    assert decoder.discarded == len(BOM) + len(b"\r\nnoise") + 1


def test_cr_after_end_block_split_across_reads_is_not_stray():
    decoder = FrameDecoder(1000)
    assert decoder.feed(START + b"a" + END) == [Frame(b"a")]
    assert decoder.feed(CR) == []
    assert decoder.discarded == 0


def test_start_block_inside_a_frame_restarts_it():
    decoder = FrameDecoder(1000)
    assert decoder.feed(START + b"cut off" + START + b"whole" + END + CR) == [Frame(b"whole")]
    assert decoder.discarded == len(b"cut off") + 1


def test_unfinished_frame_yields_nothing():
    assert FrameDecoder(1000).feed(START + b"MSH|partial") == []


def test_frame_of_exactly_the_limit_is_normal():
    assert FrameDecoder(10).feed(encode_frame(b"x" * 10)) == [Frame(b"x" * 10)]


def test_oversize_keeps_head_and_size_then_recovers():
    decoder = FrameDecoder(HEAD_BYTES * 2)
    big = b"MSH|" + b"y" * (HEAD_BYTES * 5)
    data = encode_frame(big) + encode_frame(b"next")
    frames = [f for i in range(0, len(data), 1000) for f in decoder.feed(data[i:i + 1000])]
    assert frames == [OversizeFrame(head=big[:HEAD_BYTES], size=len(big)), Frame(b"next")]


def test_oversize_head_never_exceeds_the_limit():
    frames = FrameDecoder(16).feed(encode_frame(b"z" * 100))
    assert frames == [OversizeFrame(head=b"z" * 16, size=100)]


def test_encode_frame_and_its_guards():
    assert encode_frame(b"p") == b"\x0bp\x1c\x0d"
    for bad in (b"a\x0bb", b"a\x1cb"):
        with pytest.raises(ValueError, match=r"^an MLLP payload must not contain VT "
                                             r"\(0x0B\) or FS \(0x1C\)$"):
            encode_frame(bad)
    with pytest.raises(ValueError, match=r"^max_frame_bytes must be positive$"):
        FrameDecoder(0)
    # The smallest limit is one byte.
    assert FrameDecoder(1).feed(encode_frame(b"x") + encode_frame(b"xy")) == [
        Frame(b"x"), OversizeFrame(head=b"x", size=2)]


def test_a_cr_before_the_first_frame_is_noise():
    # Only the CR right after an FS is framing.
    decoder = FrameDecoder(1000)
    assert decoder.feed(CR + encode_frame(b"a")) == [Frame(b"a")]
    assert decoder.discarded == 1


def test_discarded_bytes_add_up_across_reads():
    decoder = FrameDecoder(1000)
    assert decoder.in_frame is False
    assert decoder.feed(b"zz") == []                           # noise: 2
    assert decoder.feed(START + b"ABC" + START + b"DEF" + END) == [Frame(b"DEF")]
    assert decoder.discarded == 2 + len(b"ABC") + 1            # the cut-off frame and its VT
    assert decoder.in_frame is False
    assert decoder.feed(CR + b"tail") == []                    # CR after FS is framing
    assert decoder.discarded == 2 + 4 + len(b"tail")
    assert decoder.feed(encode_frame(b"a") + b"rest") == [Frame(b"a")]
    assert decoder.discarded == 2 + 4 + 4 + len(b"rest")       # counted after a frame too


def test_oversize_head_is_completed_from_the_chunk_that_overflows():
    decoder = FrameDecoder(10)
    assert decoder.feed(START + b"123456") == []
    assert decoder.buffered == 6
    assert decoder.feed(b"abcdefgh" + END) == [OversizeFrame(head=b"123456abcd", size=14)]
    assert decoder.buffered == 0 and decoder.in_frame is False


# --- the same over a real socket -----------------------------------------------------

async def test_bom_before_start_block(served):
    server, handler = served
    replies = await exchange(server, [BOM + encode_frame(message(1))], 1)
    assert acked(replies) == [("AA", "C1")]
    assert handler.payloads == [message(1)]  # bytes untouched, Latin-1 stays Latin-1


async def test_stray_bytes_between_frames(served):
    server, _ = served
    chunks = [encode_frame(message(1)) + b"\r\n\x00garbage\n" + encode_frame(message(2))]
    assert acked(await exchange(server, chunks, 2)) == [("AA", "C1"), ("AA", "C2")]


async def test_missing_trailing_cr_and_lf_segment_ends(served):
    server, handler = served
    chunks = [START + message(1, eol=b"\n") + END, START + message(2, eol=b"\r\n") + END]
    assert acked(await exchange(server, chunks, 2)) == [("AA", "C1"), ("AA", "C2")]
    assert handler.payloads == [message(1, eol=b"\n"), message(2, eol=b"\r\n")]


async def test_many_frames_in_one_write(served):
    server, _ = served
    chunk = b"".join(encode_frame(message(i)) for i in range(40))
    assert acked(await exchange(server, [chunk], 40)) == [("AA", f"C{i}") for i in range(40)]


async def test_one_frame_split_byte_by_byte(served):
    server, handler = served
    data = encode_frame(message(7))
    replies = await exchange(server, [data[i:i + 1] for i in range(len(data))], 1)
    assert acked(replies) == [("AA", "C7")]
    assert handler.payloads == [message(7)]


async def test_oversize_then_normal_frame_on_one_connection(served):
    server, handler = served
    chunks = [encode_frame(message(1, pad=MAX_FRAME * 4)), encode_frame(message(2))]
    replies = await exchange(server, chunks, 2)
    assert acked(replies) == [("AR", "C1"), ("AA", "C2")]
    assert b"ERR|^^^207&Application internal error&HL70357" in replies[0]
    [(head, size)] = handler.oversize
    assert size == len(message(1, pad=MAX_FRAME * 4))
    assert head == message(1, pad=MAX_FRAME * 4)[:MAX_FRAME]
