"""Every golden case shipped beside the mappings passes: the profiles' regression suite."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingSet, load_mappings
from bridge.mapping.cases import CASES_FOLDER, Case, discover, load_expected, run_case

from .mapping_helpers import MAPPINGS

CASES = discover([MAPPINGS / CASES_FOLDER])


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")


def test_every_profile_has_golden_cases() -> None:
    folders = {c.message.parent.name for c in CASES}
    assert folders >= {"ihe-swf-orm-v231", "ihe-swfb-omi-v251", "omg-o19-v251",
                       "orm-no-ihe-extras", "siu-s12-v25"}
    # Each profile has accepted and rejected messages.
    for folder in folders - {"routing"}:
        names = [c.stem for c in CASES if c.message.parent.name == folder]
        assert any(n.startswith("reject-") for n in names), folder
        assert any(not n.startswith("reject-") for n in names), folder


def test_every_profile_keeps_a_hand_written_case() -> None:
    """Written by hand from the IHE tables, so that --update cannot bless a regression
    in every case of a profile (docs: bridge/mapping/cases.py)."""
    profiles = {p.stem for p in MAPPINGS.glob("*.yaml")}
    assert profiles == {"ihe-swf-orm-v231", "ihe-swfb-omi-v251", "omg-o19-v251",
                        "orm-no-ihe-extras", "siu-s12-v25"}
    hand = {c.message.parent.name for c in CASES
            if (path := c.expected_path()) is not None and load_expected(path).hand_written}
    assert hand == profiles


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.message.parent.name}/{c.stem}")
def test_golden_case(shipped: MappingSet, case: Case) -> None:
    outcome = run_case(shipped, case, default_charset="ascii", aliases={})
    assert outcome.status == "pass", outcome.detail
    assert outcome.mapping == (case.message.parent.name
                               if case.message.parent.name != "routing" else "")
