"""The deploy scripts' own checks, run without a container engine: a wheelhouse with a
wheel for another CPython, and the Orthanc entrypoint's refusal of a bad port or AE
title or of an unreadable push token file, each stop with a message that names the
culprit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def check_wheelhouse(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEPLOY / "check-wheelhouse.sh"), str(folder)],
                          capture_output=True, text=True, timeout=30)


def test_a_wheelhouse_for_cpython_311_passes(tmp_path: Path) -> None:
    for name in ("pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.whl",
                 "argon2_cffi_bindings-26.2.0-cp310-abi3-manylinux_2_28_x86_64.whl",
                 "jinja2-3.1.6-py3-none-any.whl"):
        (tmp_path / name).touch()
    res = check_wheelhouse(tmp_path)
    assert res.returncode == 0, res.stderr


def test_a_wheel_for_another_cpython_is_named(tmp_path: Path) -> None:
    (tmp_path / "jinja2-3.1.6-py3-none-any.whl").touch()
    (tmp_path / "pyyaml-6.0.4-cp312-cp312-manylinux2014_x86_64.whl").touch()
    res = check_wheelhouse(tmp_path)
    assert res.returncode == 1
    assert "pyyaml-6.0.4-cp312-cp312-manylinux2014_x86_64.whl is not for CPython 3.11" \
        in res.stderr


def test_an_empty_wheelhouse_is_refused(tmp_path: Path) -> None:
    res = check_wheelhouse(tmp_path)
    assert res.returncode == 1 and f"no wheel in {tmp_path}" in res.stderr


def orthanc_entrypoint(variable: str, value: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint on the host with one variable set (none of its others)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORTHANC_", "BRIDGE_", "MWL_BRIDGE_"))}
    env[variable] = value
    return subprocess.run(["sh", str(DEPLOY / "orthanc" / "entrypoint.sh")], env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("ORTHANC_DICOM_PORT", "42a", "ORTHANC_DICOM_PORT must be a port number, not '42a'"),
    ("BRIDGE_PORT", "-1", "BRIDGE_PORT must be a port number, not '-1'"),
    ("BRIDGE_AE", "MWL BRIDGE\"", "BRIDGE_AE: 'MWL BRIDGE\"' is not an AE title"),
    ("ORTHANC_STORE_AETS", "CT01 MR\"01", "ORTHANC_STORE_AETS: 'MR\"01' is not an AE title"),
    ("ORTHANC_STORE_AETS", "A" * 17, "is longer than 16 characters"),
    ("BRIDGE_HOST", "bridge\",\"x", "BRIDGE_HOST 'bridge\",\"x' is not a host name"),
])
def test_the_orthanc_entrypoint_refuses_what_would_break_its_json(
        variable: str, value: str, message: str) -> None:
    # The checks come before Orthanc's config is written or Orthanc started: the
    # script stops on the host just as in the container.
    res = orthanc_entrypoint(variable, value)
    assert res.returncode == 1
    assert message in res.stderr


@pytest.mark.parametrize("content", [None, ""])
def test_the_orthanc_entrypoint_refuses_a_token_file_it_cannot_read(
        tmp_path: Path, content: str | None) -> None:
    # The stable-study push's token (MWL_BRIDGE_TOKEN_FILE): a missing or empty file
    # stops the container with the file's name, rather than Orthanc pushing unsigned.
    token = tmp_path / "orthanc_token"
    if content is not None:
        token.write_text(content, encoding="utf-8")
    res = orthanc_entrypoint("MWL_BRIDGE_TOKEN_FILE", str(token))
    assert res.returncode == 1
    assert f"no token in {token} (MWL_BRIDGE_TOKEN_FILE" in res.stderr
