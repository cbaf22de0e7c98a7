"""The ``mapping`` configuration section: which mapping files, and how they reload."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from bridge.section import Section, ae_title


class MappingSettings(Section):
    # Files or folders (every *.yaml inside, in name order); first routing match wins.
    paths: list[Path] = Field(default_factory=lambda: [Path("mappings")])
    default_station_aet: str = "UNASSIGNED"
    # Hot reload: check the mapping files (and their lookup tables and hooks) for
    # changes every this many seconds; 0 turns the check off (SIGHUP still reloads).
    reload_poll_s: float = Field(default=2.0, ge=0)
    # Mapping files may name Python hook functions (hooks:), which run inside the
    # daemon with its rights: off unless the operator allows it.
    python_hooks: bool = False

    _check_aet = field_validator("default_station_aet")(
        classmethod(lambda cls, v: ae_title(v)))
