"""Path and condition syntax: parsing, evaluation, ERL locations, and syntax errors."""

from __future__ import annotations

import pytest

from bridge.mapping.paths import PathSyntax, PathSyntaxError, Relative
from bridge.mapping.scope import Context, message_contexts

from .mapping_helpers import MSH, er7

MESSAGE = er7(
    MSH,
    "PID|1||111^^^OLD^PI~222^^^HOSP^MR~333^^^NHS^NH||DOE^JOHN||19750312|M",
    "PV1|1|O|||||||||||||B1~B6",
    "ORC|NW|P1",
    "OBR|1|P1||CT1^CT Head^L||||||||||||||ACC1|RP1",
    "OBX|1|NM|29463-7^Body weight^LN||81|kg",
    "OBX|2|NM|8302-2^Body height^LN||1.80|m",
    "ZDS|1.2.3^RIS^Application^DICOM",
    "ORC|NW|P2",
    "OBR|2|P2||MR1^MR Knee&left^L||||||||||||||ACC2|RP2",
)
SYNTAX = PathSyntax({"hosp": "HOSP", "unset": None})


def whole() -> Context:
    return message_contexts(MESSAGE)[0]


def groups() -> list[Context]:
    return message_contexts(MESSAGE, ["ORC"])[1]


def texts(path: str, ctx: Context | None = None, rel: Relative | None = None) -> list[str]:
    chain, _ = SYNTAX.chain(path, rel)
    ctx = ctx or whole()
    return [h.text() for p in chain.paths for h in p.hits(ctx, None)]


def first(path: str, ctx: Context | None = None) -> str:
    chain, _ = SYNTAX.chain(path)
    hit = chain.first_hit(ctx or whole(), None, structured=False)
    return hit.text() if hit else ""


@pytest.mark.parametrize(("path", "expected"), [
    ("PID-3", ["111"]),                 # no component: first component of the first repetition
    ("PID-3.1", ["111"]),
    ("PID-3.4", ["OLD"]),
    ("PID-3.4.1", ["OLD"]),
    ("PID-3[2].1", ["222"]),
    ("PID-3[*].1", ["111", "222", "333"]),
    ("PID-3[2..].1", ["222", "333"]),
    ("PID-3[1..2].1", ["111", "222"]),
    ("PID-3[where .4.1 = HOSP].1", ["222"]),
    ('PID-3[where .4.1 = "NHS"].1', ["333"]),
    ("PID-3[where .4.1 = $hosp].1", ["222"]),
    ("PID-3[where .4.1 != HOSP].1", ["111", "333"]),
    ("PID-3[where .4.1 in (OLD, NHS)].1", ["111", "333"]),
    ("PID-3[where .5 ~ '^N'].1", ["333"]),
    ("PID-3[4].1", []),
    ("PID-5.2", ["JOHN"]),
    ("MSH-9", ["ORM"]),
    ("MSH-9.2", ["O01"]),
    ("MSH-12", ["2.3.1"]),
    ("OBX-5", ["81"]),
    ("OBX(2)-5", ["1.80"]),
    ("OBX(*)-5", ["81", "1.80"]),
    ("OBX(where -3.1 = 8302-2)-5", ["1.80"]),
    ('OBX(where -3.2 = "Body weight")-6', ["kg"]),
    ("OBR(2)-4.2", ["MR Knee"]),
    ("OBR(2)-4.2.2", ["left"]),
    ("ZZZ-1", []),
    ("PV1-15[*]", ["B1", "B6"]),
])
def test_path_evaluation(path: str, expected: list[str]) -> None:
    assert texts(path) == expected


def test_where_with_an_unset_variable_matches_nothing() -> None:
    # An unset $variable (~ in the file) makes every comparison false, = and != alike.
    assert texts("PID-3[where .4.1 = $unset].1") == []
    assert texts("PID-3[where .4.1 != $unset].1") == []


def test_chain_takes_the_first_path_with_a_value() -> None:
    assert first("OBR-20 | OBR-19 | OBR-18") == "RP1"
    assert first("ZZZ-1 | PID-3[where .4.1 = NOPE].1 | PID-3.1") == "111"
    assert first("OBR-20 | OBR-21") == ""


def test_group_scope_keeps_group_segments_apart() -> None:
    g1, g2 = groups()
    assert first("OBR-18", g1) == "ACC1"
    assert first("OBR-18", g2) == "ACC2"
    # Patient-level segments resolve against the whole message from any group.
    assert first("PID-5", g2) == "DOE"
    # ZDS occurs in group 1 only: group 2 does not borrow it.
    assert first("ZDS-1.1", g1) == "1.2.3"
    assert first("ZDS-1.1", g2) == ""


