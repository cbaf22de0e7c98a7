"""docker-compose.yml can't be run here (no Docker engine): check its structure and
that its settings are valid for, and consistent with, the real config model: two
bridge replicas on one PostgreSQL database, each with its own instance id, host
ports and data volume, and a healthcheck that asks the replica's own /readyz."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from bridge.app.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
_REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    # ${VAR:?message} must be set by the operator; substitute a stand-in.
    text = _REQUIRED_VAR.sub("stand-in-secret", COMPOSE.read_text(encoding="utf-8"))
    assert "${" not in text, "only ${VAR:?...} substitutions are expected"
    return yaml.safe_load(text)


REPLICAS = ("mwl-bridge-1", "mwl-bridge-2")


@pytest.fixture(scope="module", params=REPLICAS)
def replica(request, compose) -> dict:
    return compose["services"][request.param]


@pytest.fixture(scope="module")
def bridge_env(replica) -> dict[str, str]:
    return {k: str(v) for k, v in replica["environment"].items()}


def test_two_bridge_replicas_and_postgresql(compose):
    assert set(compose["services"]) == {"postgres", *REPLICAS}
    for name in REPLICAS:
        assert compose["services"][name]["build"] == "."
        assert compose["services"][name]["restart"] == "unless-stopped"


def test_every_setting_is_valid_for_the_real_config_model(bridge_env):
    assert all(k.startswith("MWL_BRIDGE_") for k in bridge_env)
    s = load_settings(None, bridge_env)  # raises ConfigError naming any bad key
    assert s.store.backend == "postgresql"
    assert s.data_dir == Path("/var/lib/mwl-bridge")


def test_the_replicas_differ_only_in_instance_id(compose):
    envs = [{k: str(v) for k, v in compose["services"][n]["environment"].items()}
            for n in REPLICAS]
    ids = [load_settings(None, env).store.instance_id for env in envs]
    assert all(ids) and len(set(ids)) == len(ids), "each replica names itself, uniquely"
    for env in envs:
        del env["MWL_BRIDGE_STORE__INSTANCE_ID"]
    assert envs[0] == envs[1]
    # The same database for both: active-active on one store.
    assert len({load_settings(None, e).store.postgresql_dsn for e in envs}) == 1


def test_the_healthcheck_asks_the_replicas_own_console(replica, bridge_env):
    s = load_settings(None, bridge_env)
    # The console is on (it serves /readyz) but only on the container's loopback:
    # anonymous there is allowed by the settings model only on loopback, and it is
    # never published.
    assert s.admin.enabled and s.admin.host == "127.0.0.1"
    assert s.admin.allow_anonymous_loopback and s.admin.anonymous
    published = {int(spec.split(":")[2]) for spec in replica["ports"]}
    assert s.admin.port not in published
    check = replica["healthcheck"]
    assert check["test"][0] == "CMD"
    command = " ".join(check["test"][1:])
    assert f"http://127.0.0.1:{s.admin.port}/readyz" in command
    assert command.startswith("python -c "), "the slim image has no curl or wget"
    # The check's own code is valid Python (it only runs inside the container).
    compile(check["test"][-1], "healthcheck", "exec")
    for key in ("interval", "timeout", "start_period"):
        assert re.fullmatch(r"\d+s", check[key]), key
    assert int(check["timeout"][:-1]) < int(check["interval"][:-1])
    assert check["retries"] >= 1


def test_the_healthcheck_passes_against_a_daemon_with_the_replicas_console_settings(
        compose, tmp_path):
    """The replica's admin settings really start the console, and the healthcheck's own
    command exits 0 against it (the store here is SQLite: /readyz asks the same)."""
    replica_env = compose["services"][REPLICAS[0]]["environment"]
    port = _free_port()
    env = {**os.environ, **{k: str(v) for k, v in replica_env.items()
                            if k.startswith("MWL_BRIDGE_ADMIN__")},
           "MWL_BRIDGE_ADMIN__PORT": str(port), "MWL_BRIDGE_DATA_DIR": str(tmp_path),
           "MWL_BRIDGE_MLLP__PORT": "0", "MWL_BRIDGE_DICOM__PORT": "0",
           "MWL_BRIDGE_MAPPING__PATHS": f"[{REPO / 'mappings'}]", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "ready:" in line:
                break
        else:
            pytest.fail("the daemon did not start")
        assert f"console on http://127.0.0.1:{port}" in line
        command = [sys.executable if a == "python" else a
                   for a in compose["services"][REPLICAS[0]]["healthcheck"]["test"][1:]]
        command[-1] = command[-1].replace("8080", str(port))
        assert subprocess.run(command, timeout=10).returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_settings_match_the_postgres_service(compose, bridge_env):
    s = load_settings(None, bridge_env)
    dsn = conninfo_to_dict(s.store.postgresql_dsn)
    pg = compose["services"]["postgres"]
    assert dsn["host"] == "postgres" and dsn["port"] == "5432"
    assert dsn["dbname"] == pg["environment"]["POSTGRES_DB"]
    assert dsn["user"] == pg["environment"]["POSTGRES_USER"]
    assert dsn["password"] == pg["environment"]["POSTGRES_PASSWORD"]


def test_replicas_start_after_postgres_is_healthy(compose, replica):
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_ports_are_the_configured_ones_and_published_on_loopback(replica, bridge_env):
    s = load_settings(None, bridge_env)
    published = {}
    for spec in replica["ports"]:
        host_ip, host_port, container_port = spec.split(":")
        assert host_ip == "127.0.0.1", "loopback unless the operator opens it"
        published[int(container_port)] = int(host_port)
    assert set(published) == {s.mllp.port, s.dicom.port}
    # Inside the container the listeners must bind to all interfaces to be reachable.
    assert s.mllp.host == s.dicom.host == "0.0.0.0"
    exposed = {int(p) for line in DOCKERFILE.read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {s.mllp.port, s.dicom.port}


def test_each_replica_has_its_own_host_ports(compose):
    host_ports = [spec.split(":")[1] for n in REPLICAS for spec in compose["services"][n]["ports"]]
    assert len(host_ports) == 4 and len(set(host_ports)) == 4


def test_each_replica_has_its_own_data_volume(compose):
    data = [next(v.split(":")[0] for v in compose["services"][n]["volumes"]
                 if v.split(":")[1] == "/var/lib/mwl-bridge") for n in REPLICAS]
    assert len(set(data)) == len(data)


def test_mappings_are_mounted_where_the_config_looks(compose, replica, bridge_env):
    s = load_settings(None, bridge_env)
    mounts = {}
    for spec in replica["volumes"]:
        source, target, *_ = spec.split(":")
        mounts[target] = source
    (mapping_dir,) = s.mapping.paths
    assert mounts[str(mapping_dir)] == "./mappings"
    assert (REPO / "mappings").is_dir()
    assert str(s.data_dir) in mounts, "the data folder is a volume"
    assert set(compose["volumes"]) == {
        v.split(":")[0] for svc in compose["services"].values()
        for v in svc.get("volumes", []) if not v.startswith(".")}


def test_dockerfile_installs_the_postgresql_extra_and_runs_serve():
    text = DOCKERFILE.read_text()
    assert "'.[postgresql]'" in text
    assert 'ENTRYPOINT ["mwl-bridge"]' in text and 'CMD ["serve"]' in text
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert re.search(r"^USER (?!root)", text, re.M), "the daemon does not run as root"
