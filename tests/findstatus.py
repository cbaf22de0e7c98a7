"""The final status of a ``findscu -v`` run, read from its log.

DCMTK's findscu exits 0 whatever the C-FIND status, so an exit code of 0 does not tell an
empty answer from a failed query. With ``-v`` it prints one line per query, e.g.
``Received Final Find Response (Success)``, ``(Failed: UnableToProcess)``,
``(Error: DataSetDoesNotMatchSOPClass)`` or ``(Cancel: MatchingTerminatedDueToCancelRequest)``.
"""

from __future__ import annotations

import re

FINAL = re.compile(r"Received Final Find Response \(([^)\r\n]*)\)")
# With -d findscu prints the bare line, then the response's dump with its status:
# "DIMSE Status                  : 0x0000: Success: Matching is complete".
FINAL_DEBUG = re.compile(r"Received Final Find Response\s*\n(?:.*\n)*?.*DIMSE Status\s*: "
                         r"0x[0-9A-Fa-f]{4}: ([^:\r\n]+)")
SUCCESS = "Success"


def final_status(log: str) -> str:
    """The one final status in ``log``; fails the test if there is none or more than one."""
    found = FINAL.findall(log) or FINAL_DEBUG.findall(log)
    assert len(found) == 1, f"expected one final C-FIND status (run findscu with -v):\n{log}"
    return found[0]


def check_status(log: str, expected: str = SUCCESS) -> None:
    """Fail unless the query ended with ``expected`` (Success unless the test names a failure)."""
    status = final_status(log)
    assert status == expected, f"C-FIND ended with {status!r}, expected {expected!r}:\n{log}"
