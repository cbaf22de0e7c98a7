"""C-FIND answers assembled from elements encoded once.

``shape_answer`` (answer.py) builds each answer as a pydicom Dataset, which
pynetdicom then encodes element by element: about 0.4 ms an answer, as much
again to decode the stored JSON. Consoles ask the same questions all day (the
same keys, about the same items), so here each stored item's elements are
encoded once per transfer syntax and character set and kept, keyed by the
item's stored text (a changed item has another text, so nothing stale is
served). An answer is then the concatenation, in tag order, of its keys'
bytes and of the Specific Character Set element.

What an identifier shapes specially is encoded by pydicom, through answer.py's
own shaping, and kept too: an empty (universal) key where the item has no
value, a sequence key (with sub-keys or empty), the character set element.
Every element is written by pydicom's ``write_dataset`` with the character set
the whole answer would carry, so the bytes are those pynetdicom would write
for ``shape_answer``'s Dataset (tests/worklist/test_encoded_answers.py
compares both on every fixture). Items an answer's set cannot hold go through
``shape_answer`` itself, so the unencodable policies and their warnings are
unchanged; so do deflated transfer syntaxes.

How the bytes reach the peer is ``send_identifier``: pynetdicom only takes a
Dataset to encode (``encode()`` in its C-FIND provider), so the pending
responses are sent from the handler as P-DATA, the command set encoded by
pynetdicom once per request (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from io import BytesIO
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, DimsePrimitiveType
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from bridge.store.items import StoredItem
from bridge.worklist.answer import (
    _empty,
    _multi,
    _shape,
    _unencodable,
    python_codecs,
    shape_answer,
)
from bridge.worklist.query import SPECIFIC_CHARACTER_SET, KeyUse, key_use

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["AnswerCache", "EncodedAnswer", "ResponseSender", "TemplateDIMSE", "answer_shape",
           "command_set"]

# Items whose encoded elements are kept: several days of a large site's worklist
# (20 stations x ~17 items a day is ~340), at ~1.8 KB an item for a 13-key answer
# in one syntax and set: ~7 MB when full.
CACHED_ITEMS = 4096


class EncodedAnswer:
    """One C-FIND answer's identifier, already encoded for its context."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# --- an identifier's shape: what of it decides the answer's bytes ---

# An answer depends on the identifier's keys (tags, VRs, sequence items), never on
# their values: _Key is one top-level key, with what its bytes are cached under.
_Key = tuple[int, DataElement, Hashable]


def answer_shape(identifier: Dataset) -> tuple[_Key, ...]:
    """The return keys of ``identifier``, in tag order, each with its cache key."""
    keys = []
    for elem in identifier:
        if key_use(elem) is KeyUse.KEY:
            keys.append((int(elem.tag), elem, _signature(elem)))
    return tuple(keys)


def _signature(elem: DataElement) -> Hashable:
    if elem.VR != "SQ":
        return (int(elem.tag), str(elem.VR))
    items = elem.value
    if not items or len(items[0]) == 0:
        return (int(elem.tag), "SQ", None)
    return (int(elem.tag), "SQ", tuple(_signature(e) for e in items[0]))


