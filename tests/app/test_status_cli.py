"""``mwl-bridge status``: instances, roles, the maintenance leader, the outbox."""

from __future__ import annotations

from bridge.app.cli.main import main
from bridge.store import SqliteStore, ha_tx


def test_status_lists_instances_roles_and_the_leader(tmp_path, capsys):
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()

    def beat(name: str, roles: list[str]) -> None:
        me = ha_tx.InstanceInfo(name, "host-" + name, 42, "0.1.0",
                                "2026-01-01T00:00:00.000000Z")
        store.write([lambda tx: ha_tx.heartbeat(tx, me, roles)])

    beat("a", ["mllp", "dicom", "maintenance"])
    store.write([lambda tx: ha_tx.acquire(tx, ha_tx.MAINTENANCE, "a", 30)])
    beat("b", ["mllp", "dicom"])
    beat("c", ["mllp"])
    store.write([lambda tx: ha_tx.stopped(tx, "c")])
    store.close()
    assert main(["--config", str(cfg), "status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("store: sqlite, schema version ")
    assert lines[1].split() == ["INSTANCE", "HOST", "PID", "VERSION", "STARTED", "LAST",
                                "SEEN", "STATE", "ROLES"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:5]}
    assert rows["a"][1:4] == ["host-a", "42", "0.1.0"]
    assert rows["a"][-2:] == ["alive", "mllp,dicom,maintenance"]
    assert rows["b"][-2:] == ["alive", "mllp,dicom"]
    assert rows["c"][-2:] == ["stopped", "-"]
    assert "(3 instance(s) shown, 2 alive)" in out
    assert "maintenance leader: a since " in out and ", live)" in out
    assert "outbox: 0 pending, 0 sent, 0 dead" in out
