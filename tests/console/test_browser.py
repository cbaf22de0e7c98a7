"""The web UI in a real browser: Playwright for Python driving Debian's chromium
(/usr/bin/chromium; .ci/run installs it, and no browser is downloaded). The test
logs in, sends an order over MLLP and watches it appear on the dashboard and in
the worklist, cancels it on its page, then checks with DCMTK's findscu that the
modality no longer sees it and that the MLLP receiver standing in for the RIS got
the CA status message. Any error in the browser's console fails the test.
Screenshots of each page go to tests/artifacts/console/."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.e2e.conftest import DCMTK, FIXTURES, REPO, dcmtk_env, stop_daemon
from tests.e2e.test_mpps_roundtrip import outbound_config
from tests.outbound.mllp_receiver import MllpReceiver

from .conftest import PASSWORDS, Console, start_console

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts" / "console"
ACCESSION = "ACC20261128001"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is needed: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url,
                                           viewport={"width": 1366, "height": 768})
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("dialog", lambda dialog: dialog.accept())

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text} at {msg.location}")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def login(self, name: str) -> None:
        self.page.goto("/login")
        self.page.get_by_label("User").fill(name)
        self.page.get_by_label("Password").fill(PASSWORDS[name])
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("heading", name="Dashboard")).to_be_visible()


def findscu_statuses(c: Console, tmp: Path) -> str:
    res = subprocess.run(
        [str(DCMTK / "findscu"), "-v", "-W", "-aec", c.daemon.ae_title, "-k", "AccessionNumber",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
         "127.0.0.1", str(c.daemon.dicom_port)],
        capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


@pytest.fixture
def site(tmp_path) -> Iterator[tuple[Console, MllpReceiver]]:
    ris = MllpReceiver()
    ris.start()
    c = start_console(tmp_path, outbound_config(ris.port))
    yield c, ris
    code = stop_daemon(c.daemon)
    ris.stop()
    assert code == 0, "\n".join(c.daemon.log[-30:])


def test_order_to_dashboard_worklist_and_cancel_in_the_browser(browser, site, tmp_path):
    c, ris = site
    w = Watched(browser, c.url)
    page = w.page
    page.goto("/login")
    w.shot("01-login")
    w.login("oscar")

    # An order over MLLP shows up on the dashboard without a reload (polling).
    expect(page.locator('[data-k="worklist_items"]')).to_have_text("0")
    res = c.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    assert res.returncode == 0, res.stdout
    expect(page.locator('[data-k="worklist_items"]')).to_have_text("1", timeout=15_000)
    expect(page.locator('[data-k="messages.1h.accepted"]')).to_have_text("1")
    w.shot("02-dashboard")

    # The worklist: search by accession (a POST form: nothing of it in the URL).
    page.get_by_role("link", name="Worklist").click()
    page.get_by_label("Accession").fill(ACCESSION)
    page.keyboard.press("Enter")
    row = page.locator("#worklist tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("DOE^JOHN")
    assert ACCESSION not in page.url and "PAT10001" not in page.url
    w.shot("03-worklist")

    # The item page; cancel it with the keyboard.
    page.get_by_role("link", name=ACCESSION).click()
    expect(page.locator("#item-status")).to_have_text("SCHEDULED")
    before = findscu_statuses(c, tmp_path)
    assert ACCESSION in before and "(Pending)" in before, before
    page.locator("#reason-cancel").fill("patient left")
    page.locator("#do-cancel").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#item-status")).to_have_text("CANCELED")
    expect(page.get_by_role("status")).to_contain_text("status message(s) queued for the RIS")
    w.shot("04-item-canceled")

    # The modality no longer sees it; the RIS got ORC-5 CA.
    out = findscu_statuses(c, tmp_path)
    assert ACCESSION not in out and "(Pending)" not in out, out
    assert re.search(r"Final Find Response \(Success\)", out), out  # findscu's own verdict
    (ca,) = ris.wait_for(1)
    assert (ca.field("ORC", 1), ca.field("ORC", 5), ca.field("OBR", 18)) == (
        "SC", "CA", ACCESSION)

    # The other pages: messages (segment by segment), outbox, MPPS, mapping playground.
    page.get_by_role("link", name="Messages").click()
    page.locator("#messages tbody tr a").first.click()
    expect(page.locator("ol.hl7 .fld[title='PID-3']").first).to_be_visible()
    w.shot("05-message")
    page.get_by_role("link", name="Outbox").click()
    expect(page.locator("#outbox tbody tr")).to_have_count(1)
    w.shot("06-outbox")
    page.get_by_role("link", name="MPPS").click()
    w.shot("07-mpps")
    page.get_by_role("link", name="Mapping").click()
    page.get_by_label("HL7 message").fill((FIXTURES / "orm-o01-ihe-ct.hl7").read_text())
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("table.explain").first).to_contain_text("AccessionNumber")
    w.shot("08-mapping")

    # A dead letter: its reason, and a replay.
    c.daemon.send(FIXTURES / "orm-missing-pid3.hl7")
    page.goto("/messages?outcome=rejected")
    page.locator("#messages tbody tr a").first.click()
    expect(page.locator("#reason")).to_contain_text("Patient ID missing (PID-3)")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("replayed as message")
    w.shot("09-dead-letter")

    # The admin sees the audit trail of the cancel.
    admin = Watched(browser, c.url)
    admin.login("alice")
    admin.page.get_by_role("link", name="Audit").click()
    expect(admin.page.locator("#audit tbody")).to_contain_text("step.cancel")
    expect(admin.page.locator("#audit tbody")).to_contain_text("message.replay")
    admin.shot("10-audit")
    admin.page.get_by_role("link", name="Config").click()
    admin.shot("11-config")

    assert not w.errors + admin.errors, "\n".join(w.errors + admin.errors)
    w.context.close()
    admin.context.close()


def test_a_bad_order_is_fixed_in_the_mapping_and_replayed_to_aa(browser, tmp_path):
    """The night-call story: the RIS sends the Patient ID in PID-2, which the mapping
    does not read; the order is rejected (AE). The operator opens the dead letter,
    sees the reason, fixes the mapping file (a copy of mappings/ that this test
    owns), replays it from the message's page, and gets AA: the item is on the
    worklist."""
    import shutil

    from tests.e2e.conftest import start_daemon, write_config

    from .conftest import admin_config, console_url

    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings, ignore=shutil.ignore_patterns("cases"))
    cfg = write_config(tmp_path, admin_config())
    cfg.write_text(cfg.read_text().replace(str(REPO / "mappings"), str(mappings)))
    d = start_daemon(cfg, tmp_path / "data")
    try:
        c = Console(d, console_url(d))
        bad = tmp_path / "orm-patient-id-in-pid2.hl7"
        bad.write_bytes((FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(
            b"PID|1||PAT10001^^^HOSP^MR~9876543210^^^NHS^NH~A-77812^^^OLDRIS^PI||",
            b"PID|1|PAT10001^^^HOSP^MR|||"))
        assert c.daemon.send(bad).returncode == 1  # AE

        w = Watched(browser, c.url)
        page = w.page
        w.login("oscar")
        expect(page.locator('[data-k="dead_letters"]')).to_have_text("1")
        page.get_by_role("link", name="rejected messages").click()
        page.locator("#messages tbody tr a").first.click()
        expect(page.locator("#reason")).to_contain_text("Patient ID missing (PID-3)")
        expect(page.locator("ol.hl7 .fld[title='PID-2']").first).to_contain_text("PAT10001")
        w.shot("12-dead-letter-before-fix")

        # The fix: the mapping also reads PID-2 (the files on disk; replay loads them).
        mapping = mappings / "ihe-swf-orm-v231.yaml"
        text = mapping.read_text()
        old = "from: PID-3[where .4.1 = $primary_authority].1 | PID-3.1\n"
        assert old in text
        mapping.write_text(text.replace(old, old[:-1] + " | PID-2.1\n"))

        page.get_by_role("button", name="Replay").click()
        flash = page.get_by_role("status")
        expect(flash).to_contain_text("replayed as message")
        expect(flash).to_contain_text("AA")
        expect(page.locator("#replays")).to_contain_text("AA")
        w.shot("13-dead-letter-replayed")

        page.get_by_role("link", name="Worklist").click()
        page.get_by_label("Accession").fill(ACCESSION)
        page.keyboard.press("Enter")
        row = page.locator("#worklist tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("PAT10001")
        page.get_by_role("link", name=ACCESSION).click()
        expect(page.locator("#status-history")).to_contain_text("SCHEDULED")
        w.shot("14-replayed-item")
        assert not w.errors, "\n".join(w.errors)
        w.context.close()
    finally:
        assert stop_daemon(d) == 0
