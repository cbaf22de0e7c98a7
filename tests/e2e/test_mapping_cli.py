"""`mwl-bridge mapping check | explain | test` as a mapping author runs them: a subprocess,
its exit code and its output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, REPO

MAPPINGS = REPO / "mappings"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "mwl-bridge.yaml"
    path.write_text(f"mapping: {{paths: [{MAPPINGS}], default_station_aet: UNASSIGNED}}\n",
                    encoding="utf-8")
    return path


def test_mapping_test_runs_the_shipped_golden_cases(config) -> None:
    res = run("-c", str(config), "mapping", "test")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    cases = sorted(MAPPINGS.glob("cases/*/*.hl7"))
    assert len([ln for ln in lines if ln.startswith("PASS ")]) == len(cases)
    assert lines[-1] == f"{len(cases)} passed, 0 failed"
    assert any(ln.startswith("PASS    ") and "pet-ct-three-ipc.hl7  (ihe-swfb-omi-v251, 3 items)"
               in ln for ln in lines)
    assert any("reject-long-accession.hl7  (ihe-swf-orm-v231, rejected)" in ln for ln in lines)


def test_mapping_test_shows_a_diff_then_update_records_the_new_output(config, tmp_path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    src = MAPPINGS / "cases" / "ihe-swfb-omi-v251"
    shutil.copy(src / "two-orders.hl7", cases)
    expected = cases / "two-orders.expected.yaml"
    # A generated expected file: the shipped one is hand-written, which --update refuses.
    expected.write_text((src / "two-orders.expected.yaml").read_text(encoding="utf-8")
                        .replace("hand-written: true\n", "")
                        .replace("Modality: US", "Modality: MR"), encoding="utf-8")
    shutil.copy(FIXTURES / "omg-o19-ct.hl7", cases / "new-omg.hl7")
    res = run("-c", str(config), "mapping", "test", str(cases))
    assert res.returncode == 1
    out = res.stdout.splitlines()
    # Cases run in name order: new-omg, then two-orders.
    assert out[0].startswith("NEW     ") and out[0].endswith("new-omg.hl7  (omg-o19-v251, 1 item)")
    assert out[1] == ("        no expected file (new-omg.expected.yaml); run with --update to "
                      "write one from the current output")
    assert out[2].startswith("FAIL    ") and out[2].endswith(
        "two-orders.hl7  (ihe-swfb-omi-v251, 2 items)")
    assert "        --- expected (two-orders.expected.yaml)" in out
    assert "        -  - Modality: MR" in out and "        +  - Modality: US" in out
    assert out[-1] == "0 passed, 1 failed, 1 new"

    res = run("-c", str(config), "mapping", "test", "--update", str(cases))
    assert res.returncode == 0, res.stdout
    assert res.stdout.splitlines()[-1] == "0 passed, 0 failed, 2 updated"
    assert "Modality: US" in expected.read_text(encoding="utf-8")
    assert (cases / "new-omg.expected.yaml").read_text(encoding="utf-8").startswith(
        "# Golden case for new-omg.hl7")
    res = run("-c", str(config), "mapping", "test", "-q", str(cases))
    assert (res.returncode, res.stdout) == (0, "2 passed, 0 failed\n")


def test_mapping_test_update_refuses_to_overwrite_a_hand_written_case(config,
                                                                      tmp_path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    src = MAPPINGS / "cases" / "ihe-swf-orm-v231"
    shutil.copy(src / "ct-chest-with-zds.hl7", cases)
    expected = cases / "ct-chest-with-zds.expected.yaml"
    text = (src / "ct-chest-with-zds.expected.yaml").read_text(encoding="utf-8")
    assert "\nhand-written: true\n" in text
    broken = text.replace("Modality: CT  ", "Modality: MR  ")  # a regression to bless
    assert broken != text
    expected.write_text(broken, encoding="utf-8")
    res = run("-c", str(config), "mapping", "test", "--update", str(cases))
    assert res.returncode == 1, res.stdout
    out = res.stdout.splitlines()
    assert out[0].startswith("FAIL    ")
    assert f"        not updated: {expected}: written by hand (hand-written: true); " \
           "--update does not overwrite it: fix the mapping, or edit the file by hand " \
           "from the IHE tables" in out
    assert out[-1] == "0 passed, 1 failed"
    assert expected.read_text(encoding="utf-8") == broken


def test_mapping_test_cannot_run_without_cases(config, tmp_path) -> None:
    res = run("-c", str(config), "mapping", "test", str(tmp_path / "nowhere"))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"{tmp_path / 'nowhere'}: no such case file or folder "
                                  "(cases are *.hl7 files)")


def test_mapping_explain_prints_routing_values_fields_and_rules(config) -> None:
    res = run("-c", str(config), "mapping", "explain", str(FIXTURES / "omi-o23-three-ipc.hl7"))
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == ("message  OMI^O23, control ID 'MSG-20261128-0101', HL7 2.5.1, "
                      "from RIS/HOSP")
    assert out[1:4] == ["routing",
                        "  1. orm-no-ihe-extras  no: message type OMI^O23 is not ORM^O01",
                        "  2. ihe-swf-orm-v231   no: message type OMI^O23 is not ORM^O01"]
    assert "  3. ihe-swfb-omi-v251  takes it" in out
    assert "item 3 of 3 (ORC^1 > IPC^3)" in out
    header = next(ln for ln in out if ln.lstrip().startswith("ATTRIBUTE"))
    assert header.split() == ["ATTRIBUTE", "VALUE", "HL7", "RULE"]
    accession = next(ln for ln in out if ln.startswith("  AccessionNumber "))
    assert accession.split()[1:3] == ["ACC20261128101", "IPC-1.1"]
    assert accession.endswith("from IPC-1.1")
    station = [ln for ln in out if ln.startswith("    ScheduledStationAETitle ")][2]
    assert station.split()[1:3] == ["CT02", "IPC-9"]
    assert "station rule 'ipc' (priority 100): from IPC-9" in station
    assert out[-1] == "result   accepted: 3 worklist items by mapping ihe-swfb-omi-v251"


def test_mapping_explain_of_a_rejected_message_exits_1(config) -> None:
    res = run("-c", str(config), "mapping", "explain", str(FIXTURES / "orm-long-accession.hl7"))
    assert res.returncode == 1
    out = res.stdout.splitlines()
    accession = next(ln for ln in out if ln.startswith("  AccessionNumber "))
    assert accession.split()[1:4] == ["ERROR", "102", "OBR-18"]
    assert out[-1] == ("result   rejected: AE, error 102 at OBR^1^18: AccessionNumber (OBR-18) "
                       "is 20 characters; VR SH allows 16; got 'ACC-2026112800000902'")


def test_mapping_explain_of_something_unreadable_exits_2(config, tmp_path) -> None:
    res = run("-c", str(config), "mapping", "explain", str(FIXTURES / "not-hl7.txt"))
    assert res.returncode == 2
    assert res.stderr.startswith(f"{FIXTURES / 'not-hl7.txt'}: not an HL7 message: line 1")
    res = run("-c", str(config), "mapping", "explain", str(tmp_path / "missing.hl7"))
    assert (res.returncode, res.stderr.strip()) == (
        2, f"{tmp_path / 'missing.hl7'}: cannot read: No such file or directory")


def test_mapping_check(config, tmp_path) -> None:
    res = run("-c", str(config), "mapping", "check")
    assert res.returncode == 0, res.stdout
    assert res.stdout.splitlines()[:2] == [
        "OK: 5 mappings, in routing order:",
        "  1. orm-no-ihe-extras  ORM^O01 (HL7 2.2/2.3/2.3.1/2.4/2.5, when not OBR-18)  "
        "mappings/orm-no-ihe-extras.yaml"]
    bad = tmp_path / "bad.yaml"
    text = (MAPPINGS / "omg-o19-v251.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("  AccessionNumber: {from: OBR-18, required: true}",
                                "  AccessionNumber: {from: OBR-18, required: true}\n"
                                "  StudyID: {const: STUDY-2026-11-28-0001}"), encoding="utf-8")
    line = bad.read_text(encoding="utf-8").splitlines().index(
        "  StudyID: {const: STUDY-2026-11-28-0001}") + 1
    res = run("-c", str(config), "mapping", "check", str(bad))
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"{bad}:{line}: attributes.StudyID.const: 'STUDY-2026-11-28-0001' is 21 characters; "
        "VR SH allows 16",
        "1 problem in 1 file; the mappings were not loaded"]


def test_mapping_explain_reads_hex_escapes_in_the_frames_charset(config, tmp_path) -> None:
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
    message = tmp_path / "utf8-escapes.hl7"
    message.write_bytes(text.replace(b"DOE^JOHN^QUINCY^JR^DR", b"Caf\\XC3A9\\^Zo\\XC3AB\\")
                        .replace(b"|AL|NE||", b"|AL|NE||UNICODE UTF-8"))
    res = run("-c", str(config), "mapping", "explain", str(message))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Café^Zoë" in res.stdout and "CafÃ©" not in res.stdout
