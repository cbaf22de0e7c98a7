"""What the routed mapping's groups say about each step: order control and field positions.

The mapping engine turns each group (ORC, or each IPC inside an ORC) into one
step. The lifecycle needs, per step, the ORC-1/ORC-5 of the order it belongs
to, and, for precise errors, the HL7 position a step's attribute came from
(``OBR^2^18`` for the second order's accession). Both are read here, from the
mapping's own groups and rules, so a site mapping that takes the accession
from ``IPC-1`` or ``ORC-3.1`` gets errors that point there.

This module is the one place that reads the mapping engine's compiled rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from bridge.hl7 import Message
from bridge.mapping import MappingSet
from bridge.mapping.engine import SPS_SEQUENCE_KEYWORD, AttributeRule, Mapping, StaticItems
from bridge.mapping.scope import Context, message_contexts


@dataclass(frozen=True, slots=True)
class OrderControl:
    """ORC-1 and ORC-5 of the order a step belongs to, and where that ORC is."""

    code: str  # ORC-1; "" when the group has no ORC
    status: str  # ORC-5
    orc_seq: int  # the ORC's ERL sequence number (1 when there is none)

    @property
    def location(self) -> str:
        return f"ORC^{self.orc_seq}^1"


def find_mapping(mappings: MappingSet, name: str) -> Mapping:
    for mapping in mappings.mappings:
        if mapping.name == name:
            return mapping
    raise KeyError(name)


class MappedGroups:
    """The contexts of a mapped message, one per step, and the rules that built the steps."""

    def __init__(self, mapping: Mapping, message: Message, steps: list[Dataset]) -> None:
        self.mapping = mapping
        whole, groups = message_contexts(message, mapping.group_by)
        self.contexts: list[Context] = groups or [whole]
        if len(self.contexts) != len(steps):  # Mapping.map builds one step per context
            raise ValueError(f"mapping {mapping.name} gave {len(steps)} steps for "
                             f"{len(self.contexts)} groups")

    def order_control(self, index: int) -> OrderControl:
        refs = self.contexts[index].scope.get("ORC")
        if not refs:
            return OrderControl("", "", 1)
        orc = refs[0]
        return OrderControl(orc.segment.value(1).strip().upper(),
                            orc.segment.value(5).strip().upper(), orc.seq)

    def _rule(self, keyword: str) -> AttributeRule | None:
        rule = self.mapping.record.find(keyword)
        if rule is not None:
            return rule
        sps = self.mapping.record.find(SPS_SEQUENCE_KEYWORD)
        if sps is not None and isinstance(sps.items, StaticItems) and sps.items.items:
            return sps.items.items[0].find(keyword)
        return None

    def locate(self, index: int, keyword: str) -> str:
        """The ERL of the HL7 field a step's attribute was mapped from ('' when unknown)."""
        rule = self._rule(keyword)
        if rule is None or rule.value is None:
            return ""
        ctx = self.contexts[index]
        _, hit = rule.value.produce(ctx, None, False)
        if hit is not None:
            return hit.location()
        return rule.primary.missing_location(ctx, None) if rule.primary is not None else ""

    def mapped_from_message(self, index: int, keyword: str) -> bool:
        """Whether the message itself gave the attribute's value (not a default,
        constant or derivation such as a derived Study Instance UID)."""
        rule = self._rule(keyword)
        if rule is None or rule.value is None:
            return False
        values, hit = rule.value.produce(self.contexts[index], None, False)
        return bool(values) and hit is not None
