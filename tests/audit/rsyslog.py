"""A real rsyslog as the Audit Record Repository: started by the test with its own
configuration, a TLS listener (RFC 5425, rsyslog's OpenSSL driver, the test PKI's
server certificate) and a UDP listener (RFC 5426) on free loopback ports, each
writing every message it receives, whole, one per line, to a file of its own."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from bridge.audit import AuditTrail
from bridge.audit.message import AuditSource, render
from tests.tlscerts import Pki

RSYSLOGD = Path("/usr/sbin/rsyslogd")
SCHEMA = Path(__file__).with_name("dicom-audit-message.rng")
BOM = "\ufeff"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rsyslog:
    folder: Path
    pki: Pki
    tls_port: int = field(default_factory=free_port)
    udp_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def tls_log(self) -> Path:
        return self.folder / "tls.log"

    @property
    def udp_log(self) -> Path:
        return self.folder / "udp.log"

    def config(self) -> Path:
        work = self.folder / "work"
        work.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "rsyslog.conf"
        conf.write_text(f'''
global(workDirectory="{work}" maxMessageSize="256k"
       defaultNetstreamDriver="ossl"
       defaultNetstreamDriverCAFile="{self.pki.ca}"
       defaultNetstreamDriverCertFile="{self.pki.server.cert}"
       defaultNetstreamDriverKeyFile="{self.pki.server.key}")
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1"
       streamDriver.authMode="anon")
module(load="imudp")
template(name="whole" type="string" string="%rawmsg%\\n")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="tls")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="udp")
ruleset(name="tls") {{ action(type="omfile" file="{self.tls_log}" template="whole") }}
ruleset(name="udp") {{ action(type="omfile" file="{self.udp_log}" template="whole") }}
''', encoding="utf-8")
        return conf

    def start(self) -> None:
        conf = self.config()
        self.proc = subprocess.Popen(
            [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:  # listening once a TLS connection is accepted
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stdout.read() if self.proc.stdout else b""
                    raise RuntimeError(f"rsyslogd did not start: {out!r}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self, which: str = "tls") -> list[etree._Element]:
        """Every audit message received so far, parsed (the syslog header checked)."""
        path = self.tls_log if which == "tls" else self.udp_log
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            header, sep, xml = line.partition(" IHE+RFC-3881 - ")
            assert sep, f"not an ATNA syslog message: {line[:120]!r}"
            assert header.startswith("<85>1 "), header  # authpriv.notice, RFC 5424
            out.append(etree.fromstring(xml.lstrip(BOM).encode("utf-8")))
        return out

    def wait_for(self, predicate: object, which: str = "tls", timeout_s: float = 60
                 ) -> list[etree._Element]:
        """The messages once ``predicate(messages)`` holds (polled; fails on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.messages(which)
            if predicate(got):  # type: ignore[operator]
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog ({which}) got {len(got)} message(s): "
                                     + "; ".join(summary(m) for m in got))
            time.sleep(0.2)


_schema: etree.RelaxNG | None = None


def validate(message: etree._Element) -> None:
    """Fails unless ``message`` is valid per the DICOM audit message schema."""
    global _schema
    if _schema is None:
        _schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    if not _schema.validate(message):
        raise AssertionError(f"{_schema.error_log}\n{etree.tostring(message).decode()}")


def summary(m: etree._Element) -> str:
    ident = m.find("EventIdentification")
    assert ident is not None
    event = ident.find("EventID")
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    return (f"{event.get('csd-code') if event is not None else '?'}"
            f"/{','.join(str(t) for t in types)}/{ident.get('EventOutcomeIndicator')}")


def built_events(trail: AuditTrail, source: AuditSource) -> list[etree._Element]:
    """The events ``trail`` holds, built (a builder runs as the spool thread would run
    it), rendered as ``source`` and each checked against the schema."""
    out = []
    for entry in trail.take(1000, 0.01):
        event = entry if not callable(entry) else entry(trail.local)
        assert event is not None
        m = etree.fromstring(render(event, source))
        validate(m)
        out.append(m)
    return out
