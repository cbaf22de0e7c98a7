"""The stack test's engine check: where no container engine exists, it names what is
missing (the stack test is then skipped with that reason, or fails under CI=true)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.test_compose_stack import _engine_missing


def test_no_docker_on_the_path_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _engine_missing().startswith("docker is not installed")


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker client")
def test_no_engine_answering_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    for tool in ("docker-compose", "debootstrap"):  # stand-ins: only dockerd is missing
        (tmp_path / tool).symlink_to("/bin/true")
    monkeypatch.setenv("PATH", f"{Path(str(shutil.which('docker'))).parent}:{tmp_path}")
    assert _engine_missing().startswith("no Docker engine answers (start dockerd)")
