"""The console's mapping playground reads ``\\Xhh\\`` in the pasted message's own MSH-18
set, as the daemon does (issue 14): ``Caf\\XC3A9\\`` in a UTF-8 message is "Café"."""

from __future__ import annotations

from tests.console.conftest import Console
from tests.e2e.conftest import FIXTURES


def _pasted(msh18: str, name: str) -> str:
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_text()
    return (text.replace("DOE^JOHN^QUINCY^JR^DR", name)
            .replace("|AL|NE||", f"|AL|NE||{msh18}"))


def test_hex_escapes_in_a_pasted_message_use_its_msh18(console: Console):
    api = console.client("viewer")
    exp = api.post("/api/mapping/explain",
                   json={"message": _pasted("UNICODE UTF-8", "Caf\\XC3A9\\^Zo\\XC3AB\\")}).json()
    rows = {r["attribute"]: r for r in exp["items"][0]["rows"]}
    assert rows["PatientName"]["value"] == "Café^Zoë"  # not "CafÃ©^ZoÃ«"
    # an ISO 2022 switch in an ASCII message
    exp = api.post("/api/mapping/explain",
                   json={"message": _pasted("", "\\M2442\\;3ED\\C2842\\^TARO")}).json()
    rows = {r["attribute"]: r for r in exp["items"][0]["rows"]}
    assert rows["PatientName"]["value"] == "山田^TARO"


def test_a_pasted_message_with_an_unknown_msh18_is_refused_naming_it(console: Console):
    res = console.client("viewer").post("/api/mapping/explain",
                                        json={"message": _pasted("KLINGON-8", "DOE^JOHN")})
    assert res.status_code == 422 and "MSH-18" in res.json()["error"]["message"]