def test_hits_give_erl_locations_with_absolute_segment_sequence() -> None:
    _, g2 = groups()
    chain, _ = SYNTAX.chain("OBR-18")
    hit = chain.first_hit(g2, None, structured=False)
    assert hit is not None
    assert hit.location() == "OBR^2^18"
    assert hit.label() == "OBR-18"
    chain, _ = SYNTAX.chain("PID-3[2].4.1")
    hit = chain.first_hit(whole(), None, structured=False)
    assert hit is not None
    assert hit.location() == "PID^1^3^2^4^1"
    assert hit.label() == "PID-3[2].4.1"


@pytest.mark.parametrize(("path", "location"), [
    ("PID-3.1", "PID^1^3^1^1"),
    ("PID-18", "PID^1^18"),
    ("PID-18[2]", "PID^1^18^2"),
    ("OBR-20.1.1", "OBR^1^20^1^1^1"),
    ("ZDS-2.1", "ZDS^1^2^1^1"),
    ("NTE-3", "NTE^1^3"),
])
def test_missing_location(path: str, location: str) -> None:
    chain, _ = SYNTAX.chain(path)
    assert chain.missing_location(whole(), None) == location


def test_missing_location_in_second_group_uses_that_groups_segment() -> None:
    _, g2 = groups()
    chain, _ = SYNTAX.chain("OBR-20")
    assert chain.missing_location(g2, None) == "OBR^2^20"


@pytest.mark.parametrize(("cond", "expected"), [
    ("ORC-1 = NW", True),
    ("ORC-1 = XO", False),
    ("ORC-1 != XO", True),
    ("OBR-18", True),                      # has a value
    ("OBR-20", False),
    ("not OBR-20", True),
    ("ORC-1 in (NW, XO)", True),
    ("PV1-15[*] = B6", True),               # any repetition
    ("PV1-15 = B6", False),                 # first repetition only
    ("ORC-1 = NW and OBR-18 = ACC1", True),
    ("ORC-1 = XO or OBR-18 = ACC1", True),
    ("not (ORC-1 = XO or OBR-18 = ACC2)", True),
    ("OBR-4.2 ~ '^CT'", True),
    ("OBR-18 = OBR-19", False),             # two paths compared
    ("ZDS-1.1 = ''", False),
    ("OBR-20 = ''", True),                  # an empty field equals the empty string
    ("ORC-1 = $unset", False),
    ("ORC-1 in (XO, $unset, NW)", True),    # an unset variable in a list is skipped
    ("MSH-3 = RIS", True),                  # a bare word that looks like a segment id
])
def test_conditions(cond: str, expected: bool) -> None:
    parsed, _ = SYNTAX.condition(cond)
    assert parsed.test(whole(), None) is expected


@pytest.mark.parametrize(("spec", "expected"), [
    ({"ORC-1": "NW"}, True),
    ({"ORC-1": ["XO", "NW"]}, True),
    ({"ORC-1": "NW", "OBR-24": "CT"}, False),  # all must hold
    ({"OBR-20": False}, True),
    ({"OBR-18": True}, True),
    ({"PID-8": "$hosp"}, False),
])
def test_condition_mappings(spec: dict[str, object], expected: bool) -> None:
    parsed, _ = SYNTAX.condition(spec)
    assert parsed.test(whole(), None) is expected


def test_refs_record_positions_for_structure_checks() -> None:
    _, refs = SYNTAX.chain("PID-3[where .4.1 = X].1 | OBX(where -3.1 = Y)-5")
    assert [(r.segment, r.field, r.component, r.subcomponent) for r in refs] == [
        ("PID", 3, 4, 1), ("PID", 3, 1, 0), ("OBX", 3, 1, 0), ("OBX", 5, 0, 0)]


def test_relative_paths_need_a_context() -> None:
    _, refs = SYNTAX.chain(".4.1", Relative("rep", "PID", 3))
    assert refs[0].segment == "PID" and refs[0].field == 3
    with pytest.raises(PathSyntaxError, match="relative to a repetition"):
        SYNTAX.chain(".4.1")
    with pytest.raises(PathSyntaxError, match="relative to a segment"):
        SYNTAX.chain("-5.1")


def test_iterable_accepts_segments_and_fields_not_components() -> None:
    path, _ = SYNTAX.iterable("OBX(*)")
    assert path.field == 0
    path, _ = SYNTAX.iterable("PID-3[2..]")
    assert path.multi
    with pytest.raises(PathSyntaxError, match="not a component"):
        SYNTAX.iterable("PID-3.1")


