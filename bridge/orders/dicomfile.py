"""A lean reader of little-endian DICOM files straight into the store's item JSON.

pydicom builds a DataElement per attribute and converts each value through its
hooks: about 0.65 ms for a typical worklist file, most of an import's time.
The worklist files of ``wlmscpfs`` and Orthanc are small, little endian and in
one character set, so this reader walks the bytes once and writes the
store's DICOM JSON (bridge/store/items.py ``dumps_item``) directly, with values
as pydicom would give them (text decoded and stripped the same way, numbers as
numbers, person names by component group).

It only takes what it is sure of: Explicit or Implicit VR Little Endian, one
Specific Character Set that is a plain Python codec, no undefined-length
element other than sequences and items. Anything else raises ``NotLean``, and
the caller reads the file with pydicom instead (bridge/orders/wlfile.py), which
also gives the precise error for a broken file. Tests check that both readers
store the same text for every file they can both read.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from pydicom.datadict import dictionary_VR

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_CHARSET_TAG = 0x00080005
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI", "UR"})
_ONE_VALUE_TEXT = frozenset({"LT", "ST", "UT"})  # no backslash splitting
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1",
           "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
           "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7",
           "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9", "ISO_IR 166": "iso8859_11",
           "ISO_IR 192": "utf_8", "GB18030": "gb18030", "GBK": "gbk"}
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
                   "SV": "q", "UV": "Q"}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")


class NotLean(Exception):
    """The file needs pydicom (another transfer syntax or charset, or it is broken:
    ``broken``, which pydicom may read past, e.g. a file cut short)."""

    def __init__(self, reason: str, *, broken: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.broken = broken


def read_item_json(data: bytes) -> dict[str, Any]:
    """The dataset of a DICOM file (Part 10, or a bare dataset in Explicit VR Little
    Endian) as store JSON, without Specific Character Set, file meta or group lengths."""
    pos, explicit = _dataset_start(data)
    reader = _Reader(data, explicit)
    out, end = reader.dataset(pos, len(data), top=True)
    if end != len(data):
        raise NotLean("trailing bytes", broken=True)
    return out


def _dataset_start(data: bytes) -> tuple[int, bool]:
    if data[128:132] != b"DICM":
        if data[:2] != b"\x08\x00":
            raise NotLean("no preamble")
        return 0, True
    pos = 132
    syntax = ""
    while pos + 8 <= len(data):
        group, element = _TAG.unpack_from(data, pos)
        if group != 2:
            break
        vr = data[pos + 4:pos + 6].decode("ascii", "replace")
        if vr in _LONG_VRS:
            length = _U32.unpack_from(data, pos + 8)[0]
            start = pos + 12
        else:
            length = _U16.unpack_from(data, pos + 6)[0]
            start = pos + 8
        if element == 0x0010:
            syntax = data[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    if pos > len(data) or 0 < len(data) - pos < 8:
        raise NotLean(f"cut short in the file meta information (byte {len(data)})",
                      broken=True)
    if syntax == EXPLICIT_LE:
        return pos, True
    if syntax == IMPLICIT_LE:
        return pos, False
    raise NotLean(f"transfer syntax {syntax or '(none)'}")


class _Reader:
    def __init__(self, data: bytes, explicit: bool) -> None:
        self.data = data
        self.explicit = explicit
        self.codec = "latin_1"

    def header(self, pos: int) -> tuple[int, str, int, int]:
        """(tag, VR, length, value start) of the element at ``pos``."""
        data = self.data
        if pos + 8 > len(data):
            raise NotLean(f"cut short at byte {pos} of {len(data)}", broken=True)
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        if tag in (_ITEM, _ITEM_END, _SEQ_END):
            return tag, "", _U32.unpack_from(data, pos + 4)[0], pos + 8
        if self.explicit:
            vr = data[pos + 4:pos + 6].decode("ascii", "replace")
            if vr in _LONG_VRS:
                return tag, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
            if not vr.isalpha() or not vr.isupper():
                raise NotLean("bad VR")
            return tag, vr, _U16.unpack_from(data, pos + 6)[0], pos + 8
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        if vr not in _ALL_VRS:  # "US or SS" and the like: pydicom decides those
            raise NotLean("ambiguous VR")
        return tag, vr, _U32.unpack_from(data, pos + 4)[0], pos + 8

    def dataset(self, pos: int, end: int, *, top: bool = False) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        while pos < end:
            tag, vr, length, start = self.header(pos)
            if tag == _ITEM_END:
                return out, start
            if tag in (_ITEM, _SEQ_END):
                raise NotLean("misplaced delimiter", broken=True)
            if vr == "SQ":
                value, pos = self.sequence(start, length)
                if tag & 0xFFFF:
                    out[f"{tag:08X}"] = {"vr": "SQ", "Value": value}
                continue
            if length == _UNDEFINED or start + length > end:
                raise NotLean("undefined or overlong length", broken=True)
            raw = self.data[start:start + length]
            pos = start + length
            if tag == _CHARSET_TAG:
                if not top:
                    raise NotLean("charset in an item")
                name = raw.decode("ascii", "replace").strip(" \0")
                if name not in _CODECS:
                    raise NotLean(f"character set {name}")
                self.codec = _CODECS[name]
                continue
            if not tag & 0xFFFF or tag >> 16 == 2:
                continue  # group lengths (and file meta in a bare dataset)
            out[f"{tag:08X}"] = self.value(vr, raw)
        return out, pos

    def sequence(self, pos: int, length: int) -> tuple[list[dict[str, Any]], int]:
        end = len(self.data) if length == _UNDEFINED else pos + length
        items: list[dict[str, Any]] = []
        while pos < end:
            tag, _, item_length, start = self.header(pos)
            if tag == _SEQ_END:
                if length != _UNDEFINED:
                    raise NotLean("sequence delimiter in a defined-length sequence", broken=True)
                return items, start
            if tag != _ITEM:
                raise NotLean("no item in a sequence", broken=True)
            if item_length == _UNDEFINED:
                item, pos = self.dataset(start, end)
            else:
                item, pos = self.dataset(start, start + item_length)
                if pos != start + item_length:
                    raise NotLean("item length", broken=True)
            items.append(item)
        if length == _UNDEFINED:
            raise NotLean("sequence without its delimiter", broken=True)
        return items, pos

    def value(self, vr: str, raw: bytes) -> dict[str, Any]:
        if vr in _BINARY_VRS:
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")} \
                if raw else {"vr": vr}
        if vr in _BINARY_NUMBERS:
            code = _BINARY_NUMBERS[vr]
            size = struct.calcsize(code)
            if not raw:
                return {"vr": vr}
            if len(raw) % size:
                raise NotLean("binary number length", broken=True)
            return {"vr": vr, "Value": list(struct.unpack(f"<{len(raw) // size}{code}", raw))}
        if vr == "AT":
            raise NotLean("AT")
        try:
            text = raw.decode(self.codec) if vr in _DECODED else raw.decode("latin_1")
        except UnicodeDecodeError:
            raise NotLean("undecodable text") from None
        if vr in _ONE_VALUE_TEXT:
            text = text.rstrip(" \0")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        parts = text.split("\\")
        if vr == "PN":
            names = [p.rstrip(" \0") for p in parts]
            if names == [""]:
                return {"vr": vr}
            return {"vr": vr, "Value": [_pn(n) for n in names]}
        if vr in ("IS", "DS"):
            numbers = [p.strip(" \0") for p in parts]
            if numbers == [""]:
                return {"vr": vr}
            if "" in numbers:
                raise NotLean("empty number")
            try:
                values: list[Any] = ([int(n) for n in numbers] if vr == "IS"
                                     else [float(n) for n in numbers])
            except ValueError:
                raise NotLean("not a number") from None
            return {"vr": vr, "Value": values}
        if vr not in _TEXT_VRS:
            raise NotLean(f"VR {vr}")
        values = [p.rstrip(" \0") for p in parts]
        if len(values) == 1:
            # pydicom strips leading spaces too where the VR has none of meaning.
            v = values[0].lstrip(" ") if vr in _LEADING else values[0]
            return {"vr": vr, "Value": [v]} if v else {"vr": vr}
        return {"vr": vr, "Value": [v.lstrip(" ") if vr in _LEADING else v for v in values]}


def _pn(name: str) -> dict[str, str]:
    return {k: v for k, v in zip(_PN_GROUPS, name.split("="), strict=False) if v}


_DECODED = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # the rest is ASCII
_LEADING = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_ALL_VRS = frozenset({*_LONG_VRS, *_TEXT_VRS, *_ONE_VALUE_TEXT, *_BINARY_NUMBERS, "PN", "IS",
                      "DS", "AT"})