class _Parts:
    """One stored item's encoded elements: (syntax, set, signature) -> bytes, or
    None where the set cannot hold the element's text."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[Hashable, bytes | None] = {}


class AnswerCache:
    """Encoded elements of recently answered items; shared by all associations."""

    def __init__(self, capacity: int = CACHED_ITEMS) -> None:
        self._capacity = capacity
        self._items: OrderedDict[bytes, _Parts] = OrderedDict()
        self._lock = threading.Lock()
        # Encodings of an empty key, the same for every item.
        self._empty: dict[Hashable, bytes] = {}

    def __len__(self) -> int:
        return len(self._items)

    def answer(self, stored: StoredItem, identifier: Dataset, shape: tuple[_Key, ...],
               character_set: str, unencodable: str, implicit_vr: bool,
               little_endian: bool) -> EncodedAnswer | Dataset:
        """The answer to ``identifier`` (whose ``answer_shape`` is ``shape``) from
        ``stored``: encoded bytes, or ``shape_answer``'s Dataset when the item holds
        text ``character_set`` can't (its policy then decides, and logs)."""
        parts = self._parts(_key(stored.text))
        syntax = (implicit_vr, little_endian, character_set)
        charset_value = _multi(character_set)
        codecs: tuple[str, ...] | None = None
        pieces: list[tuple[int, bytes]] = []
        for tag, key, signature in shape:
            cache_key = (syntax, signature)
            encoded = parts.parts.get(cache_key, b"")
            if encoded == b"":
                item = stored.dataset
                if tag not in item:
                    encoded = self._empty_key(key, implicit_vr, little_endian)
                else:
                    request = Dataset()
                    request.add(key)
                    shaped = _shape(item, request)
                    if codecs is None:
                        codecs = python_codecs(character_set)
                    encoded = None if _unencodable(shaped, codecs) is not None else _write(
                        shaped, implicit_vr, little_endian, charset_value)
                parts.parts[cache_key] = encoded
            if encoded is None:
                return shape_answer(stored.dataset, identifier, character_set, unencodable)
            pieces.append((tag, encoded))
        pieces.append((int(SPECIFIC_CHARACTER_SET),
                       self._charset(character_set, implicit_vr, little_endian)))
        pieces.sort(key=_first)
        return EncodedAnswer(b"".join(p for _, p in pieces))

    def _parts(self, key: bytes) -> _Parts:
        with self._lock:
            parts = self._items.get(key)
            if parts is not None:
                self._items.move_to_end(key)
                return parts
            parts = self._items[key] = _Parts()
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)
            return parts

    def _empty_key(self, key: DataElement, implicit_vr: bool, little_endian: bool) -> bytes:
        cache_key = (implicit_vr, little_endian, int(key.tag), str(key.VR))
        encoded = self._empty.get(cache_key)
        if encoded is None:
            shaped = Dataset()
            shaped.add(_empty(key.tag, key))
            # An empty value has no text: the character set cannot change its bytes.
            encoded = self._empty[cache_key] = _write(shaped, implicit_vr, little_endian, "")
        return encoded

    def _charset(self, character_set: str, implicit_vr: bool, little_endian: bool) -> bytes:
        cache_key = (implicit_vr, little_endian, "charset", character_set)
        encoded = self._empty.get(cache_key)
        if encoded is None:
            shaped = Dataset()
            shaped.add(DataElement(SPECIFIC_CHARACTER_SET, "CS", _multi(character_set)))
            encoded = self._empty[cache_key] = _write(shaped, implicit_vr, little_endian, "")
        return encoded


def _key(text: str) -> bytes:
    # A digest (a few µs) rather than the text: the cache need not keep each item's
    # ~1.5 KB of JSON besides its encoded elements.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _first(piece: tuple[int, bytes]) -> int:
    return piece[0]


