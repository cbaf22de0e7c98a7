"""Station rules: priorities, conditions, several AE titles, lookups and the site default."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingSet

from .mapping_helpers import MSH, er7, load_text

STATIONS = """
name: stations
match: {{message_type: ORM^O01}}
group_by: ORC
lookups:
  procedures: {{file: procedures.csv, key: code}}
stations:
  rules:
{rules}
  default:
{default}
attributes:
  AccessionNumber: OBR-18
  RequestedProcedureID: OBR-18
  ScheduledProcedureStepSequence:
    - Modality: OBR-24
"""

RULES = """
    - name: by-modality
      priority: 10
      when: 'OBR-24 in (CT, MR)'
      aet: {const: [CT01, CT02]}
      station_name: {const: CT pool}
    - name: ris
      priority: 100
      aet: ORC-18.1
      station_name: ORC-18.2
    - name: procedure-table
      priority: 50
      aet: {from: OBR-4.1, lookup: procedures.station}
      station_name: {from: OBR-4.1, lookup: procedures.room}
    - name: late-tie
      priority: 10
      when: 'OBR-24 = MR'
      aet: {const: MR99}
"""


def order(orc18: str = "", code: str = "X1", modality: str = "CT") -> tuple[str, ...]:
    return (MSH, "PID|1||P1",
            f"ORC|NW|1||||||||||||||||{orc18}",
            f"OBR|1|1||{code}||||||||||||||ACC1||||||{modality}")


@pytest.fixture
def stations(write_mapping, tmp_path) -> MappingSet:
    (tmp_path / "procedures.csv").write_text(
        "code,station,room\nMRK,MR01\\MR02,MR suites\nUSA,,\n", encoding="utf-8")
    text = STATIONS.format(rules=RULES.strip("\n"),
                           default="    station_name: {const: Unassigned room}")
    return load_text(write_mapping, text, station="SITEDEF")


def station(mappings: MappingSet, *segments: str) -> tuple[object, str]:
    sps = mappings.map(er7(*segments)).items[0].ScheduledProcedureStepSequence[0]
    aet = sps.ScheduledStationAETitle
    return (aet if isinstance(aet, str) else list(aet)), sps.ScheduledStationName


def test_the_highest_priority_rule_that_yields_a_title_decides(stations) -> None:
    # ris (100) beats procedure-table (50) beats by-modality (10).
    assert station(stations, *order("CT07^CT Room 7", code="MRK")) == ("CT07", "CT Room 7")
    assert station(stations, *order(code="MRK")) == (["MR01", "MR02"], "MR suites")
    assert station(stations, *order(code="X1")) == (["CT01", "CT02"], "CT pool")


def test_a_rule_whose_aet_is_empty_does_not_fire(stations) -> None:
    # USA is in the table with no station: the next rule (by modality) decides.
    assert station(stations, *order(code="USA", modality="MR")) == (["CT01", "CT02"], "CT pool")


def test_equal_priorities_keep_the_file_order(stations) -> None:
    # by-modality and late-tie both have priority 10 and both hold for MR: the first wins.
    assert station(stations, *order(modality="MR")) == (["CT01", "CT02"], "CT pool")


def test_when_false_falls_through_to_the_site_default(stations) -> None:
    # No rule holds for US: the default takes the configured default_station_aet.
    assert station(stations, *order(modality="US")) == ("SITEDEF", "Unassigned room")


def test_a_rule_takes_every_repetition_of_a_path(write_mapping) -> None:
    text = STATIONS.format(rules="""
    - name: ris-all
      aet: ORC-18[*].1
""".strip("\n"), default="    aet: {const: NONE}").replace(
        "  procedures: {file: procedures.csv, key: code}\n", "").replace("lookups:\n", "")
    mappings = load_text(write_mapping, text)
    assert station(mappings, *order("CT01~CT02~CT03")) == (["CT01", "CT02", "CT03"], "")
    assert station(mappings, *order("")) == ("NONE", "")


def test_without_a_default_the_configured_station_is_used(write_mapping) -> None:
    text = STATIONS.format(rules="    - {name: ris, aet: ORC-18.1}",
                           default="    {}").replace(
        "  procedures: {file: procedures.csv, key: code}\n", "").replace("lookups:\n", "")
    mappings = load_text(write_mapping, text, station="CFGDEF")
    assert station(mappings, *order()) == ("CFGDEF", "")


def test_a_variable_or_a_list_is_a_constant_in_a_rule(write_mapping) -> None:
    text = STATIONS.format(rules="""
    - {name: ct, when: 'OBR-24 = CT', aet: [CT01, CT02]}
    - {name: mr, when: 'OBR-24 = MR', aet: $mr_station}
""".strip("\n"), default="    {}").replace(
        "  procedures: {file: procedures.csv, key: code}\n", "vars: {mr_station: MR05}\n"
    ).replace("lookups:\n", "")
    mappings = load_text(write_mapping, text)
    assert station(mappings, *order(modality="CT")) == (["CT01", "CT02"], "")
    assert station(mappings, *order(modality="MR")) == ("MR05", "")
