"""MappingReloader: a new set replaces the old one whole, a broken one never does."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from bridge.mapping import MappingLoadError, MappingReloader
from bridge.mapping.settings import MappingSettings

from .mapping_helpers import ORDER_SEGMENTS, er7, minimal


def write(path: Path, text: str) -> None:
    """Write and move the modification time on, so a change is seen whatever the clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 10**9, before + 10**9))


def mapping(name: str, institution: str) -> str:
    return minimal(f"InstitutionName: {{const: {institution}}}", name=name)


def institution(reloader: MappingReloader) -> tuple[str, str]:
    result = reloader.current().map(er7(*ORDER_SEGMENTS))
    return result.mapping, result.items[0].InstitutionName


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    write(folder / "site.yaml", mapping("site-v1", "OLD"))
    return folder


def settings(folder: Path, **extra: object) -> MappingSettings:
    return MappingSettings(paths=[folder], **extra)


def test_reload_swaps_in_the_new_set_and_logs_its_names(folder, caplog) -> None:
    reloader = MappingReloader(settings(folder))
    assert institution(reloader) == ("site-v1", "OLD")
    write(folder / "site.yaml", mapping("site-v2", "NEW"))
    write(folder / "other.yaml", mapping("other", "X").replace("ORM^O01", "ORM^O02"))
    assert reloader.changed()
    with caplog.at_level(logging.INFO, logger="bridge.mapping.reload"):
        assert reloader.reload("SIGHUP") is True
    assert institution(reloader) == ("site-v2", "NEW")
    assert reloader.current().names == ["other", "site-v2"]
    assert "mappings reloaded (SIGHUP); active: other, site-v2" in caplog.messages
    assert not reloader.changed()


def test_a_broken_file_is_rejected_and_the_old_set_stays(folder, caplog) -> None:
    reloader = MappingReloader(settings(folder))
    old = reloader.current()
    broken = mapping("site-v2", "NEW").replace("InstitutionName:", "InstitutionNam:")
    write(folder / "site.yaml", broken)
    with caplog.at_level(logging.INFO, logger="bridge.mapping.reload"):
        assert reloader.reload("files changed") is False
    assert reloader.current() is old
    assert institution(reloader) == ("site-v1", "OLD")
    line = broken.splitlines().index("  InstitutionNam: {const: NEW}") + 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].getMessage() == (
        f"mapping reload rejected: {folder / 'site.yaml'}:{line}: attributes.InstitutionNam: "
        "unknown DICOM keyword 'InstitutionNam'; did you mean InstitutionName?")
    assert errors[-1].getMessage() == ("mapping reload (files changed) rejected with 1 "
                                       "problem(s); still active: site-v1")
    # The broken state is remembered: no retry (and no log line) until the file changes.
    assert not reloader.changed()
    assert (reloader.reloads, reloader.rejected) == (0, 1)


def test_the_first_load_must_succeed(folder) -> None:
    write(folder / "site.yaml", "name: [\n")
    with pytest.raises(MappingLoadError, match=r"site\.yaml:2: invalid YAML"):
        MappingReloader(settings(folder))


def test_lookup_tables_and_hook_files_are_watched(tmp_path) -> None:
    folder = tmp_path / "mappings"
    (folder / "lookups").mkdir(parents=True)
    write(folder / "lookups" / "inst.csv", "code,name\nHOSP,General Hospital\n")
    write(folder / "hooks.py", "def tag(ctx):\n    return 'v1'\n")
    write(folder / "site.yaml", minimal("""
        InstitutionName: {from: MSH-4.1, lookup: inst.name}
        StudyComments: {hook: tag}
    """, name="site").replace("attributes:", "lookups:\n  inst: {file: lookups/inst.csv}\n"
                              "hooks:\n  tag: hooks.py:tag\nattributes:"))
    reloader = MappingReloader(settings(folder, python_hooks=True))
    step = reloader.current().map(er7(*ORDER_SEGMENTS)).items[0]
    assert (step.InstitutionName, step.StudyComments) == ("General Hospital", "v1")
    write(folder / "lookups" / "inst.csv", "code,name\nHOSP,St. Mary\n")
    assert reloader.changed()
    assert reloader.reload()
    write(folder / "hooks.py", "def tag(ctx):\n    return 'v2'\n")
    assert reloader.changed()
    assert reloader.reload()
    step = reloader.current().map(er7(*ORDER_SEGMENTS)).items[0]
    assert (step.InstitutionName, step.StudyComments) == ("St. Mary", "v2")


async def until(condition, what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


def watching(reloader: MappingReloader) -> bool:
    """The watch task has started: request() is no longer a no-op."""
    return reloader._requested is not None


def count_checks(reloader: MappingReloader) -> list[bool]:
    """Spy on the watch task's file checks: one entry per changed() call, its answer."""
    checks: list[bool] = []
    real = reloader.changed

    def changed() -> bool:
        answer = real()
        checks.append(answer)
        return answer

    reloader.changed = changed  # type: ignore[method-assign]
    return checks


async def test_watch_reloads_on_request_and_on_file_changes(folder) -> None:
    reloader = MappingReloader(settings(folder, reload_poll_s=0.05))
    task = asyncio.create_task(reloader.watch())
    try:
        await until(lambda: watching(reloader), "the watch task to start")
        reloader.request()                         # what SIGHUP does
        await until(lambda: reloader.reloads == 1, "the requested reload")
        write(folder / "site.yaml", mapping("site-v2", "NEW"))
        await until(lambda: reloader.reloads == 2, "the reload after a file change")
        assert institution(reloader) == ("site-v2", "NEW")
        write(folder / "site.yaml", "name: [\n")
        await until(lambda: reloader.rejected == 1, "the rejected reload")
        assert institution(reloader) == ("site-v2", "NEW")
    finally:
        task.cancel()


async def test_with_polling_off_only_a_request_reloads(folder) -> None:
    reloader = MappingReloader(settings(folder, reload_poll_s=0))
    checks = count_checks(reloader)
    # A polling reloader of the same folder: the positive sign that the change was
    # there to be seen, for several poll periods, before we say nothing happened.
    control = MappingReloader(settings(folder, reload_poll_s=0.05))
    control_checks = count_checks(control)
    tasks = [asyncio.create_task(reloader.watch()), asyncio.create_task(control.watch())]
    try:
        await until(lambda: watching(reloader) and watching(control), "the watch tasks")
        write(folder / "site.yaml", mapping("site-v2", "NEW"))
        await until(lambda: control.reloads == 1, "the polling reloader's reload")
        seen = len(control_checks)
        await until(lambda: len(control_checks) >= seen + 3, "three more polls")
        assert reloader.reloads == 0 and reloader.rejected == 0
        assert checks == []  # polling off: the files are never looked at
        assert institution(reloader) == ("site-v1", "OLD")
        reloader.request()
        await until(lambda: reloader.reloads == 1, "the requested reload")
        assert institution(reloader) == ("site-v2", "NEW")
    finally:
        for task in tasks:
            task.cancel()
