"""Importing files of HL7 messages through the daemon's own intake.

Each message goes through ``Ingest.process`` (bridge/orders/ingest.py), as if
it had come over MLLP: decoding per MSH-18, the mapping, the order control
table, the patient and duplicate checks, the message log (a rejected message
is a dead letter there too, and ``mwl-bridge messages`` shows it), resends
answered with their first ACK. The caller gives an intake whose writer takes
many jobs per transaction (``replay_intake(..., max_batch=...)``), and this
module keeps many messages in flight so that the batches fill.

Order matters between messages about one patient (a new order, then its
change or cancel; an update of the patient): messages are put in lanes by
their Patient ID (PID-3), each lane applies its messages one after the other,
in file order, and the lanes run side by side. A merge or ID change (the
``orders.adt`` merge and change-ID events) names two patients: it waits until
every message before it is applied, and the ones after it wait for it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.hl7.batch import FileMessage, read_hl7_file
from bridge.orders.apply import Outcome
from bridge.orders.bulk import ImportReport, Rejected

Process = Callable[[bytes, str], Awaitable[Outcome]]
WINDOW = 4000  # messages read ahead of the writer

_MSH9 = re.compile(rb"^MSH(.)")


@dataclass(frozen=True, slots=True)
class _Queued:
    file: Path
    message: FileMessage


def _fields(segment: bytes, sep: bytes) -> list[bytes]:
    return segment.split(sep)


def _lane_and_event(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(PID-3's first ID, MSH-9.1, MSH-9.2), read from the bytes: cheap, and only for
    ordering (the intake reads the message properly)."""
    m = _MSH9.match(raw)
    if m is None:
        return b"", b"", b""
    sep = m.group(1)
    segments = raw.split(b"\r")
    msh = _fields(segments[0], sep)
    kind = msh[8] if len(msh) > 8 else b""
    comp = msh[1][:1] if len(msh) > 1 and msh[1] else b"^"
    code, _, event = kind.partition(comp)
    event = event.partition(comp)[0]
    for segment in segments[1:]:
        if segment.startswith(b"PID" + sep):
            pid = _fields(segment, sep)
            ident = pid[3] if len(pid) > 3 else b""
            return ident.split(comp, 1)[0].strip(), code, event
    return b"", code, event


async def import_hl7(files: Sequence[Path], process: Process, report: ImportReport, *,
                     barrier_events: Collection[str], max_bytes: int | None = None,
                     advance: Callable[[int], None] = lambda n: None) -> None:
    """Every message of every file, through ``process``; the outcomes in ``report``.
    A message over ``max_bytes`` (mllp.max_frame_bytes: what the listener would refuse)
    is rejected unread."""
    barriers = {e.encode("ascii", "replace") for e in barrier_events}
    window: list[_Queued] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        parsed = read_hl7_file(data)
        report.problems.extend(f"{path}: {p}" for p in parsed.problems)
        if not parsed.messages and not parsed.problems:
            report.problems.append(f"{path}: no HL7 message (no MSH segment) in the file")
        for message in parsed.messages:
            if message.problem:
                report.reject(Rejected(f"{path} message #{message.number}", "bad segment",
                                       f"{path} message #{message.number} (line "
                                       f"{message.line}): {message.problem}",
                                       message=message.number, raw=_text(message.raw)))
                advance(1)
                continue
            if max_bytes is not None and len(message.raw) > max_bytes:
                report.reject(Rejected(
                    f"{path} message #{message.number}", "message too large",
                    f"{path} message #{message.number} (line {message.line}): "
                    f"{len(message.raw)} bytes, more than mllp.max_frame_bytes "
                    f"({max_bytes}); not applied", message=message.number,
                    raw=_text(message.raw)))
                advance(1)
                continue
            queued = _Queued(path, message)
            if _lane_and_event(message.raw)[1:] in {(b"ADT", e) for e in barriers}:
                await _run(window, process, report, advance)
                window = []
                await _run([queued], process, report, advance)
                continue
            window.append(queued)
            if len(window) >= WINDOW:
                await _run(window, process, report, advance)
                window = []
    await _run(window, process, report, advance)


async def _run(window: list[_Queued], process: Process, report: ImportReport,
               advance: Callable[[int], None]) -> None:
    lanes: dict[bytes, list[_Queued]] = {}
    for q in window:
        lane = _lane_and_event(q.message.raw)[0]
        lanes.setdefault(lane, []).append(q)

    async def lane_run(queue: list[_Queued]) -> None:
        for q in queue:
            outcome = await process(q.message.raw, f"import {q.file.name}")
            _note(report, q, outcome)
            advance(1)

    await asyncio.gather(*(lane_run(queue) for queue in lanes.values()))


def _note(report: ImportReport, q: _Queued, outcome: Outcome) -> None:
    where = f"{q.file} message #{q.message.number}"
    if outcome.ack_code == "AA":
        if outcome.replayed:
            report.unchanged += 1
        else:
            report.loaded += 1
            report.flagged.update(outcome.flags)
        return
    r = outcome.rejection
    if r is not None:
        kind = r.log_text
        reason = (f"{where} (line {q.message.line}): {outcome.ack_code} {r.code}"
                  f"{' at ' + r.location if r.location else ''}: {r.text}")
    elif outcome.ack_code == "":
        kind, reason = "not HL7", f"{where} (line {q.message.line}): not HL7 (no readable MSH)"
    else:
        kind = outcome.summary
        reason = f"{where} (line {q.message.line}): {outcome.ack_code} {outcome.summary}"
    report.reject(Rejected(where, kind, reason, message=q.message.number,
                           raw=_text(q.message.raw)))


def _text(raw: bytes) -> str:
    # The dead letter keeps the message readable; undecodable bytes stay visible.
    return raw.decode("utf-8", "backslashreplace")
