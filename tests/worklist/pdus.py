"""Hand-made PDUs for hostile-peer tests: what no well-behaved library would send."""

from __future__ import annotations

import socket
import struct
import time

VERIFICATION = b"1.2.840.10008.1.1"
MWL_FIND = b"1.2.840.10008.5.1.4.31"
IMPLICIT_LE = b"1.2.840.10008.1.2"


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(calling: bytes = b"CONSOLE", called: bytes = b"MWLBRIDGE",
                 contexts: tuple[bytes, ...] = (VERIFICATION, MWL_FIND),
                 max_pdu: int = 16384, syntax: bytes = IMPLICIT_LE) -> bytes:
    """An A-ASSOCIATE-RQ with the AE title fields exactly as given (padded to 16),
    each context (IDs 1, 3, 5 ...) offered with ``syntax``."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16]
    body += b"\x00" * 32 + _item(0x10, b"1.2.840.10008.3.1.1.1")
    for n, uid in enumerate(contexts):
        body += _item(0x20, bytes([2 * n + 1, 0, 0, 0]) + _item(0x30, uid)
                      + _item(0x40, syntax))
    body += _item(0x50, _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4"))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF with one PDV item (control: bit 0 command, bit 1 last fragment)."""
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return header(0x04, len(pdv)) + pdv


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole PDU from ``sock`` (read exactly, never into the next one), or what
    came before the connection ended."""
    sock.settimeout(timeout)
    data = b""

    def wanted() -> int:
        return 6 if len(data) < 6 else 6 + struct.unpack(">L", data[2:6])[0]

    while len(data) < wanted():
        try:
            chunk = sock.recv(min(wanted() - len(data), 65536))
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
    return data


def established(port: int, contexts: tuple[bytes, ...] = (VERIFICATION, MWL_FIND),
                calling: bytes = b"CONSOLE", syntax: bytes = IMPLICIT_LE) -> socket.socket:
    """A raw socket with an accepted association (A-ASSOCIATE-AC read)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(associate_rq(calling=calling, contexts=contexts, syntax=syntax))
    answer = read_pdu(sock)
    assert answer[:1] == b"\x02", f"no A-ASSOCIATE-AC: {answer[:10]!r}"
    return sock


def stream(sock: socket.socket, total: int, seconds: float) -> int:
    """Send up to ``total`` bytes of filler until the peer stops taking them, for
    at most ``seconds``; how many were sent."""
    chunk = b"\x00" * 65536
    sent = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(1.0)
    while sent < total and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except TimeoutError:
            continue  # the peer's window is full: it is not reading
        except OSError:  # reset or broken pipe: the peer closed
            break
    return sent


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``sock`` within ``seconds`` (pending bytes are read)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def c_find_rq(identifier: bytes, context_id: int = 3, max_pdu: int = 16384) -> bytes:
    """The P-DATA-TF PDUs of a C-FIND-RQ whose identifier is ``identifier`` as it is:
    pynetdicom's message classes build the command set, the bytes are ours."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_FIND_RQ
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.pdu import P_DATA_TF

    request = C_FIND()
    request.MessageID = 1
    request.AffectedSOPClassUID = MWL_FIND.decode()
    request.Priority = 2
    request.Identifier = BytesIO(identifier)
    message = C_FIND_RQ()
    message.primitive_to_message(request)
    out = b""
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return out


def responses(sock: socket.socket, timeout: float = 10.0) -> list[tuple[int, str]]:
    """(Status, Error Comment) of each DIMSE response up to the first final one."""
    from io import BytesIO

    from pydicom.filereader import read_dataset

    found: list[tuple[int, str]] = []
    command = b""
    while True:
        pdu = read_pdu(sock, timeout)
        if len(pdu) < 6:
            return found
        if pdu[0] != 0x04:
            raise AssertionError(f"PDU type 0x{pdu[0]:02X} instead of a response")
        at = 6
        while at < len(pdu):
            length, _, control = struct.unpack(">LBB", pdu[at:at + 6])
            fragment = pdu[at + 6:at + 4 + length]
            at += 4 + length
            if not control & 0x01:
                continue  # an answer's data set
            command += fragment
            if control & 0x02:
                ds = read_dataset(BytesIO(command), True, True)
                command = b""
                status = int(ds.Status)
                found.append((status, str(ds.get("ErrorComment", ""))))
                if status not in (0xFF00, 0xFF01):
                    return found


MPPS = b"1.2.840.10008.3.1.2.3.3"


def n_create_rq(attribute_list: bytes, instance_uid: str, context_id: int = 1,
                max_pdu: int = 16384) -> bytes:
    """The P-DATA-TF PDUs of an MPPS N-CREATE-RQ carrying ``attribute_list`` as it is."""
    from io import BytesIO

    from pynetdicom.dimse_messages import N_CREATE_RQ
    from pynetdicom.dimse_primitives import N_CREATE
    from pynetdicom.pdu import P_DATA_TF

    request = N_CREATE()
    request.MessageID = 1
    request.AffectedSOPClassUID = MPPS.decode()
    request.AffectedSOPInstanceUID = instance_uid
    request.AttributeList = BytesIO(attribute_list)
    message = N_CREATE_RQ()
    message.primitive_to_message(request)
    out = b""
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return out
