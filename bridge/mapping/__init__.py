"""HL7 v2 order -> DICOM Modality Worklist records, driven by declarative mapping files.

    mappings = load_mappings([Path("mappings")], default_station_aet="UNASSIGNED")
    result = mappings.map(message)      # bridge.hl7.message.Message
    result.mapping, result.items        # routed mapping name, one Dataset per SPS
    for step in result.steps:           # the same items as MappedSteps, with provenance:
        step.item, step.order_control, step.locate("AccessionNumber")

``map`` is pure (no I/O) and raises MappingError for a message the mapping
rejects; ``load_mappings`` raises MappingLoadError listing every problem with
file, line and key. ``MappingReloader`` keeps the daemon's set current (SIGHUP,
file changes). The file format is described in docs/mapping.md.

The names are imported on first use, so that the CLI can register the
``mapping`` commands (bridge/app/cli/mapping.py) without loading pydicom and hl7apy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.mapping.engine import AttributeReader, MappingResult, MappingSet
    from bridge.mapping.errors import MappingError, MappingLoadError
    from bridge.mapping.loader import load_configured, load_mappings
    from bridge.mapping.provenance import MappedStep, OrderControl
    from bridge.mapping.reload import MappingReloader

_EXPORTS = {
    "AttributeReader": "bridge.mapping.engine",
    "MappedStep": "bridge.mapping.provenance",
    "MappingError": "bridge.mapping.errors",
    "MappingLoadError": "bridge.mapping.errors",
    "MappingReloader": "bridge.mapping.reload",
    "MappingResult": "bridge.mapping.engine",
    "MappingSet": "bridge.mapping.engine",
    "OrderControl": "bridge.mapping.provenance",
    "load_configured": "bridge.mapping.loader",
    "load_mappings": "bridge.mapping.loader",
}

__all__ = ["AttributeReader", "MappedStep", "MappingError", "MappingLoadError", "MappingReloader",
           "MappingResult", "MappingSet", "OrderControl", "load_configured", "load_mappings"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.mapping' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
