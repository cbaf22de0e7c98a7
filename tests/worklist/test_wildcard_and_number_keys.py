"""C-FIND keys that a fuzzer found the planner mishandling (fuzz/corpus/cfind_query/):

- a run of ``*`` then a character the value lacks: the regex made of ``.*`` per
  star backtracked exponentially on every candidate row (14 stars: 71 s a row;
  with Patient's Name matched exactly too), holding an association thread and a
  core. The matcher is now linear per piece, with the same answers;
- a DS or IS key that is no number (``70,5``, a decimal comma) was answered
  0xC000 "the identifier cannot be decoded", naming nothing: now the Error
  Comment and the Offending Element name the attribute.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pynetdicom import AE, Association
from pynetdicom.sop_class import ModalityWorklistInformationFind

from bridge.worklist.query import QueryError, TextCondition, build_query, wildcard
from bridge.worklist.settings import WorklistSettings

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

MEDICAL_ALERTS = Tag(0x0010, 0x2000)
PATIENT_WEIGHT = Tag(0x0010, 0x1030)
ALERT = "Contrast allergy, iodine"  # 24 characters


def regex_of(pattern: str) -> re.Pattern[str]:
    """What the planner used before: the reference for the answers."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def test_the_matcher_answers_as_the_regex_did() -> None:
    rng = random.Random(20261128)
    matched = 0
    for _ in range(30_000):
        pattern = "".join(rng.choice("ab*?.\n") for _ in range(rng.randint(0, 7)))
        text = "".join(rng.choice("ab.\n") for _ in range(rng.randint(0, 8)))
        expected = regex_of(pattern).fullmatch(text) is not None
        assert wildcard(pattern).fullmatch(text) is expected, (pattern, text)
        matched += expected
    assert matched > 1000  # both answers were well exercised


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    ("", "", True), ("", "a", False), ("*", "", True), ("***", "anything", True),
    ("?", "", False), ("?", "ß", True), ("MÜLLER*", "MÜLLER^HANS", True),
    ("*^HANS", "MÜLLER^HANS", True), ("M?LLER*", "MÜLLER^HANS", True),
    ("M?LLER", "MÜLLER^HANS", False), ("a*b*a", "aba", True), ("a*b*a", "ab", False),
    ("ab*ba", "aba", False), ("a**?**b", "ab", False), ("a**?**b", "axb", True),
    ("*a*a*a*", "aa", False), ("CT[1]*", "CT[1]x", True), ("CT.*", "CTx", False),
    ("line*", "line\nbreak", True),
])
def test_wildcard_examples(pattern: str, text: str, expected: bool) -> None:
    assert wildcard(pattern).fullmatch(text) is expected


def test_a_run_of_stars_costs_no_more_than_one_star() -> None:
    item = Dataset()
    item.MedicalAlerts = ALERT
    started = time.perf_counter()
    # 12 stars: about 7 s for the regex; 40: beyond the age of the universe.
    assert not TextCondition(MEDICAL_ALERTS, wildcard("*" * 12 + "#")).accepts(item)
    assert time.perf_counter() - started < 0.5
    assert not TextCondition(MEDICAL_ALERTS, wildcard("*" * 40 + "#")).accepts(item)
    assert TextCondition(MEDICAL_ALERTS, wildcard("*" * 40 + "iodine")).accepts(item)


# --- over an association ---------------------------------------------------------------

@pytest.fixture
def scu() -> Iterator[Callable[[int], Association]]:
    opened: list[Association] = []

    def associate(port: int) -> Association:
        ae = AE(ae_title="CONSOLE")
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        opened.append(assoc)
        return assoc

    yield associate
    for assoc in opened:
        if assoc.is_established:
            assoc.release()


def stored_items(item: Callable[..., Dataset]) -> list[Dataset]:
    out = []
    for n in range(3):
        ds = item("Hans^Müller" if n == 0 else f"Name{n}^Test", f"P{n}", f"A{n:03}",
                  f"1.2.3.{n}", "CT01", "CT", "20261128", f"08{n:02}00")
        ds.MedicalAlerts = ALERT
        out.append(ds)
    return out


def query(**keys: object) -> Dataset:
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.AccessionNumber = ""
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def find(assoc: Association, identifier: Dataset) -> tuple[list[int], list[str], float]:
    """Statuses, answered accession numbers, and the seconds the C-FIND took."""
    started = time.monotonic()
    responses = list(assoc.send_c_find(identifier, ModalityWorklistInformationFind))
    elapsed = time.monotonic() - started
    return ([int(s.Status) for s, _ in responses],
            sorted(str(a.AccessionNumber) for _, a in responses if a is not None), elapsed)


def test_a_run_of_stars_in_a_post_filtered_key_is_answered_at_once(
        new_store, start_scp, scu, item) -> None:
    # Medical Alerts is VM 1-n: matched by the post-filter on every candidate row.
    # 11 stars on these 24 characters took the regex about 3 s a row.
    assoc = scu(start_scp(new_store(stored_items(item))).port)
    statuses, answers, elapsed = find(assoc, query(MedicalAlerts="*" * 11 + "#"))
    assert (statuses, answers) == ([0x0000], [])
    assert elapsed < 2.0
    statuses, answers, _ = find(assoc, query(MedicalAlerts="*" * 11 + "iod?ne"))
    assert (statuses, answers) == ([0xFF00] * 3 + [0x0000], ["A000", "A001", "A002"])


def test_a_run_of_stars_in_an_exact_patient_name_is_answered_at_once(
        new_store, start_scp, scu, item) -> None:
    # The store matches the folded name ("muller" finds "Müller"); the exact
    # post-filter then refuses it: 22 stars took the regex about 4 s.
    scp = start_scp(new_store(stored_items(item)),
                    worklist=WorklistSettings(patient_name_matching="exact"))
    assoc = scu(scp.port)
    statuses, answers, elapsed = find(assoc, query(PatientName="*" * 22 + "Muller"))
    assert (statuses, answers) == ([0x0000], [])
    assert elapsed < 2.0
    statuses, answers, _ = find(assoc, query(PatientName="*" * 22 + "Müller"))
    assert (statuses, answers) == ([0xFF00, 0x0000], ["A000"])


@pytest.mark.parametrize(("tag", "vr", "raw", "comment"), [
    (PATIENT_WEIGHT, "DS", b"70,5", "(0010,1030) is not a decimal string (DS)"),
    (PATIENT_WEIGHT, "DS", b"NaN ", "(0010,1030) is not a decimal string (DS)"),
    (Tag(0x0020, 0x0013), "IS", b"1.5 ", "(0020,0013) is not an integer string (IS)"),
])
def test_a_number_key_that_is_no_number_is_0xc000_naming_it(
        new_store, start_scp, scu, item, tag, vr, raw, comment) -> None:
    identifier = query()
    identifier[tag] = RawDataElement(tag, vr, len(raw), raw, 0, True, True)
    with pytest.raises(QueryError) as caught:
        build_query(identifier, WorklistSettings())
    assert (caught.value.status, caught.value.comment, caught.value.tag) == (0xC000, comment, tag)
    assoc = scu(start_scp(new_store(stored_items(item))).port)
    responses = list(assoc.send_c_find(identifier, ModalityWorklistInformationFind))
    ((status, answer),) = responses
    assert (int(status.Status), str(status.ErrorComment)) == (0xC000, comment)
    assert status.OffendingElement == tag
    assert answer is None
    # A number key that is one still matches.
    statuses, answers, _ = find(assoc, query(PatientWeight="70.50"))
    assert statuses == [0x0000] and answers == []
