"""Fuzz the mapping engine (bridge/mapping/engine.py) with the shipped mappings.

Input: one HL7 message (UTF-8 when valid, else Latin-1), tokenized with
``parse_message``; text that does not tokenize is not this target's business.

Contract checked, for the mappings in mappings/ as the daemon loads them:
- ``MappingSet.map`` returns a result or raises MappingError. A MappingError
  with a ``__cause__`` is the engine's safety net catching a bug (the intake
  logs it as a "mapping fault"): that is a crash too, and the cause is re-raised;
- every mapped step answers what the order lifecycle asks of it (order
  control, group, ``locate``, ``from_message``), and its item can be stored
  (``dumps_item``, ``index_values`` of bridge/store/items.py);
- the patient attributes of each mapping, read as for an ADT update or merge
  (``Mapping.reader``, bridge/orders/patients.py), give a Dataset or MappingError.

    python fuzz/mapping_engine.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import REPO, Finding, hl7_text, instrumented, main

with instrumented(__name__):
    from bridge.hl7.message import HL7ParseError, parse_message
    from bridge.mapping import MappingError, load_mappings
    from bridge.mapping.scope import message_contexts
    from bridge.orders.patients import PATIENT_KEYWORDS
    from bridge.store.items import dumps_item, index_values

MAPPINGS = load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")
READERS = [m.reader(PATIENT_KEYWORDS) for m in MAPPINGS.mappings if "PatientID" in m.attributes]
LOCATED = ("AccessionNumber", "PatientID", "StudyInstanceUID", "ScheduledProcedureStepID")


def one_input(data: bytes) -> None:
    try:
        message = parse_message(hl7_text(data))
    except HL7ParseError:
        return
    try:
        result = MAPPINGS.map(message)
    except MappingError as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from exc  # an engine fault behind the safety net
        result = None
    if result is not None:
        for step in result.steps:
            _ = step.order_control, step.group, step.mapping
            for keyword in LOCATED:
                step.locate(keyword)
            step.from_message("StudyInstanceUID")
            text = dumps_item(step.item)
            if not text.startswith("{"):
                raise Finding("item-json", "dumps_item gave no JSON object")
            index_values(step.item)
    whole, _ = message_contexts(message)
    _, groups = message_contexts(message, ["PID"])
    for reader in READERS:
        for ctx in [whole, *groups]:
            try:
                reader.read(ctx)
            except MappingError:
                pass


if __name__ == "__main__":
    main(one_input, dictionary="hl7")
