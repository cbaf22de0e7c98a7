"""Fuzz the ER7 tokenizer and the escape codec (bridge/hl7/message.py), with the
header reading and ACK building that answer every message (bridge/hl7/ack.py).

Input: the message text (UTF-8 when valid, else Latin-1).

Contract checked:
- ``parse_message`` either returns a Message or raises HL7ParseError, without
  limits and with small ``Limits`` (HL7LimitError is an HL7ParseError); a
  message within the limits parses the same either way;
- a parsed message answers every position: ``raw``, ``field`` and ``value`` of
  every field (and one past the last), its type, control ID and version;
- ``unescape`` never raises, whatever the delimiters;
- ``read_header`` never raises, and finds the MSH of every message that parses;
- an ACK (with an ERR) can be built for every header that reads, and parses
  back as an HL7 message echoing MSH-10 in MSA-2 (key ``ack-unparseable``,
  ``ack-msa``);
- ``escape`` leaves no delimiter, line break, VT or FS in a value, and
  ``unescape`` of it gives the value back, for distinct delimiters.

    python fuzz/er7_tokenizer.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import Finding, hl7_text, instrumented, main

with instrumented(__name__):
    from bridge.hl7.ack import ErrorDetail, build_ack, read_header
    from bridge.hl7.message import (
        Delimiters,
        HL7ParseError,
        Limits,
        Message,
        escape,
        parse_message,
        unescape,
    )

NOW = datetime(2026, 11, 28, 9, 49, 56)
ERROR = ErrorDetail(code=101, location="PID^1^3^1^1", text="PatientID is required | ^~\\&\n")
# The smallest limits the settings allow (mllp.max_*), so that fuzz inputs reach them.
LIMITS = Limits(segments=10, fields=64, repetitions=1, components=30)


def _parse(text: str, limits: Limits | None) -> Message | None:
    try:
        return parse_message(text, limits)
    except HL7ParseError:
        return None


def _walk(message: Message) -> None:
    for segment in message.segments:
        last = segment.field_count() + 1
        for position in range(0, last + 1):
            segment.raw(position)
            for repetition in segment.field(position):
                for component in repetition:
                    for sub in component:
                        if not isinstance(sub, str):
                            raise Finding("field-type", f"{segment.name}-{position} holds "
                                                        f"{type(sub).__name__}")
            segment.value(position)
            segment.value(position, 2, 2, 2)
    _ = message.message_type, message.control_id, message.version
    message.first("PID")
    message.all("OBR")


def _roundtrip(text: str, d: Delimiters) -> None:
    chars = (d.field, d.component, d.repetition, d.escape, d.subcomponent)
    if len(set(chars)) < len(chars) or any(c in "\r\n" for c in chars):
        return
    if "." in chars:
        # Known and left as it is: with "." as a delimiter, the line break escape
        # \.br\ holds a delimiter itself (fuzz/README.md, "Known limitations").
        return
    encoded = escape(text, d)
    left = [c for c in (d.field, d.component, d.repetition, d.subcomponent, "\r", "\n",
                        "\x0b", "\x1c") if c in encoded]
    if left:
        raise Finding("escape-left", f"escape left {left!r} in a value (delimiters {chars!r})")
    decoded = unescape(encoded, d)
    if decoded != text:
        raise Finding("escape-roundtrip",
                      f"unescape(escape(x)) != x with delimiters {chars!r}: "
                      f"{text[:80]!r} -> {encoded[:80]!r} -> {decoded[:80]!r}")


def one_input(data: bytes) -> None:
    text = hl7_text(data)
    message = _parse(text, None)
    limited = _parse(text, LIMITS)
    if limited is not None and (message is None or [s.raw_fields for s in message.segments]
                                != [s.raw_fields for s in limited.segments]):
        raise Finding("limits-differ", "parse_message with limits gave another message")
    header = read_header(text)
    if message is not None:
        if message.msh.name != "MSH":
            raise Finding("first-segment", f"a parsed message starts with {message.msh.name!r}")
        if header is None:
            raise Finding("header-missing", "read_header found no MSH in a message that parses")
        _walk(message)
    unescape(text, Delimiters())
    delimiters = [Delimiters()]
    if header is not None:
        delimiters.append(header.delimiters)
        unescape(text, header.delimiters)
        ack = build_ack(header, "AE", errors=[ERROR], text="rejected", control_id="ACK1",
                        now=NOW)
        try:
            answer = parse_message(ack)
        except HL7ParseError as exc:
            raise Finding("ack-unparseable",
                          f"our ACK does not parse: {exc}: {ack[:200]!r}") from exc
        msa = answer.first("MSA")
        if msa is None or msa.raw(2) != header.raw(10):
            raise Finding("ack-msa", f"the ACK's MSA-2 does not echo MSH-10: {ack[:200]!r}")
    for d in delimiters:
        _roundtrip(text, d)


if __name__ == "__main__":
    main(one_input, dictionary="hl7")
