"""The structural limits of ``parse_message`` (``mllp.max_segments``, ``max_fields``,
``max_repetitions``, ``max_components``) at their boundaries: exactly the limit is
accepted and one more is refused, with the exact text, ERL location and code the ACK
carries (docs/hl7-interface.md, section 6). MSH is counted as HL7 numbers it: MSH-1
(the separator) is a field, MSH-2 (the encoding characters, each delimiter once as
data) is never counted as repetitions or components. ``components`` bounds both the
components of a repetition and the sub-components of a component.

The line-wide delimiter counts only decide whether a line needs a closer look, so the
cases below put enough delimiters in the whole line to get past that first count and
test the per-field, per-repetition and per-component counts themselves.
"""

from __future__ import annotations

import pytest

from bridge.hl7.message import HL7LimitError, Limits, parse_message

MSH = "MSH|^~\\&|RIS"
LIMITS = Limits(segments=10, fields=5, repetitions=2, components=3)
ONE_REPETITION = Limits(segments=10, fields=40, repetitions=1, components=3)
FIELDS = "(mllp.max_fields)"
REPETITIONS = "(mllp.max_repetitions)"
COMPONENTS = "(mllp.max_components)"


def refused(text: str, limits: Limits = LIMITS) -> tuple[str, str, int]:
    """(text, location, code) of the HL7LimitError that parsing ``text`` raises."""
    with pytest.raises(HL7LimitError) as caught:
        parse_message(text, limits)
    return str(caught.value), caught.value.location, caught.value.code


# ---- segments --------------------------------------------------------------------

def test_exactly_max_segments_lines_are_accepted() -> None:
    message = parse_message(f"{MSH}\rPID|1\rPV1|1\r", Limits(3, 40, 10, 10))
    assert [seg.name for seg in message.segments] == ["MSH", "PID", "PV1"]


@pytest.mark.parametrize(("text", "location"), [
    # the first segment of its kind over the limit is number 1 of that kind
    (f"{MSH}\rPID|1\rPV1|1\r", "PV1^1"),
    # a kind seen before: the next number of that kind
    (f"{MSH}\rNTE|1\rNTE|2\r", "NTE^2"),
    # a white-space line costs a turn too, but names no segment
    (f"{MSH}\rPID|1\r  \r", ""),
    # nor does a line whose id is no segment id
    (f"{MSH}\rPID|1\rpv1|1\r", ""),
], ids=["new-kind", "repeated-kind", "white-space-line", "bad-id"])
def test_one_line_over_max_segments_is_refused_at_that_segment(
        text: str, location: str) -> None:
    assert refused(text, Limits(2, 40, 10, 10)) == (
        "the message has more than 2 segments (mllp.max_segments)", location, 100)


# ---- fields ----------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"{MSH}\rPID|1|2|3|4|5\r",
    "MSH|^~\\&|3|4|5\r",          # MSH-1 .. MSH-5: five fields with four separators
    f"{MSH}\rPID|1|2|3|4|5\rPID|1|2|3|4|5\r",
], ids=["pid", "msh", "two-pids"])
def test_exactly_max_fields_are_accepted(text: str) -> None:
    message = parse_message(text, LIMITS)
    assert message.segments[-1].field_count() == 5


@pytest.mark.parametrize(("text", "name", "location"), [
    (f"{MSH}\rPID|1|2|3|4|5|6\r", "PID", "PID^1^6"),
    ("MSH|^~\\&|3|4|5|6\r", "MSH", "MSH^1^6"),
    (f"{MSH}\rPID|1\rPID|1|2|3|4|5|6\r", "PID", "PID^2^6"),
], ids=["pid", "msh", "second-pid"])
def test_one_field_over_max_fields_is_refused_at_the_first_field_too_many(
        text: str, name: str, location: str) -> None:
    assert refused(text) == (
        f"segment {name} has 6 fields; at most 5 are accepted {FIELDS}", location, 102)


