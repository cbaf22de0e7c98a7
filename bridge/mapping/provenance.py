"""Where a mapped worklist item came from: its mapping, its group, the HL7 fields of its values.

The engine builds one item per group (each ORC, or each IPC inside an ORC). The
order lifecycle needs more than the item: the ORC-1/ORC-5 of the order it
belongs to, and for precise errors the HL7 position an attribute came from
(``OBR^2^18`` for the second order's accession, ``IPC^1^1`` when a site's
mapping takes it from there). A MappedStep answers both from the mapping's own
rules and the group context the engine built the item in, so nothing outside
bridge.mapping reads compiled rules or rebuilds groups, and a change inside the
engine stays inside it.

Provenance is worked out on demand, not while mapping: ingest maps about a
thousand messages a second, and asks where a value came from only for an error
or for one Study Instance UID check per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom import Dataset

from bridge.mapping.scope import Context


class StepSource(Protocol):
    """What a MappedStep asks of the mapping that made it (bridge.mapping.engine.Mapping;
    a protocol, so the engine imports this module and not the other way round)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def group_by(self) -> tuple[str, ...]: ...

    @property
    def event_control(self) -> tuple[tuple[str, str], ...]: ...

    def locate(self, context: Context, keyword: str) -> str: ...

    def from_message(self, context: Context, keyword: str) -> bool: ...


def group_label(context: Context, group_by: Sequence[str]) -> str:
    """A group as its segments' ERL names, outermost first: ``ORC^1 > IPC^2``."""
    scope = context.scope
    return " > ".join(f"{name}^{scope[name][0].seq}" for name in group_by if scope.get(name))


@dataclass(frozen=True, slots=True)
class OrderControl:
    """ORC-1 and ORC-5 of the order a step belongs to, and where that ORC is."""

    code: str  # ORC-1, upper case; "" when the group has no ORC
    status: str  # ORC-5, upper case
    orc_seq: int  # the ORC's ERL sequence number (1 when there is none)
    # Where the code came from when not from an ORC: the trigger event (MSH-9.2) of a
    # message without ORC, through its mapping's order_control (SIU^S15 -> CA).
    source: str = ""

    @property
    def location(self) -> str:
        return self.source or f"ORC^{self.orc_seq}^1"


class MappedStep:
    """One worklist item a mapping made, with what it was made from.

    ``item`` is the Dataset; ``context`` the group of the message it was built
    from. The other answers are computed when asked, from that same context.
    """

    __slots__ = ("_context", "_mapping", "item")

    def __init__(self, item: Dataset, mapping: StepSource, context: Context) -> None:
        self.item = item
        self._mapping = mapping
        self._context = context

    def __repr__(self) -> str:
        return f"MappedStep(mapping={self._mapping.name!r}, group={self.group!r})"

    @property
    def mapping(self) -> str:
        """The name of the mapping that made the item."""
        return self._mapping.name

    @property
    def mapping_path(self) -> Path:
        return self._mapping.path

    @property
    def context(self) -> Context:
        """The segments visible while the item was built (its group, or the whole message)."""
        return self._context

    @property
    def group(self) -> str:
        """The group, e.g. ``ORC^1 > IPC^2``; '' without ``group_by``."""
        return group_label(self._context, self._mapping.group_by)

    @property
    def order_control(self) -> OrderControl:
        """ORC-1/ORC-5 of the order the item belongs to: the first ORC in its scope."""
        refs = self._context.scope.get("ORC")
        if not refs:
            message = self._context.message
            event = message.msh.value(9, 2).strip().upper() if message is not None else ""
            control = dict(self._mapping.event_control).get(event)
            if control is None:
                return OrderControl("", "", 1)
            code, _, status = control.partition("/")
            return OrderControl(code, status, 1, source="MSH^1^9^1^2")
        orc = refs[0]
        return OrderControl(orc.segment.value(1).strip().upper(),
                            orc.segment.value(5).strip().upper(), orc.seq)

    def locate(self, keyword: str) -> str:
        """The ERL of the HL7 field the item's attribute was mapped from ('' when unknown).

        An attribute the message left empty points at where the mapping looks for
        it first, so a "missing" error names the field to fill in.
        """
        return self._mapping.locate(self._context, keyword)

    def from_message(self, keyword: str) -> bool:
        """Whether the message itself gave the attribute's value (not a default,
        constant or derivation such as a derived Study Instance UID)."""
        return self._mapping.from_message(self._context, keyword)