def _write(ds: Dataset, implicit_vr: bool, little_endian: bool,
           charset_value: str | list[str]) -> bytes:
    """``ds`` encoded as pynetdicom's ``encode`` would inside a whole answer whose
    Specific Character Set is ``charset_value`` (pydicom's parent encoding)."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = little_endian
    write_dataset(fp, ds, charset_value or "iso8859")
    return fp.getvalue()


class ResponseSender:
    """Sends one C-FIND request's pending responses with pre-encoded identifiers.

    pynetdicom would encode a Dataset per response, and build and encode the
    command set (a pydicom Dataset too) for each. Here each response is one
    P-DATA-TF PDU holding the command PDV (``command_set``) and the data set PDV
    (PS3.8 9.3.5 lets one PDU carry several PDVs), or more PDUs when the peer's
    maximum PDU length asks for fragments (as pynetdicom's ``encode_msg`` splits
    them).
    """

    def __init__(self, assoc: Association, request: C_FIND, context_id: int) -> None:
        self._assoc = assoc
        self._request = request
        self._context_id = context_id

    def send(self, status: int, answer: EncodedAnswer) -> None:
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = self._request.MessageID
        rsp.AffectedSOPClassUID = self._request.AffectedSOPClassUID
        rsp.Status = status
        command = command_set(rsp, True)
        for pdata in _pdata(self._context_id, command, answer.data,
                            int(self._assoc.dimse.maximum_pdu_size or 0)):
            self._assoc.dul.send_pdu(pdata)


# (0000,0120) Message ID Being Responded To, implicit VR LE, length 2: its value follows.
_RESPONDED_TO = b"\x00\x00\x20\x01\x02\x00\x00\x00"
_templates: dict[Hashable, tuple[bytes, bytes]] = {}


def command_set(rsp: C_ECHO | C_FIND, has_data: bool) -> bytes:
    """The encoded command set of a C-ECHO or C-FIND response without error
    fields, as pynetdicom encodes it: made by pynetdicom once per SOP Class,
    status and data set presence, then only the Message ID Being Responded To
    changes (two bytes)."""
    key = (type(rsp), str(rsp.AffectedSOPClassUID), rsp.Status, has_data)
    template = _templates.get(key)
    if template is None:
        template = _templates[key] = _template(rsp, has_data)
    head, tail = template
    return head + struct.pack("<H", rsp.MessageIDBeingRespondedTo) + tail


def _template(rsp: C_ECHO | C_FIND, has_data: bool) -> tuple[bytes, bytes]:
    copy: C_ECHO | C_FIND = type(rsp)()
    copy.MessageIDBeingRespondedTo = 0
    copy.AffectedSOPClassUID = rsp.AffectedSOPClassUID
    copy.Status = rsp.Status
    msg: C_ECHO_RSP | C_FIND_RSP
    if isinstance(copy, C_FIND):
        if has_data:
            copy.Identifier = BytesIO(b"\0")  # only says that a data set follows
        msg = C_FIND_RSP()
    else:
        msg = C_ECHO_RSP()
    msg.primitive_to_message(copy)
    encoded = encode(msg.command_set, True, True)
    at = encoded.find(_RESPONDED_TO + b"\x00\x00") if encoded else -1
    if encoded is None or at < 0 or encoded.count(_RESPONDED_TO) != 1:
        raise ValueError("a response command set that cannot be templated")
    at += len(_RESPONDED_TO)
    return encoded[:at], encoded[at + 2:]


class TemplateDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending plain C-ECHO and C-FIND responses with
    their command set from ``command_set``.

    pynetdicom builds each response's command set as a pydicom Dataset and encodes
    it twice (once for the group length): most of a C-ECHO's time in the SCP.
    Responses with error fields, and every response while something is bound to
    EVT_DIMSE_SENT (pynetdicom's debug logging), go the usual way.
    """

    def send_msg(self, primitive: DimsePrimitiveType, context_id: int) -> None:
        if (isinstance(primitive, C_ECHO | C_FIND)
                and primitive.MessageIDBeingRespondedTo is not None
                and primitive.ErrorComment is None
                and getattr(primitive, "OffendingElement", None) is None
                and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            data = primitive.Identifier if isinstance(primitive, C_FIND) else None
            encoded = data.getvalue() if data is not None else b""
            command = command_set(primitive, bool(encoded))
            for pdata in _pdata(context_id, command, encoded or None,
                                int(self.maximum_pdu_size or 0)):
                self.dul.send_pdu(pdata)
            return
        super().send_msg(primitive, context_id)


def _pdata(context_id: int, command: bytes, data: bytes | None, max_pdu: int
           ) -> Iterator[P_DATA]:
    """The P-DATA primitives of one message: command then data set fragments."""
    size = len(command) + 6 + (len(data) + 6 if data is not None else 0)
    if max_pdu == 0 or size <= max_pdu:
        pdata = P_DATA()
        # Appended, as pynetdicom's encode_msg does (its setter wants lists).
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        if data is not None:
            pdata.presentation_data_value_list.append((context_id, b"\x02" + data))
        yield pdata
        return
    parts = [(b"\x01", b"\x03", command)]
    if data is not None:
        parts.append((b"\x00", b"\x02", data))
    for control, last, payload in parts:
        step = max_pdu - 6
        chunks = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for n, chunk in enumerate(chunks):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(
                (context_id, (last if n == len(chunks) - 1 else control) + chunk))
            yield pdata