# ---- repetitions -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "limits", "last"), [
    (f"{MSH}\rPID|a~b|c~d\r", LIMITS, "c~d"),
    ("MSH|^~\\&|a~b|c~d\r", LIMITS, "c~d"),
    # MSH-2 holds the repetition character once, as data: it is no second repetition
    ("MSH|^~\\&|RIS|HOSP\r", ONE_REPETITION, "HOSP"),
], ids=["pid", "msh", "msh2-is-not-counted"])
def test_exactly_max_repetitions_are_accepted(text: str, limits: Limits, last: str) -> None:
    assert parse_message(text, limits).segments[-1].raw_fields[-1] == last


@pytest.mark.parametrize(("text", "limits", "expected"), [
    (f"{MSH}\rPID|a~b~c\r", LIMITS,
     (f"PID-1 has 3 repetitions; at most 2 are accepted {REPETITIONS}", "PID^1^1", 102)),
    (f"{MSH}\rPID|1|a~b|c~d~e\r", LIMITS,
     (f"PID-3 has 3 repetitions; at most 2 are accepted {REPETITIONS}", "PID^1^3", 102)),
    ("MSH|^~\\&|a~b~c\r", LIMITS,
     (f"MSH-3 has 3 repetitions; at most 2 are accepted {REPETITIONS}", "MSH^1^3", 102)),
    ("MSH|^~\\&|RIS|a~b\r", ONE_REPETITION,
     (f"MSH-4 has 2 repetitions; at most 1 are accepted {REPETITIONS}", "MSH^1^4", 102)),
], ids=["pid-1", "pid-3", "msh-3", "msh-4"])
def test_one_repetition_over_max_repetitions_is_refused_at_the_field(
        text: str, limits: Limits, expected: tuple[str, str, int]) -> None:
    assert refused(text, limits) == expected


# ---- components and sub-components -----------------------------------------------

@pytest.mark.parametrize("text", [
    f"{MSH}\rPID|1|a^b^c~d^e^f\r",      # 3 components in each repetition
    f"{MSH}\rPID|1|a&b&c^d&e&f\r",      # 3 sub-components in each component
    f"{MSH}\rPID|1|a&b&c~d&e&f\r",      # ... in each repetition's only component
    "MSH|^~\\&|a^b^c|d&e&f\r",          # MSH-2's ^ and & are not counted
], ids=["components", "sub-components", "sub-components-per-repetition", "msh"])
def test_exactly_max_components_and_sub_components_are_accepted(text: str) -> None:
    assert parse_message(text, LIMITS).segments[-1].name in {"PID", "MSH"}


@pytest.mark.parametrize(("text", "expected"), [
    (f"{MSH}\rPID|1|a~b^c^d^e\r",
     (f"PID-2 (repetition 2) has 4 components; at most 3 are accepted {COMPONENTS}",
      "PID^1^2^2", 102)),
    ("MSH|^~\\&|RIS|a^b^c^d\r",
     (f"MSH-4 (repetition 1) has 4 components; at most 3 are accepted {COMPONENTS}",
      "MSH^1^4^1", 102)),
    # the first repetition has no sub-components at all: the second is still counted
    (f"{MSH}\rPID|1|a~b&c&d&e\r",
     (f"PID-2.1 (repetition 2) has 4 sub-components; at most 3 are accepted {COMPONENTS}",
      "PID^1^2^2^1", 102)),
    # the component is named by its number, not the first one of the repetition
    (f"{MSH}\rPID|1|x^a&b&c&d\r",
     (f"PID-2.2 (repetition 1) has 4 sub-components; at most 3 are accepted {COMPONENTS}",
      "PID^1^2^1^2", 102)),
    ("MSH|^~\\&|RIS|x^y^a&b&c&d\r",
     (f"MSH-4.3 (repetition 1) has 4 sub-components; at most 3 are accepted {COMPONENTS}",
      "MSH^1^4^1^3", 102)),
], ids=["components", "msh-components", "sub-components-in-repetition-2",
        "sub-components-in-component-2", "msh-sub-components"])
def test_one_over_max_components_is_refused_at_the_repetition_or_component(
        text: str, expected: tuple[str, str, int]) -> None:
    assert refused(text) == expected