@pytest.mark.parametrize(("text", "problem", "column"), [
    ("pid-3", "expected a field path", 1),
    ("PID3", "expected a field path", 1),
    ("PID-", "expected a field number", 5),
    ("PID-0", "field number starts at 1", 5),
    ("PID-3.", "unexpected '.'", 6),
    ("PID-3[", "expected a position", 7),
    ("PID-3[2", "expected ']'", 8),
    ("PID-3[3..2]", "range ends before it starts", 11),
    ("PID-3[where]", "expected a field path, a value", 12),
    ("PID-3[where .4.1 = ]", "expected a field path, a value", 20),
    ("PID-3[where .4.1 ~ PV1-2]", "takes a regular expression in quotes", 20),
    ("PID-3[where .4.1 ~ '(']", "bad regular expression", 20),
    ("PID-3 |", "expected a field path", 8),
    ("PID-3 PV1-2", "unexpected 'P'", 7),
    ("$hosp", "a variable is a value, not a path", 1),
    ("PID-3[where .4.1 = $nope]", "unknown variable $nope", 20),
    ("OBX(where -3.1 = 'x)-5", "unterminated quoted string", 18),
])
def test_syntax_errors_name_problem_and_column(text: str, problem: str, column: int) -> None:
    with pytest.raises(PathSyntaxError) as info:
        SYNTAX.chain(text)
    assert problem in info.value.problem
    assert info.value.column == column


@pytest.mark.parametrize(("text", "problem"), [
    ("ORC-1 =", "expected a field path, a value"),
    ("NW", "a value alone is not a condition"),
    ("ORC-1 in NW", "expected '(' and a list"),
    ("ORC-1 in (NW", "expected ')' after the list"),
    ("(ORC-1 = NW", "expected ')'"),
    ("ORC-1 = NW and", "expected a field path, a value"),
])
def test_condition_syntax_errors(text: str, problem: str) -> None:
    with pytest.raises(PathSyntaxError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        SYNTAX.condition(text)


# -- segments that belong to another: NTE(after OBR) -----------------------------------

NOTES = er7(
    MSH,
    "PID|1||P1",
    "PD1|",
    "NTE|1||patient note 1",
    "NTE|2||patient note 2",
    "PV1|1|O",
    "ORC|NW|1",
    "OBR|1|1",
    "NTE|1||order 1 note",
    "OBX|1|NM|x||5",
    "NTE|1||result note",
    "ORC|NW|2",
    "OBR|2|2",
    "NTE|1||order 2 note",
)


def note_texts(path: str) -> list[list[str]]:
    """The values of a path in the whole message, then in each ORC group."""
    chain, _ = SYNTAX.chain(path)
    whole_ctx, group_ctxs = message_contexts(NOTES, ["ORC"])
    return [[h.text() for h in chain.paths[0].hits(ctx, None)] for ctx in [whole_ctx, *group_ctxs]]


def test_after_selects_the_segments_that_follow_a_segment_type() -> None:
    # The NTEs after PID belong to the patient: every item sees them, though other NTEs
    # sit inside the order groups. PD1 may come between PID and its NTEs.
    assert note_texts("NTE(after PID, PD1)-3") == [["patient note 1", "patient note 2"]] * 3
    assert note_texts("NTE(after PID)-3") == [[], [], []]
    # The NTEs after an OBR belong to that order only; those after an OBX do not count.
    assert note_texts("NTE(after OBR)-3") == [["order 1 note", "order 2 note"],
                                              ["order 1 note"], ["order 2 note"]]
    assert note_texts("NTE(after OBX)-3") == [["result note"], ["result note"], []]
    # Without the selector, an NTE path reads the group's NTEs, whatever they follow.
    assert note_texts("NTE(*)-3")[1] == ["order 1 note", "result note"]


def test_after_records_its_segments_for_structure_checks() -> None:
    _, refs = SYNTAX.chain("NTE(after PID, PD1)-3")
    assert [(r.segment, r.field) for r in refs] == [("PID", 0), ("PD1", 0), ("NTE", 3)]


@pytest.mark.parametrize(("text", "problem", "column"), [
    ("NTE(after)-3", "expected a segment id", 10),
    ("NTE(after obr)-3", "expected a segment id", 11),
    ("NTE(after OBR,)-3", "expected a segment id", 15),
    ("NTE(after OBRX)-3", "expected a segment id", 11),
    ("PID-3[after PID]", "expected a position", 7),
])
def test_after_syntax_errors(text: str, problem: str, column: int) -> None:
    with pytest.raises(PathSyntaxError) as info:
        SYNTAX.chain(text)
    assert problem in info.value.problem
    assert info.value.column == column
