from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.mapping import MappingSet, load_mappings

from .mapping_helpers import DEFAULT_MAPPING


@pytest.fixture(scope="session")
def default_set() -> MappingSet:
    return load_mappings([DEFAULT_MAPPING], default_station_aet="UNASSIGNED")


@pytest.fixture
def write_mapping(tmp_path: Path) -> Callable[..., Path]:
    """Write a mapping file (dedented YAML) into tmp_path and return its path."""

    def write(text: str, name: str = "m.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
