"""Python hooks, the last resort: loading, calling, errors, and the operator's switch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.mapping import MappingError, MappingLoadError, load_mappings

from .mapping_helpers import MSH, er7, minimal

HOOKS = '''
from dataclasses import dataclass

from bridge.mapping import MappingError


@dataclass
class Check:  # a dataclass: the hook file runs as a proper module
    modulus: int


def accession(ctx, prefix="", check=Check(10)):
    """Accession = placer number + a check digit, for a RIS that sends none."""
    placer = ctx.get("ORC-2.1 | OBR-2.1")
    if not placer:
        return None
    digit = sum(ord(c) for c in placer) % check.modulus
    return f"{prefix}{placer}{digit}"


def all_ids(ctx):
    return ctx.all("PID-3[*].1")


def strict_modality(ctx):
    value = ctx.get("OBR-24")
    if value == "XX":
        [hit] = ctx.hits("OBR-24")
        raise MappingError(103, "Modality XX is retired", location=hit.location(),
                           attribute="Modality")
    return value


def broken(ctx):
    return {}["missing"]


def whole_message(ctx):
    return ctx.message.control_id
'''

MAPPING = minimal("""
    StudyID: {hook: accession, args: {prefix: A}}
    OtherPatientIDs: {hook: all_ids}
    StudyComments: {hook: whole_message}
""").replace("attributes:", "hooks:\n  accession: site_hooks.py:accession\n"
             "  all_ids: site_hooks.py:all_ids\n  whole_message: site_hooks.py:whole_message\n"
             "  strict: site_hooks.py:strict_modality\n  broken: site_hooks.py:broken\n"
             "attributes:")

ORDER = (MSH, "PID|1||PAT1~PAT2", "ORC|NW|PLC1", "OBR|1|PLC1||||||||||||||||ACC1|RP1|||||CT")


def write(tmp_path: Path, mapping: str, hooks: str = HOOKS) -> Path:
    (tmp_path / "site_hooks.py").write_text(textwrap.dedent(hooks), encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(mapping, encoding="utf-8")
    return path


def load(path: Path, allowed: bool = True):
    return load_mappings([path], default_station_aet="UNASSIGNED", python_hooks=allowed)


def test_a_hook_computes_a_value_from_paths_and_args(tmp_path) -> None:
    mappings = load(write(tmp_path, MAPPING))
    ds = mappings.map(er7(*ORDER)).items[0]
    digit = sum(ord(c) for c in "PLC1") % 10
    assert ds.StudyID == f"APLC1{digit}"
    assert list(ds.OtherPatientIDs) == ["PAT1", "PAT2"]   # a list: several values
    assert ds.StudyComments == "CTRL1"                     # the whole message is there too
    # None: no value (the attribute is present and empty, as for any empty source).
    assert mappings.map(er7(*(s.replace("PLC1", "") for s in ORDER))).items[0].StudyID == ""


def test_a_hook_value_is_checked_against_the_vr(tmp_path) -> None:
    mappings = load(write(tmp_path, MAPPING))
    long_placer = [s.replace("PLC1", "PLACER-NUMBER-2026-0001") for s in ORDER]
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*long_placer))
    assert (info.value.code, info.value.attribute) == (102, "StudyID")
    assert "VR SH allows 16" in info.value.text


def test_a_hook_can_reject_with_its_own_error(tmp_path) -> None:
    mappings = load(write(tmp_path, MAPPING.replace("      Modality: OBR-24",
                                                    "      Modality: {hook: strict}")))
    assert mappings.map(er7(*ORDER)).items[0].ScheduledProcedureStepSequence[0].Modality == "CT"
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*(s.replace("||CT", "||XX") for s in ORDER)))
    assert (info.value.code, info.value.location, info.value.ack_code) == (103, "OBR^1^24", "AE")
    assert info.value.text == "Modality XX is retired"


def test_a_hook_that_fails_rejects_the_message_with_207(tmp_path) -> None:
    mappings = load(write(tmp_path, MAPPING.replace("{hook: all_ids}", "{hook: broken}")))
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*ORDER))
    err = info.value
    assert (err.code, err.ack_code, err.attribute) == (207, "AR", "OtherPatientIDs")
    assert err.text == "OtherPatientIDs: hook broken failed: KeyError"
    assert isinstance(err.__cause__, KeyError)             # the traceback is kept for the log


def test_hooks_are_off_unless_the_operator_allows_them(tmp_path) -> None:
    path = write(tmp_path, MAPPING)
    with pytest.raises(MappingLoadError) as info:
        load(path, allowed=False)
    [err] = [e for e in info.value.errors if e.key == "hooks"]
    assert (err.path, err.line) == (str(path), MAPPING.splitlines().index("hooks:") + 1)
    assert "mapping.python_hooks: true" in err.problem


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_hook_load_errors_name_file_line_and_key(tmp_path) -> None:
    mapping = MAPPING.replace("site_hooks.py:all_ids", "site_hooks.py:no_such_function") \
        .replace("site_hooks.py:whole_message", "missing.py:f") \
        .replace("{hook: accession, args: {prefix: A}}", "{hook: nope}") \
        .replace("{from: PID-3.1, required: true}", "{from: PID-3.1, args: {a: 1}}")
    path = write(tmp_path, mapping)
    with pytest.raises(MappingLoadError) as info:
        load(path)
    found = {(e.path, e.line, e.key): e.problem for e in info.value.errors}
    assert found[(str(path), line_of(mapping, "no_such_function"), "hooks.all_ids")] == \
        "site_hooks.py has no function 'no_such_function'"
    assert found[(str(path), line_of(mapping, "missing.py"), "hooks.whole_message")] \
        .startswith("hook file not found: ")
    assert found[(str(path), line_of(mapping, "{hook: nope}"), "attributes.StudyID.hook")] == \
        "no hook 'nope'; define it under hooks:"
    assert "args: are for a hook" in found[(str(path), line_of(mapping, "args: {a: 1}"),
                                            "attributes.PatientID")]


def test_a_hook_file_that_does_not_run_is_reported_at_its_own_line(tmp_path) -> None:
    path = write(tmp_path, MAPPING, hooks=HOOKS + "\n\ndef oops(:\n    pass\n")
    with pytest.raises(MappingLoadError) as info:
        load(path)
    errors = [e for e in info.value.errors if e.path == str(tmp_path / "site_hooks.py")]
    assert errors, info.value
    bad_line = (HOOKS + "\n\ndef oops(:\n").count("\n")
    assert {(e.line, e.key) for e in errors} >= {(bad_line, "hooks.accession")}
    assert all(e.problem.startswith("syntax error in hook file") for e in errors)
    path = write(tmp_path, MAPPING, hooks=HOOKS + "\nraise RuntimeError('no database')\n")
    with pytest.raises(MappingLoadError) as info:
        load(path)
    err = next(e for e in info.value.errors if e.key == "hooks.accession")
    assert err.line == (HOOKS + "\nraise").count("\n") + 1
    assert err.problem == "hook file failed to load: RuntimeError: no database"
