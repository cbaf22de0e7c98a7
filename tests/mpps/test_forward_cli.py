"""``mwl-bridge mpps forward list/show/retry`` on a store holding forwarded requests in
each state (as ``mwl-bridge outbox ...`` for the HL7 outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import encode

from bridge.app.cli import main
from bridge.store import SqliteStore, mpps_forward_tx
from bridge.store.mpps_forward_tx import N_CREATE, N_SET, NewForward
from tests.immutable import immutable


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    payload = encode(ds, False, True)
    rows = [NewForward("pacs", "1.2.3.4", op, "1.2.840.10008.1.2.1", payload)
            for op in (N_CREATE, N_SET, N_SET)]
    (ids,) = store.write([lambda tx: mpps_forward_tx.enqueue(tx, rows)])
    store.write([
        lambda tx: mpps_forward_tx.mark_sent(tx, ids[0], 0),
        lambda tx: mpps_forward_tx.mark_dead(
            tx, ids[1], "0x0110 Failure (Processing Failure): no such study", 0x0110),
    ])
    store.close()
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    return cfg


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0
        ) -> tuple[list[str], list[str]]:
    assert main(["--config", str(config), *args]) == code
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def test_list_shows_pending_and_dead_with_the_peer_status(config, capsys):
    out, _ = run(config, capsys, "mpps", "forward", "list")
    assert out[0].split()[:4] == ["ID", "STATE", "DESTINATION", "REQUEST"]
    assert [line.split()[:2] for line in out[1:-1]] == [["2", "dead"], ["3", "pending"]]
    assert "0x0110" in out[1] and "no such study" in out[1]
    assert out[-1] == "(2 shown; 1 pending, 1 sent, 1 dead)"
    everything, _ = run(config, capsys, "mpps", "forward", "list", "--state", "all")
    assert len(everything) == 5
    _, err = run(config, capsys, "mpps", "forward", "list", "--state", "lost", code=2)
    assert "--state" in err[0]


def test_show_prints_the_request_and_its_data_set(config, capsys):
    out, _ = run(config, capsys, "mpps", "forward", "show", "2")
    facts = dict((k.strip(), v.strip()) for k, v in (
        line.split(":", 1) for line in out if line and ":" in line[:19]))
    assert facts["state"] == "dead" and facts["peer status"] == "0x0110"
    assert facts["request"] == "N-SET" and facts["sop instance uid"] == "1.2.3.4"
    assert any("Performed Procedure Step Status" in line for line in out)
    _, err = run(config, capsys, "mpps", "forward", "show", "99", code=1)
    assert err == ["no forwarded MPPS request 99"]


def test_retry_requeues_dead_letters_and_names_what_it_skips(config, capsys):
    out, _ = run(config, capsys, "mpps", "forward", "retry", "--dead")
    assert out == ["re-queued 1 request(s): 2"]
    listing, _ = run(config, capsys, "mpps", "forward", "list")
    assert listing[-1] == "(2 shown; 2 pending, 1 sent, 0 dead)"
    out, err = run(config, capsys, "mpps", "forward", "retry", "1", "42", code=1)
    assert out == ["re-queued 0 request(s)"]
    assert err == ["  1: already sent", "  42: no such request"]
    _, err = run(config, capsys, "mpps", "forward", "retry", code=2)
    assert "--dead" in err[0]



def forwards(config: Path) -> list[mpps_forward_tx.ForwardRow]:
    store = SqliteStore(config.parent / "data" / "bridge.sqlite3")
    try:
        return mpps_forward_tx.list_rows(store, states=[])
    finally:
        store.close()


def test_retry_on_a_read_only_store_says_so_and_requeues_nothing(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = forwards(config)
    assert [(r.id, r.state) for r in before] == [(1, "sent"), (2, "dead"), (3, "pending")]
    with immutable(config.parent / "data" / "bridge.sqlite3"):
        out, err = run(config, capsys, "mpps", "forward", "retry", "2", code=1)
    assert out == []  # not "re-queued 1 request(s): 2"
    assert err == ["store error: OperationalError: attempt to write a readonly database; "
                   "no request is re-queued"]
    assert forwards(config) == before


def test_forward_settings_compose_and_tls_files_resolve_beside_the_config(tmp_path: Path):
    from bridge.app.settings import ConfigError, load_settings

    cfg = tmp_path / "c.yaml"
    cfg.write_text("mpps:\n  forward:\n    destinations:\n"
                   "      - {name: pacs, ae_title: PACS, port: 104,\n"
                   "         tls: {enabled: true, ca_file: tls/pacs-ca.crt}}\n",
                   encoding="utf-8")
    (dest,) = load_settings(cfg, {}).mpps.forward.destinations
    assert dest.tls.ca_file == tmp_path / "tls" / "pacs-ca.crt"
    assert (dest.calling_ae_title, dest.max_attempts, dest.max_associations) == ("", 100, 1)
    cfg.write_text("mpps:\n  forward:\n    destinations:\n"
                   "      - {name: pacs, ae_title: PACS, port: 104}\n"
                   "      - {name: pacs, ae_title: RIS2, port: 105,\n"
                   "         tls: {require_peer_cert: true}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    problems = " ".join(e.problem for e in info.value.errors)
    assert "require_peer_cert is a listener setting" in problems
