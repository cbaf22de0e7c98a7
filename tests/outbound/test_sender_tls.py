"""Status messages over MLLP with TLS, against a real TLS receiver (asyncio, mutual TLS).

Certificates are made in the test (tests/tlscerts.py). The destinations come from
a real config file, so path resolution and validation are part of what is tested.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.app.settings import ConfigError, Settings, load_settings
from bridge.outbound.sender import OutboxSender
from bridge.outbound.settings import OutboundDestination
from bridge.store import SqliteStore, Store, outbox_tx
from bridge.store.outbox_tx import NewMessage
from bridge.tls import TlsConfigError
from tests.tlscerts import Pki, make_pki
from tests.waiting import until

from .conftest import pending, running, states
from .tls_receiver import TlsMllpReceiver

REPO = Path(__file__).resolve().parents[2]
PATIENT = "DOE^JANE"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(folder: Path, destinations: str, **sections: str) -> Path:
    """A config file in ``folder`` whose data_dir is ``folder`` (the sqlite_store's file)."""
    cfg = folder / "mwl-bridge.yaml"
    text = (f"data_dir: {folder}\n"
            f"mapping:\n  paths: [{REPO / 'mappings'}]\n"
            f"outbound:\n  profiles: [{REPO / 'mappings' / 'outbound'}]\n"
            f"  destinations:\n{destinations}")
    cfg.write_text(text + "".join(sections.values()), encoding="utf-8")
    return cfg


def tls_destination(port: int, tls: str, name: str = "ris") -> str:
    return (f"    - name: {name}\n      host: 127.0.0.1\n      port: {port}\n"
            "      connect_timeout_s: 5\n      ack_timeout_s: 5\n"
            "      backoff_initial_s: 0.05\n      backoff_max_s: 0.2\n"
            f"      tls:\n{tls}")


def client_tls(pki: Pki, *, ca: Path | None = None, pair: str | None = "client",
               extra: str = "") -> str:
    lines = ["enabled: true", f"ca_file: {ca or pki.ca}"]
    if pair is not None:
        chosen = getattr(pki, pair)
        lines += [f"cert_file: {chosen.cert}", f"key_file: {chosen.key}"]
    return "".join(f"        {line}\n" for line in [*lines, *filter(None, [extra])])


def destinations(cfg: Path) -> list[OutboundDestination]:
    settings: Settings = load_settings(cfg, {})
    return settings.outbound.destinations


def queue_status(store: Store, events: list[str]) -> None:
    """Status messages of order A with patient data in them (which must stay out of logs)."""
    rows = [NewMessage(
        destination="ris", order_key="order:A", event=e, message_type="ORM^O01",
        control_id=f"A-{e}",
        payload=(f"MSH|^~\\&|MWLBRIDGE|RAD|RIS|HOSP|20261128093000||ORM^O01|A-{e}|P|2.3.1\r"
                 f"PID|1||PAT10001||{PATIENT}\rORC|SC|A|||{e}\r").encode()) for e in events]
    (ids,) = store.write([lambda tx: outbox_tx.enqueue(tx, rows)])
    assert not isinstance(ids, BaseException), ids


def recorded_attempts(store: Store) -> int:
    """Failed attempts committed to the store (``outbox_tx.mark_retry``): waited on rather
    than ``sender.stats.retries``, which counts a retry before its outcome is committed."""
    (message,) = outbox_tx.list_messages(store)
    return message.attempts


async def test_status_messages_reach_a_mutual_tls_receiver(tmp_path, pki, sqlite_store):
    receiver = TlsMllpReceiver(pki.server, pki.ca)
    await receiver.start()
    # Relative certificate paths resolve against the config file's folder.
    (tmp_path / "tls").mkdir()
    for source, name in ((pki.ca, "ca.crt"), (pki.client.cert, "bridge.crt"),
                         (pki.client.key, "bridge.key")):
        (tmp_path / "tls" / name).write_bytes(source.read_bytes())
    (tmp_path / "tls" / "bridge.key").chmod(0o600)  # bridge.tls refuses a key others may read
    cfg = config(tmp_path, tls_destination(receiver.port, (
        "        enabled: true\n        ca_file: tls/ca.crt\n"
        "        cert_file: tls/bridge.crt\n        key_file: tls/bridge.key\n"
        "        server_hostname: localhost\n")))
    (dest,) = destinations(cfg)
    assert dest.tls.ca_file == tmp_path / "tls" / "ca.crt"
    queue_status(sqlite_store, ["IP", "CM"])
    sender = OutboxSender(sqlite_store, [dest], poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: pending(sqlite_store) == 0)
    finally:
        await sender.stop()
        await receiver.close()
    assert states(sqlite_store) == {"A-IP": "sent", "A-CM": "sent"}
    assert [m.control_id for m in receiver.messages] == ["A-IP", "A-CM"]
    assert b"ORC|SC|A|||CM" in receiver.messages[1].payload
    # The receiver saw our client certificate (CN=CONSOLE, signed by its CA).
    assert set(receiver.client_names) == {"CONSOLE"}
    assert all(m.ack.startswith(b"MSH") for m in outbox_tx.list_messages(sqlite_store))


async def test_receiver_from_another_ca_is_refused_and_the_message_waits(
        tmp_path, pki, sqlite_store, caplog, capsys):
    """The receiver's certificate is signed by a CA we don't trust: no message goes out,
    it stays pending with the reason (in `outbox list` too), the log names no patient
    data; once the receiver presents a trusted certificate, the same message is sent."""
    impostor = TlsMllpReceiver(pki.outsider, pki.ca)
    port = await impostor.start()
    cfg = config(tmp_path, tls_destination(port, client_tls(pki)))
    queue_status(sqlite_store, ["IP"])
    caplog.set_level(logging.DEBUG, logger="bridge")
    sender = OutboxSender(sqlite_store, destinations(cfg), poll_interval_s=0.2)
    async with running(sender):
        await until(lambda: recorded_attempts(sqlite_store) >= 2)
        await impostor.close()
        (waiting,) = outbox_tx.list_messages(sqlite_store)
        assert (waiting.state, waiting.control_id) == ("pending", "A-IP")
        assert waiting.attempts >= 2
        assert waiting.last_error == ("TLS handshake failed: CERTIFICATE_VERIFY_FAILED: "
                                      "unable to get local issuer certificate")
        assert impostor.messages == [] and impostor.sessions == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert ("status message A-IP to ris not delivered (TLS handshake failed: "
                "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate); retry"
                ) in warnings[0]
        assert "DOE" not in caplog.text and "PAT10001" not in caplog.text

        assert main(["--config", str(cfg), "outbox", "list"]) == 0
        row = capsys.readouterr().out.splitlines()[1]
        assert row.split()[:6] == ["1", "pending", "ris", "IP", "ORM^O01", "A-IP"]
        assert row.endswith("TLS handshake failed: CERTIFICATE_VERIFY_FAILED: unable t...")

        # The right receiver on the same port: the waiting message is delivered.
        receiver = TlsMllpReceiver(pki.server, pki.ca, port=port)
        await receiver.start()
        try:
            await until(lambda: pending(sqlite_store) == 0)
        finally:
            await receiver.close()
    assert states(sqlite_store) == {"A-IP": "sent"}
    assert [m.control_id for m in receiver.messages] == ["A-IP"]


@pytest.mark.parametrize("pair", [None, "outsider"], ids=["no-client-cert", "untrusted-cert"])
async def test_receiver_refusing_our_client_certificate_is_retried(tmp_path, pki,
                                                                   sqlite_store, pair):
    receiver = TlsMllpReceiver(pki.server, pki.ca)
    await receiver.start()
    cfg = config(tmp_path, tls_destination(receiver.port, client_tls(pki, pair=pair)))
    queue_status(sqlite_store, ["IP"])
    sender = OutboxSender(sqlite_store, destinations(cfg), poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: recorded_attempts(sqlite_store) >= 2)
    finally:
        await sender.stop()
        await receiver.close()
    (waiting,) = outbox_tx.list_messages(sqlite_store)
    assert waiting.state == "pending" and waiting.attempts >= 2
    # TLS 1.3: the refusal arrives after our side of the handshake, as a closed connection.
    assert waiting.last_error == ("the peer closed the connection before replying (a TLS "
                                  "receiver does this when it refuses our client certificate)")
    assert receiver.messages == [] and receiver.sessions == 0


async def test_receiver_certificate_must_name_the_server_hostname(tmp_path, pki, sqlite_store):
    receiver = TlsMllpReceiver(pki.server, pki.ca)
    await receiver.start()
    cfg = config(tmp_path, tls_destination(
        receiver.port, client_tls(pki, extra="server_hostname: ris.example.org")))
    queue_status(sqlite_store, ["IP"])
    sender = OutboxSender(sqlite_store, destinations(cfg), poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: recorded_attempts(sqlite_store) >= 1)
    finally:
        await sender.stop()
        await receiver.close()
    (waiting,) = outbox_tx.list_messages(sqlite_store)
    assert waiting.last_error == (
        "TLS handshake failed: CERTIFICATE_VERIFY_FAILED: Hostname mismatch, certificate is "
        "not valid for 'ris.example.org'.")


# --- configuration errors: file, line and key; or the setting and the file -------------


@pytest.mark.parametrize(("tls", "line", "message"), [
    ("        enabled: true\n        cert_file: a.crt\n", 14,
     "outbound.destinations[0].tls: Value error, cert_file and key_file go together (our "
     "client certificate for mutual TLS)"),
    ("        enabled: true\n        require_peer_cert: false\n", 14,
     "outbound.destinations[0].tls: Value error, require_peer_cert is a listener setting; a "
     "destination always verifies the receiver's certificate (ca_file)"),
    ("        enabled: true\n        min_version: '1.1'\n", 16,
     "outbound.destinations[0].tls.min_version: Input should be '1.2' or '1.3'"),
    ("        enabled: true\n        ca: x.crt\n", 16,
     "outbound.destinations[0].tls.ca: Extra inputs are not permitted"),
])
def test_bad_destination_tls_settings_name_file_line_and_key(tmp_path, tls, line, message):
    cfg = config(tmp_path, tls_destination(2576, tls))
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    (err,) = info.value.errors
    assert str(err) == f"{cfg}:{line}: {message}"


def unreadable_ca_config(tmp_path: Path, pki: Pki) -> Path:
    """Two destinations: the first one is off; the second one's CA file does not exist."""
    off = tls_destination(2576, client_tls(pki, ca=tmp_path / "nope.crt"), name="old-ris")
    off = off.replace("      port: 2576\n", "      port: 2576\n      enabled: false\n")
    return config(tmp_path, off + tls_destination(2577, client_tls(pki, ca=tmp_path / "ca.crt")))


def test_unreadable_tls_file_is_reported_by_check_config(tmp_path, pki, capsys):
    cfg = unreadable_ca_config(tmp_path, pki)
    assert main(["--config", str(cfg), "check-config"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"TLS configuration error: outbound.destinations[1].tls.ca_file: {tmp_path / 'ca.crt'} "
        "is not a readable file")
    # The sender builds the same contexts when the daemon starts.
    with pytest.raises(TlsConfigError, match=r"^outbound\.destinations\[1\]\.tls\.ca_file: "):
        OutboxSender(SqliteStore(tmp_path / "unused.sqlite3"), destinations(cfg),
                     poll_interval_s=1)


def test_unreadable_tls_file_stops_serve_at_start(tmp_path, pki):
    # A subprocess: `serve` installs logging and signal handlers of its own.
    cfg = unreadable_ca_config(tmp_path, pki)
    done = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "serve"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"TLS configuration error: outbound.destinations[1].tls.ca_file: {tmp_path / 'ca.crt'} "
        "is not a readable file")


def test_the_example_destination_with_tls_loads(tmp_path):
    """The commented destination in mwl-bridge.example.yaml, uncommented, is valid."""
    lines = (REPO / "mwl-bridge.example.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("  # destinations:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append(line.replace("  # ", "  ", 1).split(" # ")[0].rstrip())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("outbound:\n" + "\n".join(block) + "\n", encoding="utf-8")
    (dest,) = load_settings(cfg, {}).outbound.destinations
    assert dest.tls.enabled is False
    assert dest.tls.ca_file == tmp_path / "tls" / "ris-ca.crt"
    assert dest.tls.key_file == tmp_path / "tls" / "mwl-bridge-client.key"
    assert (dest.tls.check_hostname, dest.tls.server_hostname) == (True, "")
