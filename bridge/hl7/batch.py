"""Reading a file of HL7 messages, as sites export them for a migration.

Three layouts, also mixed in one file:

- an HL7 batch file: FHS, BHS, the messages, BTS, FTS (HL7 v2 section 2.10.3);
- MLLP frames, one message each (``0x0B`` message ``0x1C 0x0D``), as captured
  from a connection;
- plain segments, one per line, messages separated by blank lines or simply by
  the next MSH.

Every message comes back with its number in the file (1 for the first MSH),
the line it starts on and its bytes with CR segment ends, undecoded (the
intake decodes per MSH-18). A problem in the file (a line that is no segment,
a batch without its BTS, a BTS whose count disagrees) is reported with the
message number and line, and never stops the reading of the rest: a message
with a line that is no segment comes back with that problem instead of being
guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE_END = re.compile(rb"\r\n|\r|\n")
BOM = b"\xef\xbb\xbf"
# A segment: three letters or digits (the first a letter), then the field separator
# (any character MSH-1 chose; after MSH it is the message's own) or the line end.
_SEGMENT = re.compile(rb"[A-Z][A-Z0-9]{2}(?:[^A-Za-z0-9\s]|$)")
_SHOWN = 40  # bytes of a bad line quoted in its problem


@dataclass(frozen=True, slots=True)
class FileMessage:
    """One message of the file: ``problem`` set means it must not be applied."""

    number: int  # 1-based, counting every MSH in the file
    line: int  # the line of its MSH
    raw: bytes  # segments joined by CR, as found (undecoded)
    problem: str = ""


@dataclass(slots=True)
class HL7File:
    messages: list[FileMessage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # about the file, not one message


def _quote(line: bytes) -> str:
    text = line[:_SHOWN].decode("latin-1")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(shown + ("..." if len(line) > _SHOWN else ""))


def _count(line: bytes, sep: bytes) -> int | None:
    """BTS-1 or FTS-1: the count its sender wrote, None when absent or not a number."""
    parts = line.split(sep) if sep else []
    value = parts[1].strip() if len(parts) > 1 else b""
    return int(value) if value.isdigit() else None


class _Reader:
    def __init__(self) -> None:
        self.out = HL7File()
        self._segments: list[bytes] = []
        self._start = 0
        self._bad = ""
        self._number = 0
        self._batch_line = 0  # the BHS line of the open batch, 0 when none is open
        self._batch_first = 0  # the number the open batch's first message will get
        self._file_line = 0  # the FHS line of the open file envelope
        self._file_batches = 0

    def _flush(self) -> None:
        if self._segments:
            raw = b"\r".join(self._segments) + b"\r"
            self.out.messages.append(FileMessage(self._number, self._start, raw, self._bad))
        self._segments, self._bad = [], ""

    def _envelope(self, number: int, line: bytes) -> None:
        self._flush()
        kind = line[:3]
        sep = line[3:4]
        if kind == b"FHS":
            self._file_line, self._file_batches = number, 0
        elif kind == b"BHS":
            if self._batch_line:
                self.out.problems.append(
                    f"line {number}: BHS opens a batch while the batch of line "
                    f"{self._batch_line} has no BTS")
            self._batch_line, self._batch_first = number, self._number + 1
            self._file_batches += 1
        elif kind == b"BTS":
            if not self._batch_line:
                self.out.problems.append(f"line {number}: BTS without a BHS before it")
                return
            got = self._number - self._batch_first + 1
            said = _count(line, sep)
            if said is not None and said != got:
                self.out.problems.append(
                    f"line {number}: BTS-1 says the batch of line {self._batch_line} holds "
                    f"{said} message(s), the file has {got} (messages #{self._batch_first}"
                    f"-#{self._number}); a message may be missing")
            self._batch_line = 0
        elif kind == b"FTS":
            if self._batch_line:
                self._missing_bts(number)
            if not self._file_line:
                self.out.problems.append(f"line {number}: FTS without an FHS before it")
            self._file_line = 0

    def _missing_bts(self, where: int) -> None:
        last = self._number
        self.out.problems.append(
            f"the batch opened by BHS on line {self._batch_line} has no BTS "
            f"(before line {where}); the file may be cut short: its messages "
            f"#{self._batch_first}-#{last} were read")
        self._batch_line = 0

    def line(self, number: int, raw_line: bytes) -> None:
        line = raw_line.strip(b"\x0b\x1c")
        if not line.strip():
            self._flush()  # a blank line ends a message (plain segments layout)
            return
        if line[:3] in (b"FHS", b"BHS", b"BTS", b"FTS") and _SEGMENT.match(line):
            self._envelope(number, line)
            return
        if line.startswith(b"MSH"):
            self._flush()
            self._number += 1
            self._start = number
            self._segments = [line]
            return
        if not self._segments:
            self.out.problems.append(
                f"line {number}: {_quote(line)} is outside any message (no MSH before it "
                "in this block); skipped")
            return
        if not self._bad and not _SEGMENT.match(line):
            self._bad = (f"line {number} is not an HL7 segment: {_quote(line)}; the "
                         "message is not applied")
        self._segments.append(line)

    def finish(self, last_line: int) -> HL7File:
        self._flush()
        if self._batch_line:
            self._missing_bts(last_line + 1)
        if self._file_line:
            self.out.problems.append(
                f"the file envelope opened by FHS on line {self._file_line} has no FTS; "
                "the file may be cut short")
        return self.out


def read_hl7_file(data: bytes) -> HL7File:
    """The messages of a file and the problems found in its structure."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    reader = _Reader()
    number = 0
    for number, raw_line in enumerate(_LINE_END.split(data), start=1):
        reader.line(number, raw_line)
    return reader.finish(number)
