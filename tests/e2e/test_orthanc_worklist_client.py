"""Orthanc (Debian's /usr/sbin/Orthanc) as a modality querying the worklist (issue 14):
its REST call ``POST /modalities/{id}/find-worklist`` makes a real C-FIND association
to the daemon; Orthanc runs with its own JSON config on free loopback ports.

What a console's own character set does to names (docs/conformance-statement.md,
section 5): Orthanc's default ``DefaultEncoding: Latin1`` sends ``ISO_IR 100`` in its
query and re-encodes every answer into Latin-1 for its JSON, dropping what Latin-1
lacks. A name Latin-1 holds is answered in ISO_IR 100 and arrives whole; with the
console's ``unencodable: transliterate`` a Polish name arrives as ASCII look-alikes
("Wisniewska", not Orthanc's "Winiewska"); an Orthanc set to UTF-8 gets every name,
three PN component groups included.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    FIXTURES,
    RunningDaemon,
    start_daemon,
    stop_daemon,
    write_config,
)
from tests.reconcile.orthanc import RunningOrthanc, orthanc

ORDERS = ("orm-o01-latin1-mr.hl7", "orm-o01-two-groups.hl7",
          "orm-o01-japanese-name-groups.hl7")
QUERY = {"PatientName": "", "AccessionNumber": "", "PatientID": "",
         "ScheduledProcedureStepSequence": [{"Modality": "", "ScheduledStationAETitle": ""}]}


def _call(pacs: RunningOrthanc, method: str, path: str, body: object) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}{path}",
                                     data=json.dumps(body).encode(), method=method)
    with urllib.request.urlopen(request, timeout=60) as rsp:
        return json.loads(rsp.read() or b"null")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("orthanc-client")
    # Orthanc's calling AE is ORTHANC; known, without a set of its own, transliterating.
    cfg = write_config(tmp)
    text = cfg.read_text(encoding="utf-8").replace(
        "  ae_title: MWLBRIDGE\n",
        "  ae_title: MWLBRIDGE\n  known_aes:\n    ORTHANC: {unencodable: transliterate}\n")
    cfg.write_text(text, encoding="utf-8")
    d = start_daemon(cfg, tmp / "data")
    sent = d.send(*(FIXTURES / name for name in ORDERS))
    assert sent.returncode == 0 and sent.stdout.count(": AA") == len(ORDERS), sent.stdout
    yield d
    assert stop_daemon(d) == 0, "\n".join(d.log[-30:])


def _worklist(daemon: RunningDaemon, tmp: Path, *, encoding: str | None,
              ae_title: str = "ORTHANC") -> dict[str, dict[str, Any]]:
    extra = {"DefaultEncoding": encoding} if encoding else {}
    with orthanc(tmp, ae_title=ae_title, extra=extra) as pacs:
        _call(pacs, "PUT", "/modalities/mwl",
              {"AET": daemon.ae_title, "Host": "127.0.0.1", "Port": daemon.dicom_port})
        answers = _call(pacs, "POST", "/modalities/mwl/find-worklist", QUERY)
    assert isinstance(answers, list)
    return {a["AccessionNumber"]: a for a in answers}


def test_orthanc_latin1_gets_latin1_names_whole_and_others_transliterated(daemon, tmp_path):
    got = _worklist(daemon, tmp_path, encoding=None)  # Orthanc's default: Latin1
    assert sorted(got) == ["ACC20261129301", "ACC20261129302", "ACC20261129401",
                           "KL2026112800817"]
    assert got["KL2026112800817"]["PatientName"] == "Müller^Jürgen^Heinz^Dr."
    assert got["ACC20261129301"]["PatientName"] == "Wisniewska^Zofia^Maria"
    assert got["ACC20261129401"]["PatientName"].startswith("Yamada^Tarou=")
    step = got["KL2026112800817"]["ScheduledProcedureStepSequence"][0]
    assert step["Modality"] == "MR"
    assert any("transliterated to ASCII" in line for line in daemon.log)


def test_orthanc_in_utf8_gets_every_name_and_all_three_groups(daemon, tmp_path):
    got = _worklist(daemon, tmp_path, encoding="Utf8")
    assert got["ACC20261129301"]["PatientName"] == "Wiśniewska^Zofia^Maria"
    assert got["ACC20261129401"]["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert got["KL2026112800817"]["PatientName"] == "Müller^Jürgen^Heinz^Dr."
