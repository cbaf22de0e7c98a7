"""docker-compose.yml can't be run here (no Docker engine): check its structure and
that its settings are valid for, and consistent with, the real config model."""

from __future__ import annotations

import re
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


@pytest.fixture(scope="module")
def bridge_env(compose) -> dict[str, str]:
    env = compose["services"]["mwl-bridge"]["environment"]
    return {k: str(v) for k, v in env.items()}


def test_every_setting_is_valid_for_the_real_config_model(bridge_env):
    assert all(k.startswith("MWL_BRIDGE_") for k in bridge_env)
    s = load_settings(None, bridge_env)  # raises ConfigError naming any bad key
    assert s.store.backend == "postgresql"
    assert s.data_dir == Path("/var/lib/mwl-bridge")


def test_database_settings_match_the_postgres_service(compose, bridge_env):
    s = load_settings(None, bridge_env)
    dsn = conninfo_to_dict(s.store.postgresql_dsn)
    pg = compose["services"]["postgres"]
    assert dsn["host"] == "postgres" and dsn["port"] == "5432"
    assert dsn["dbname"] == pg["environment"]["POSTGRES_DB"]
    assert dsn["user"] == pg["environment"]["POSTGRES_USER"]
    assert dsn["password"] == pg["environment"]["POSTGRES_PASSWORD"]
    bridge = compose["services"]["mwl-bridge"]
    assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_ports_are_the_configured_ones_and_published_on_loopback(compose, bridge_env):
    s = load_settings(None, bridge_env)
    published = {}
    for spec in compose["services"]["mwl-bridge"]["ports"]:
        host_ip, host_port, container_port = spec.split(":")
        assert host_ip == "127.0.0.1", "loopback unless the operator opens it"
        published[int(container_port)] = int(host_port)
    assert set(published) == {s.mllp.port, s.dicom.port}
    # Inside the container the listeners must bind to all interfaces to be reachable.
    assert s.mllp.host == s.dicom.host == "0.0.0.0"
    exposed = {int(p) for line in DOCKERFILE.read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {s.mllp.port, s.dicom.port}


def test_mappings_are_mounted_where_the_config_looks(compose, bridge_env):
    s = load_settings(None, bridge_env)
    mounts = {}
    for spec in compose["services"]["mwl-bridge"]["volumes"]:
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
