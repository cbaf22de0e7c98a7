"""The admin's read-only view of the ATNA audit trail's local copy (/atna): what
`mwl-bridge audit list` shows, with its filters (by POST: patient IDs never go into a
URL), each event's audit message, admins only; in httpx and in a real browser."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import FIXTURES, stop_daemon

from .conftest import Console, start_console
from .test_browser import Watched, browser  # noqa: F401 - the module's chromium


@pytest.fixture
def audited(tmp_path) -> Iterator[Console]:
    """The console with the audit trail on (local copy only), an order and a rejected
    order sent, and their events spooled."""
    # (extra lands after admin's tokens: "  page_size" is admin's; two rows a page)
    c = start_console(tmp_path, "  page_size: 2\naudit:\n  enabled: true\n")
    assert c.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
    c.daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    spooled(c, "Order Record", 2)
    yield c
    assert stop_daemon(c.daemon) == 0, "\n".join(c.daemon.log[-30:])


def spooled(c: Console, event: str, n: int) -> None:
    """Wait until the local copy holds ``n`` events of this kind (spooled apart)."""
    deadline = time.monotonic() + 30
    while c.daemon.cli("audit", "list", "--event", event).stdout.count(event) < n:
        assert time.monotonic() < deadline, f"{n} {event} event(s) were not spooled"
        time.sleep(0.2)


def rows(html: str) -> list[str]:
    body = html.split('<table id="atna">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr><td><a href=\"/atna/(\d+)\">", body)


def test_admins_see_the_local_copy_with_the_cli_filters(audited: Console):
    alice, csrf = audited.login("alice")
    spooled(audited, "User Authentication", 1)  # nothing more comes: the pages hold still
    page = alice.get("/atna")
    assert page.status_code == 200
    assert len(rows(page.text)) == 2  # newest first, two a page
    assert "showing 1–2" in page.text


    by_patient = alice.post("/atna", data={"patient": "PAT10001", "csrf_token": csrf})
    assert by_patient.status_code == 200
    (one,) = rows(by_patient.text)  # the applied order; the rejected one has no PID-3
    assert 'name="offset"' not in by_patient.text  # one page: no pager
    assert "110109 Order Record" in by_patient.text and "patient=PAT10001" in by_patient.text
    assert "minor failure" not in by_patient.text.split('<table id="atna">', 1)[1]
    by_event = alice.post("/atna", data={"event": "Order Record", "csrf_token": csrf})
    listed = audited.daemon.cli("audit", "list", "--event", "Order Record").stdout
    assert "(2 of 2 event(s))" in listed  # what the CLI lists, the page lists
    assert rows(by_event.text) == re.findall(r"^(\d+) ", listed, re.M)
    assert "minor failure" in by_event.text
    # Next page: the filters are posted again with the offset (nothing in the URL).
    everything = alice.post("/atna", data={"offset": "2", "csrf_token": csrf})
    assert "showing 3–" in everything.text and rows(everything.text)
    assert not set(rows(everything.text)) & set(rows(page.text))
    last = alice.post("/atna", data={"event": "Application Activity", "csrf_token": csrf})
    assert "110100 Application Activity" in last.text
    assert 'name="offset" value="2"' in page.text and 'action="/atna"' in page.text
    by_sender = alice.post("/atna", data={"ae": "RIS|HOSP", "days": "1", "csrf_token": csrf})
    assert len(rows(by_sender.text)) == 2
    nobody = alice.post("/atna", data={"user": "nobody", "csrf_token": csrf})
    assert rows(nobody.text) == [] and "No audit events" in nobody.text
    bad = alice.post("/atna", data={"days": "seven", "csrf_token": csrf})
    assert bad.status_code == 200 and "Days: a whole number of days" in bad.text

    event = alice.get(f"/atna/{one}")
    assert event.status_code == 200
    shown = html.unescape(event.text)  # the XML, escaped in the page
    assert 'ParticipantObjectID="PAT10001"' in shown and 'csd-code="110109"' in shown
    assert "<AuditMessage" not in event.text  # escaped, not markup
    assert alice.get("/atna/999999").status_code == 404
    # Filtering is a POST form: the patient ID is in no link or form action.
    assert "PAT10001" not in "".join(re.findall(r'(?:href|action)="([^"]*)"',
                                                 by_patient.text))


def test_only_admins_see_it(audited: Console):
    for name in ("vera", "oscar"):
        client, csrf = audited.login(name)
        assert client.get("/atna").status_code == 403
        assert client.get("/atna/1").status_code == 403
        assert client.post("/atna", data={"patient": "PAT10001",
                                          "csrf_token": csrf}).status_code == 403
        assert "/atna" not in client.get("/").text  # not in the navigation either
    alice, _ = audited.login("alice")
    assert alice.post("/atna", data={"patient": "PAT10001"}).status_code == 403  # no CSRF
    assert audited.client("admin").get("/atna").status_code == 200


def test_the_audit_trail_in_the_browser(browser, audited: Console):  # noqa: F811
    w = Watched(browser, audited.url)
    w.login("alice")
    page = w.page
    page.get_by_role("link", name="ATNA").click()
    expect(page.get_by_role("heading", name="ATNA audit trail")).to_be_visible()
    page.get_by_label("Patient ID").fill("PAT10001")
    page.keyboard.press("Enter")
    expect(page.locator("#atna tbody tr")).to_have_count(1)
    expect(page.locator("#atna tbody")).to_contain_text("Order Record")
    assert "PAT10001" not in page.url
    w.shot("12-atna")
    page.locator("#atna tbody tr a").first.click()
    expect(page.locator("#atna-message")).to_contain_text('ParticipantObjectID="PAT10001"')
    w.shot("13-atna-event")
    assert not w.errors, "\n".join(w.errors)
    w.context.close()
