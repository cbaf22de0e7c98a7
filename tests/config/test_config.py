from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_loopback_setup():
    s = load_settings(None, {})
    assert (s.mllp.host, s.mllp.port) == ("127.0.0.1", 2575)
    assert (s.dicom.host, s.dicom.port, s.dicom.ae_title) == ("127.0.0.1", 11112, "MWLBRIDGE")
    assert s.store.backend == "sqlite"
    assert s.sqlite_path.name == "bridge.sqlite3"
    assert s.dicom.max_associations > 10


def test_example_file_is_valid_and_matches_defaults():
    example = load_settings(REPO / "mwl-bridge.example.yaml", {})
    defaults = load_settings(None, {})
    assert example.mllp == defaults.mllp.model_copy(
        update={"charset_aliases": example.mllp.charset_aliases})
    assert example.dicom == defaults.dicom
    assert example.worklist == defaults.worklist
    assert example.reconcile == defaults.reconcile
    assert example.audit == defaults.audit


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: state\nmapping:\n  paths: [maps]\n")
    s = load_settings(cfg, {})
    assert s.data_dir == tmp_path / "state"
    assert s.mapping.paths == [tmp_path / "maps"]


def test_environment_overrides_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mllp:\n  port: 3000\n")
    s = load_settings(cfg, {"MWL_BRIDGE_MLLP__PORT": "3001",
                            "MWL_BRIDGE_WORKLIST__HIDDEN_STATUSES": "[CANCELED]",
                            "MWL_BRIDGE_DICOM__AE_TITLE": "MWL2"})
    assert s.mllp.port == 3001
    assert s.worklist.hidden_statuses == ["CANCELED"]
    assert s.dicom.ae_title == "MWL2"


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ("mllp:\n  port: abc\n", 2, "mllp.port", "valid integer"),
    ("mllp:\n  port: 70000\n", 2, "mllp.port", "less than or equal to 65535"),
    ("dicom:\n  host: 127.0.0.1\n  ae_title: MUCH_TOO_LONG_AE_TITLE\n", 3, "dicom.ae_title",
     "1-16 ASCII"),
    ("dicom:\n  colour: blue\n", 2, "dicom.colour", "Extra inputs"),
    ("store:\n  backend: oracle\n", 2, "store.backend", "'sqlite' or 'postgresql'"),
    ("mllp:\n  default_charset: klingon\n", 2, "mllp.default_charset", "unknown character set"),
])
def test_bad_values_name_file_line_and_key(tmp_path, text, line, key, problem):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    (err,) = info.value.errors
    assert str(err).startswith(f"{cfg}:{line}: {key}: ")
    assert problem in err.problem



def test_an_empty_or_padded_worklist_label_is_refused_where_it_is_written(
        tmp_path: Path) -> None:
    # Matching compares a view's labels with the item's label trimmed: "" or " MR"
    # would match no item, and the AE or view would silently see an empty worklist.
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dicom:\n"
                   "  known_aes:\n"
                   "    CT1:\n"
                   "      worklist_labels: [\"\"]\n"
                   "  called_aes:\n"
                   "    CTVIEW:\n"
                   "      worklist_labels:\n"
                   "        - CT\n"
                   "        - \"  \"\n"
                   "        - \" MR\"\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    blank = ("Value error, a Worklist Label is not empty or blank (it matches no item: the "
             "view would see nothing)")
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:4: dicom.known_aes.CT1.worklist_labels[0]: {blank}",
        f"{cfg}:9: dicom.called_aes.CTVIEW.worklist_labels[1]: {blank}",
        f"{cfg}:10: dicom.called_aes.CTVIEW.worklist_labels[2]: Value error, a Worklist "
        "Label has no leading or trailing spaces (items' labels are compared trimmed: it "
        "matches no item)"]


def test_malformed_yaml_names_the_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("mllp:\n  port: 1\n   host: x\n")
    with pytest.raises(ConfigError, match=rf"{cfg}:3: invalid YAML"):
        load_settings(cfg, {})


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml", {})
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(cfg, {})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"MWL_BRIDGE_MLLP__PORT": "many"})
    assert str(info.value.errors[0]).startswith(
        "environment variable MWL_BRIDGE_MLLP__PORT: mllp.port: ")


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_check_config_ok_and_bad(tmp_path):
    ok = run_cli("check-config")
    assert ok.returncode == 0, ok.stderr
    assert "config OK" in ok.stdout and "MWLBRIDGE on 127.0.0.1:11112" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: -1\n")
    res = run_cli("--config", str(bad), "check-config")
    assert res.returncode == 2
    assert f"{bad}:2: dicom.port:" in res.stderr


def test_serve_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mllp:\n  idle_timeout_s: 0\n")
    res = run_cli("--config", str(bad), "serve")
    assert res.returncode == 2
    assert f"{bad}:2: mllp.idle_timeout_s: Input should be greater than 0" in res.stderr


def test_help_lists_the_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("serve", "send", "worklist", "check-config", "MWL_BRIDGE_"):
        assert word in res.stdout
