"""Hot reload with live peers: the same MLLP connection and the same DICOM association
carry on while mappings change; a broken file is rejected and the old mapping stays.

One daemon runs through the whole story (before, file change, broken file, SIGHUP), so
the test takes a few seconds: a reload is noticed by polling every 0.2 s."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from bridge.hl7 import MllpClient, ack_code_of

from .conftest import FIXTURES, REPO, RunningDaemon, start_daemon, stop_daemon

PROFILE = (REPO / "mappings" / "ihe-swf-orm-v231.yaml").read_text(encoding="utf-8")
ORDER = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()


def site_mapping(version: str) -> str:
    """The IHE profile under another name, stamping its version into InstitutionName."""
    text = PROFILE.replace("name: ihe-swf-orm-v231", f"name: site-{version}")
    old = "  InstitutionName: ORC-17.2 | ORC-17.1 | MSH-4.1\n"
    assert old in text
    return text.replace(old, f"  InstitutionName: {{const: MAPPING {version.upper()}}}\n")


def write(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns <= before:  # a coarse clock must not hide the change
        os.utime(path, ns=(before + 10**9, before + 10**9))


def order(n: int) -> bytes:
    """The CT order with its own control ID and keys, so each message is a new item."""
    return (ORDER.replace(b"MSG-20261128-0001", b"MSG-RELOAD-%d" % n)
            .replace(b"ACC20261128001", b"ACC-RELOAD-%d" % n)
            .replace(b"RP20261128001", b"RP-RELOAD-%d" % n)
            .replace(b"SPS20261128001", b"SPS-RELOAD-%d" % n)
            .replace(b"1764318615.101", b"1764318615.%d" % (200 + n)))


def wait_for_log(d: RunningDaemon, text: str, start: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in d.log[start:]:
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(d.log[start:]))


def institutions(assoc) -> dict[str, str]:
    query = Dataset()
    query.AccessionNumber = "ACC-RELOAD-*"
    query.InstitutionName = ""
    out = {}
    for status, ds in assoc.send_c_find(query, ModalityWorklistInformationFind):
        if status is not None and status.Status in (0xFF00, 0xFF01) and ds is not None:
            out[str(ds.AccessionNumber)] = str(ds.InstitutionName)
    return out


async def test_reload_keeps_connections_and_rejects_a_broken_file(tmp_path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    site = folder / "site.yaml"
    write(site, site_mapping("one"))
    config = tmp_path / "mwl-bridge.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "mllp: {host: 127.0.0.1, port: 0}\n"
        "dicom: {host: 127.0.0.1, port: 0, ae_title: MWLBRIDGE}\n"
        f"mapping: {{paths: [{folder}], default_station_aet: UNASSIGNED, reload_poll_s: 0.2}}\n"
        # DEBUG: the MLLP server logs each connection's end there.
        "logging: {level: DEBUG}\n",
        encoding="utf-8")
    d = start_daemon(config, tmp_path / "data")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title=d.ae_title)
    client = await MllpClient.connect("127.0.0.1", d.mllp_port)
    try:
        assert assoc.is_established
        assert ack_code_of(await client.send(order(1))) == "AA"

        # A changed file is noticed and loaded; the next message on the same connection
        # is mapped by the new mapping.
        mark = len(d.log)
        write(site, site_mapping("two"))
        wait_for_log(d, "mappings reloaded (files changed); active: site-two", mark)
        assert ack_code_of(await client.send(order(2))) == "AA"

        # A broken file is rejected with file, line and key; the old mapping stays.
        mark = len(d.log)
        broken = site_mapping("three").replace("  PatientBirthDate:", "  PatientBirthdate:")
        write(site, broken)
        line = broken.splitlines().index(
            next(ln for ln in broken.splitlines() if "PatientBirthdate:" in ln)) + 1
        rejected = wait_for_log(d, "mapping reload rejected: ", mark)
        assert rejected.endswith(
            f"mapping reload rejected: {site}:{line}: attributes.PatientBirthdate: unknown "
            "DICOM keyword 'PatientBirthdate'; did you mean PatientBirthDate?")
        wait_for_log(d, "rejected with 1 problem(s); still active: site-two", mark)
        assert ack_code_of(await client.send(order(3))) == "AA"

        # SIGHUP reloads (the poll may see the fixed file first; SIGHUP reloads anyway).
        write(site, site_mapping("three"))
        mark = len(d.log)
        d.proc.send_signal(signal.SIGHUP)
        wait_for_log(d, "mappings reloaded (SIGHUP); active: site-three", mark)
        assert ack_code_of(await client.send(order(4))) == "AA"

        # Each message was mapped by the mapping active when it came; the association
        # opened before the first reload still answers.
        assert institutions(assoc) == {
            "ACC-RELOAD-1": "MAPPING ONE", "ACC-RELOAD-2": "MAPPING TWO",
            "ACC-RELOAD-3": "MAPPING TWO", "ACC-RELOAD-4": "MAPPING THREE"}
        assert assoc.is_established
        # One MLLP connection, opened once and never closed or lost on the daemon's side.
        mllp = [line for line in d.log if "MLLP connection from" in line]
        assert len(mllp) == 1, mllp
        assert not any(word in mllp[0] for word in (" closed", " lost", " cancelled")), mllp
    finally:
        await client.close()
        await asyncio.to_thread(assoc.release)
        code = stop_daemon(d)
    assert code == 0, "\n".join(d.log[-30:])
