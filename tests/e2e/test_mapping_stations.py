"""A station rule that schedules a step on several stations: each console finds it."""

from __future__ import annotations

import shutil

from .conftest import FIXTURES, REPO, start_daemon, stop_daemon, write_config

SPS = "ScheduledProcedureStepSequence[0]"


def test_item_on_a_pool_of_stations_is_found_by_each_console(tmp_path):
    maps = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", maps)
    profile = maps / "ihe-swf-orm-v231.yaml"
    text = profile.read_text(encoding="utf-8")
    pool = ("  rules:\n"
            "    - name: ct-pool\n"
            "      priority: 200\n"
            "      when: 'OBR-24 = CT'\n"
            "      aet: [CT07, CT08]\n"
            "      station_name: {const: CT pool}\n")
    assert "  rules:\n" in text
    profile.write_text(text.replace("  rules:\n", pool, 1), encoding="utf-8")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(REPO / "mappings"), str(maps)))
    d = start_daemon(cfg, tmp_path / "data")
    try:
        res = d.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        assert ": AA" in res.stdout, res.stdout
        for station in ("CT07", "CT08"):
            (ds,) = d.findscu(tmp_path, f"{SPS}.ScheduledStationAETitle={station}",
                              f"{SPS}.ScheduledProcedureStepStartDate=20261128",
                              "AccessionNumber")
            assert ds.AccessionNumber == "ACC20261128001"
            assert list(ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == [
                "CT07", "CT08"]
        assert d.findscu(tmp_path, f"{SPS}.ScheduledStationAETitle=CT01",
                         "AccessionNumber") == []
    finally:
        assert stop_daemon(d) == 0
