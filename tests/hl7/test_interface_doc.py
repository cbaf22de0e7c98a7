"""docs/hl7-interface.md against the code: error codes, message types, allow-list refusals."""

from __future__ import annotations

from pathlib import Path

import yaml

import bridge.mapping.errors as mapping_errors
from bridge.hl7 import hl7_error_text
from bridge.hl7.access import UNKNOWN_KEY

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "hl7-interface.md"


def table(header_start: str) -> list[list[str]]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def module_codes(module: object) -> set[int]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, int)}


def test_error_code_table_names_every_code_the_bridge_sends():
    rows = table("| Code | Text | Sent when |")
    for code, text, _ in rows:
        assert hl7_error_text(int(code)) == text
    documented = {int(row[0]) for row in rows}
    sent = module_codes(mapping_errors) | {UNKNOWN_KEY}
    try:
        import bridge.orders.errors as order_errors
    except ImportError:  # the order rules live elsewhere in older trees
        pass
    else:
        sent |= module_codes(order_errors)
    assert sent <= documented


def test_message_type_table_lists_every_shipped_mapping():
    documented = {(row[0], row[2].strip("`")) for row in table("| Message | Versions")}
    for path in sorted((REPO / "mappings").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        types = doc["match"].get("message_type", [])
        for message_type in [types] if isinstance(types, str) else types:
            assert (message_type, doc["name"]) in documented, path.name


def test_allow_list_refusals_use_the_documented_code():
    rows = table("| Refusal | MSA-1 | ERR-3 | ERR-2 | ERR-8 |")
    assert {(r[1], int(r[2])) for r in rows} == {("AR", UNKNOWN_KEY)}
