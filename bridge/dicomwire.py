"""Structural checks on an encoded DICOM data set, before pydicom reads it.

pydicom reads what it can and says nothing about the rest: a truncated
element comes back shorter, an element claiming 4 GB swallows what follows,
random bytes become an unknown element or two, trailing bytes vanish. A
C-FIND identifier read like that is a different query than the one sent
(often a universal one). ``check_data_set`` walks the encoding first and
refuses anything that is not a well-formed data set; what it accepts, pydicom
reads whole (values may still be bad: that is pydicom's and the caller's
business).

A deflated data set is inflated here with a bound (pynetdicom inflates
without one, so a few kilobytes could become gigabytes).

Checked, for every element at every level: the header is complete, the VR (if
explicit) is a VR, the value fits in what is left (of the data set, the
item, the sequence), undefined lengths only on sequences (or encapsulated
OB/OW and UN), every sequence is made of items, every undefined-length item
and sequence is delimited, sequences nest at most ``MAX_DEPTH`` deep. Errors
name tags, byte counts and offsets, never values, and are short enough for
an Error Comment (LO, 64 characters) after a short prefix. A base module: the worklist and the
MPPS SCP both use it.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.datadict import dictionary_VR

MAX_DEPTH = 16  # sequences within sequences; real identifiers and MPPS use 2 or 3

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_VRS = _LONG_VRS | frozenset({
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
    b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})


class MalformedDataSet(ValueError):
    """The bytes are not a well-formed data set; the message names no values."""

    def __init__(self, message: str, tag: int | None = None) -> None:
        super().__init__(message)
        self.tag = tag


def inflate(data: bytes, limit: int) -> bytes:
    """A Deflated Explicit VR Little Endian data set (raw deflate) inflated, at most
    ``limit`` bytes of it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise MalformedDataSet("deflated data that cannot be inflated") from None
    if len(out) > limit:
        raise MalformedDataSet(f"inflates to more than {limit} bytes")
    return out


def check_data_set(data: bytes, *, implicit_vr: bool, little_endian: bool,
                   deflated: bool = False, limit: int = 1 << 62) -> bytes:
    """Raise MalformedDataSet unless ``data`` is a well-formed data set in this
    transfer syntax; return its plain (inflated) encoding."""
    if deflated:
        data = inflate(data, limit)
        implicit_vr, little_endian = False, True
    elif len(data) > limit:
        raise MalformedDataSet(f"longer than {limit} bytes")
    _Walker(data, implicit_vr, "<" if little_endian else ">").elements(0, len(data), 0,
                                                                      in_item=False)
    return data


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    def __init__(self, data: bytes, implicit_vr: bool, order: str) -> None:
        self.data = data
        self.implicit = implicit_vr
        self.order = order

    def _tag_and_length(self, pos: int, end: int) -> tuple[int, int]:
        if end - pos < 8:
            raise MalformedDataSet(f"element header cut off at byte {pos}")
        group, element, length = struct.unpack_from(self.order + "HHL", self.data, pos)
        return group << 16 | element, length

    def elements(self, pos: int, end: int, depth: int, *, in_item: bool) -> int:
        """Walk the elements in ``[pos, end)``. In an undefined-length item
        (``in_item``) they end at its Item Delimitation Item; the position after
        it (or ``end``) is returned."""
        while pos < end:
            tag, length = self._tag_and_length(pos, end)
            if tag == _ITEM_END:
                if not in_item:
                    raise MalformedDataSet(f"stray Item Delimitation at byte {pos}")
                return pos + 8
            if tag in (_ITEM, _SEQUENCE_END):
                raise MalformedDataSet(f"{_tag_text(tag)} outside a sequence", tag)
            vr: bytes | None = None
            if self.implicit:
                pos += 8
            else:
                vr = self.data[pos + 4:pos + 6]
                if vr not in _VRS:
                    raise MalformedDataSet(f"{_tag_text(tag)} has no valid VR", tag)
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise MalformedDataSet(f"{_tag_text(tag)} header cut off", tag)
                    (length,) = struct.unpack_from(self.order + "L", self.data, pos + 8)
                    pos += 12
                else:
                    (length,) = struct.unpack_from(self.order + "H", self.data, pos + 6)
                    pos += 8
            pos = self._value(tag, vr, length, pos, end, depth)
        if in_item:
            raise MalformedDataSet("an item without its Item Delimitation")
        return pos

    def _value(self, tag: int, vr: bytes | None, length: int, pos: int, end: int,
               depth: int) -> int:
        if length == _UNDEFINED:
            if vr is None or vr in (b"SQ", b"UN"):
                # Implicit VR: only a sequence has an undefined length here. Explicit
                # UN of undefined length is a sequence in Implicit VR Little Endian
                # (PS3.5 6.2.2).
                walker = self if vr != b"UN" else _Walker(self.data, True, "<")
                return walker.items(tag, pos, end, depth + 1, defined=False)
            if vr in (b"OB", b"OW"):
                return self.items(tag, pos, end, depth + 1, defined=False, fragments=True)
            raise MalformedDataSet(f"{_tag_text(tag)} has an undefined length", tag)
        if length > end - pos:
            raise MalformedDataSet(f"{_tag_text(tag)} overruns by {length - (end - pos)} "
                                   f"bytes", tag)
        if vr == b"SQ" or (vr is None and _is_sequence(tag)):
            self.items(tag, pos, pos + length, depth + 1, defined=True)
        return pos + length

    def items(self, tag: int, pos: int, end: int, depth: int, *, defined: bool,
              fragments: bool = False) -> int:
        """The items of sequence ``tag``: up to ``end`` (defined length) or its
        Sequence Delimitation Item; the position after it."""
        if depth > MAX_DEPTH:
            raise MalformedDataSet(f"sequences nest over {MAX_DEPTH} deep", tag)
        while True:
            if defined and pos == end:
                return pos
            item_tag, length = self._tag_and_length(pos, end)
            pos += 8
            if item_tag == _SEQUENCE_END and not defined:
                return pos
            if item_tag != _ITEM:
                raise MalformedDataSet(f"{_tag_text(tag)} holds a non-item", tag)
            if length == _UNDEFINED and not fragments:
                pos = self.elements(pos, end, depth, in_item=True)
                continue
            if length > end - pos:
                raise MalformedDataSet(f"an item of {_tag_text(tag)} overruns by "
                                       f"{length - (end - pos)} bytes", tag)
            if not fragments:
                self.elements(pos, pos + length, depth, in_item=False)
            pos += length


def _is_sequence(tag: int) -> bool:
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:  # private or unknown: opaque bytes of a defined length
        return False
