"""An MLLP client: one connection, one message in flight at a time.

After a timeout the connection is closed, never reused: a late ACK would
otherwise be read as the answer to the next message (the classic "ACK
matched to the wrong message" that causes duplicate floods).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl as ssl_module

from bridge.hl7.charset import BOM
from bridge.hl7.mllp import Frame, FrameDecoder, encode_frame
from bridge.hl7.server import READ_CHUNK, set_nodelay

log = logging.getLogger(__name__)

DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BATCH_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


class MllpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_reply_bytes: int) -> None:
        self._reader = reader
        self._writer = writer
        self._max_reply_bytes = max_reply_bytes
        self._decoder = FrameDecoder(max_reply_bytes)
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: float = 10.0,
                      max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
                      ssl: ssl_module.SSLContext | None = None,
                      server_hostname: str | None = None) -> MllpClient:
        """Open a connection; raises TimeoutError or ConnectionError.

        With ``ssl`` (bridge.tls.client_context) the connection is TLS and the
        server's certificate must name ``server_hostname`` (default: ``host``).
        A failed handshake is a ConnectionError naming OpenSSL's reason.
        """
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl,
                    server_hostname=(server_hostname or host) if ssl is not None else None)
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} took over {timeout} s") from None
        except ConnectionError:
            raise
        except ssl_module.SSLError as exc:
            raise ConnectionError(f"TLS with {host}:{port} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {host}:{port}: {exc.strerror}") from exc
        set_nodelay(writer)
        return cls(reader, writer, max_reply_bytes)

    async def send(self, payload: bytes, *, timeout: float = 30.0) -> bytes:
        """Send one message and return the reply payload.

        Raises TimeoutError (the connection is then closed) or ConnectionError.
        Concurrent calls wait their turn.
        """
        framed = encode_frame(payload)
        async with self._lock:
            if self._closed:
                raise ConnectionError("the MLLP connection is closed")
            try:
                async with asyncio.timeout(timeout):
                    return await self._exchange(framed)
            except TimeoutError:
                self._abort()
                raise TimeoutError(f"no MLLP reply within {timeout} s") from None
            except BaseException:
                # Failed or cancelled mid-exchange: whatever the peer sends
                # next cannot be paired with a message any more.
                self._abort()
                raise

    async def _exchange(self, framed: bytes) -> bytes:
        self._writer.write(framed)
        await self._writer.drain()
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                raise ConnectionError("the peer closed the connection before replying")
            frames = self._decoder.feed(data)
            if not frames:
                continue
            if len(frames) > 1:
                # One message, one reply: anything more is unsolicited, and
                # keeping it would pair it with the next message.
                log.warning("MLLP peer sent %d replies to one message; extra ones dropped",
                            len(frames))
            reply = frames[0]
            if not isinstance(reply, Frame):
                raise ConnectionError(
                    f"the {reply.size}-byte reply exceeds {self._max_reply_bytes} bytes")
            return reply.payload

    def _abort(self) -> None:
        self._closed = True
        self._writer.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._abort()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


def split_messages(data: bytes) -> list[bytes]:
    """Split a file into messages, each starting at a line that begins with "MSH".

    Line ends may be CR, LF or CRLF; blank lines, MLLP block characters and
    batch envelope segments (FHS/BHS/BTS/FTS) are dropped. Each message comes
    back with CR segment ends, still undecoded. Raises ValueError for
    content before the first MSH.
    """
    if data.startswith(BOM):
        data = data[len(BOM):]
    messages: list[list[bytes]] = []
    for number, raw_line in enumerate(_LINE_END.split(data), start=1):
        line = raw_line.strip(b"\x0b\x1c")
        if not line.strip() or line.startswith(_BATCH_ENVELOPE):
            continue
        if line.startswith(b"MSH"):
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        else:
            raise ValueError(f"line {number} comes before the first MSH segment")
    return [b"\r".join(segments) + b"\r" for segments in messages]


def _segment_fields(ack: bytes, name: bytes) -> list[bytes]:
    text = ack.lstrip(b"\x0b\r\n \t")
    if text.startswith(BOM):
        text = text[len(BOM):]
    sep = text[3:4] if text.startswith(b"MSH") and len(text) > 3 else b"|"
    for line in _LINE_END.split(text):
        if line.startswith(name + sep):
            return line.split(sep)
    return []


def ack_code_of(ack: bytes) -> str:
    """MSA-1 of a reply (AA, AE, AR, CA, ...); '' when it has no MSA."""
    fields = _segment_fields(ack, b"MSA")
    return fields[1].decode("latin-1").strip() if len(fields) > 1 else ""


def acked_control_id_of(ack: bytes) -> str:
    """MSA-2 of a reply: the MSH-10 it acknowledges, as sent; '' when absent.

    Read as Latin-1, which is exact for the ASCII control IDs senders use.
    """
    fields = _segment_fields(ack, b"MSA")
    return fields[2].decode("latin-1").strip() if len(fields) > 2 else ""
