"""docker-compose.yml, its override files and the images' Dockerfiles, checked
statically against the real config model: two bridge replicas on one PostgreSQL
database, each with its own instance id, host ports and data volume; Orthanc as the
PACS; a healthcheck that asks the replica's own /readyz; secrets as files. The stack
itself runs in tests/deploy/test_compose_stack.py (when a container engine is there)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from bridge.app.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
OVERRIDE = REPO / "docker-compose.override.yml"
CI_OVERRIDE = REPO / "docker-compose.ci.yml"
DOCKERFILE = REPO / "Dockerfile"
BRIDGE_CONFIG = REPO / "deploy" / "bridge" / "mwl-bridge.yaml"
# ${VAR:?message} must be set by the operator (a stand-in here); ${VAR:-default}
# takes its default.
_REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]*\}")
_DEFAULT_VAR = re.compile(r"\$\{(\w+):-([^}]*)\}")
CI_PORT = "40000"


def _load(path: Path, required: str = "stand-in-secret") -> dict[str, Any]:
    text = _REQUIRED_VAR.sub(required, path.read_text(encoding="utf-8"))
    text = _DEFAULT_VAR.sub(lambda m: m.group(2), text)
    assert "${" not in text, "only ${VAR:?...} and ${VAR:-...} substitutions are expected"
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    return _load(OVERRIDE)


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return _load(CI_OVERRIDE, CI_PORT)


REPLICAS = ("mwl-bridge-1", "mwl-bridge-2")


@pytest.fixture(scope="module", params=REPLICAS)
def replica_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def replica(replica_name: str, compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"][replica_name])


@pytest.fixture(scope="module")
def bridge_env(replica: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in replica["environment"].items()}


def _healthcheck() -> list[str]:
    """The bridge image's HEALTHCHECK command (exec form)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    command = json.loads(line.split(" CMD ", 1)[1])
    assert isinstance(command, list)
    return [str(a) for a in command]


def test_two_bridge_replicas_postgresql_and_orthanc(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", *REPLICAS, "orthanc"}
    for name in REPLICAS:
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["image"] == "mwl-bridge:local"
        assert service["restart"] == "unless-stopped"
    assert compose["services"]["postgres"]["build"] == "deploy/postgres"
    assert compose["services"]["orthanc"]["build"] == "deploy/orthanc"


def test_every_setting_is_valid_for_the_real_config_model(bridge_env: dict[str, str]) -> None:
    assert all(k.startswith("MWL_BRIDGE_") for k in bridge_env)
    s = load_settings(None, bridge_env)  # raises ConfigError naming any bad key
    assert s.store.backend == "postgresql"
    assert s.data_dir == Path("/var/lib/mwl-bridge")


def test_the_mounted_config_file_is_valid_with_the_environment_over_it(
        replica: dict[str, Any], bridge_env: dict[str, str]) -> None:
    mounts = dict(reversed(v.split(":")[:2]) for v in replica["volumes"])
    assert mounts["/etc/mwl-bridge/mwl-bridge.yaml"] == "./deploy/bridge/mwl-bridge.yaml"
    s = load_settings(BRIDGE_CONFIG, bridge_env)
    assert s.store.backend == "postgresql" and s.admin.enabled
    # The image reads the same file from the same place.
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "COPY deploy/bridge/mwl-bridge.yaml /etc/mwl-bridge/mwl-bridge.yaml" in text
    assert 'ENTRYPOINT ["mwl-bridge", "--config", "/etc/mwl-bridge/mwl-bridge.yaml"]' in text


def test_the_replicas_differ_only_in_instance_id(compose: dict[str, Any]) -> None:
    envs = [{k: str(v) for k, v in compose["services"][n]["environment"].items()}
            for n in REPLICAS]
    ids = [load_settings(None, env).store.instance_id for env in envs]
    assert all(ids) and len(set(ids)) == len(ids), "each replica names itself, uniquely"
    for env in envs:
        del env["MWL_BRIDGE_STORE__INSTANCE_ID"]
    assert envs[0] == envs[1]
    # The same database for both: active-active on one store.
    assert len({load_settings(None, e).store.postgresql_dsn for e in envs}) == 1


def test_the_healthcheck_asks_the_replicas_own_console(
        replica: dict[str, Any], replica_name: str, override: dict[str, Any],
        bridge_env: dict[str, str]) -> None:
    s = load_settings(None, bridge_env)
    # The console is on (it serves /readyz) but only on the container's loopback:
    # anonymous there is allowed by the settings model only on loopback, and it is
    # never published.
    assert s.admin.enabled and s.admin.host == "127.0.0.1"
    assert s.admin.allow_anonymous_loopback and s.admin.anonymous
    published = {int(spec.split(":")[2]) for spec in override["services"][replica_name]["ports"]}
    assert s.admin.port not in published
    command = _healthcheck()
    assert command[:2] == ["python", "-c"], "the image has no curl or wget"
    assert "http://127.0.0.1:%s/readyz" in command[2]
    assert "os.environ.get('MWL_BRIDGE_ADMIN__PORT', '8080')" in command[2]
    compile(command[2], "healthcheck", "exec")
    text = DOCKERFILE.read_text(encoding="utf-8")
    options = re.search(r"^HEALTHCHECK (.*?) *\\?$", text, re.M)
    assert options is not None
    timing = dict(re.findall(r"--([a-z-]+)=(\w+)", options.group(1)))
    assert int(timing["timeout"][:-1]) < int(timing["interval"][:-1])
    assert int(timing["retries"]) >= 1 and timing["start-period"].endswith("s")
    assert "healthcheck" not in replica, "one healthcheck, in the image"


def test_the_healthcheck_passes_against_a_daemon_with_the_replicas_console_settings(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """The replica's admin settings really start the console, and the image's
    healthcheck command exits 0 against it (the store here is SQLite: /readyz asks the
    same), reading the port from the same variable the daemon does."""
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
        command = [sys.executable if a == "python" else a for a in _healthcheck()]
        assert subprocess.run(command, timeout=10, env=env).returncode == 0
        # Asked on another port, the same command fails: it really asks.
        other = {**env, "MWL_BRIDGE_ADMIN__PORT": str(_free_port())}
        assert subprocess.run(command, timeout=10, env=other,
                              capture_output=True).returncode != 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_database_password_is_a_secret_file_shared_with_postgres(
        compose: dict[str, Any], replica: dict[str, Any], bridge_env: dict[str, str]) -> None:
    s = load_settings(None, bridge_env)
    dsn = conninfo_to_dict(s.store.postgresql_dsn)
    pg = compose["services"]["postgres"]
    assert dsn["host"] == "postgres" and dsn["port"] == "5432"
    assert dsn["dbname"] == pg["environment"]["POSTGRES_DB"]
    assert dsn["user"] == pg["environment"]["POSTGRES_USER"]
    assert "password" not in dsn, "the password comes from the secret file"
    assert s.store.postgresql_password_file == Path("/run/secrets/db_password")
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert replica["secrets"] == pg["secrets"] == ["db_password"]
    assert compose["secrets"]["db_password"]["file"] == "./deploy/secrets/db_password"
    # No password anywhere in the compose files or in an image's build files.
    for path in (COMPOSE, OVERRIDE, CI_OVERRIDE, DOCKERFILE,
                 *(REPO / "deploy").glob("*/Dockerfile")):
        assert not re.search(r"PASSWORD[^_\n]*[:=] *\S", path.read_text(encoding="utf-8")
                             .replace("POSTGRES_PASSWORD_FILE", "")), path
    assert "deploy/secrets" not in (REPO / ".dockerignore").read_text(encoding="utf-8")


def test_replicas_start_after_postgres_is_healthy(replica: dict[str, Any]) -> None:
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    text = (REPO / "deploy" / "postgres" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^HEALTHCHECK .*\n.*pg_isready", text, re.M)


def test_ports_are_the_configured_ones_and_published_on_loopback(
        replica_name: str, override: dict[str, Any], bridge_env: dict[str, str]) -> None:
    s = load_settings(None, bridge_env)
    published = {}
    for spec in override["services"][replica_name]["ports"]:
        host_ip, host_port, container_port = spec.split(":")
        assert host_ip == "127.0.0.1", "loopback unless the operator opens it"
        published[int(container_port)] = int(host_port)
    assert set(published) == {s.mllp.port, s.dicom.port}
    # Inside the container the listeners must bind to all interfaces to be reachable.
    assert s.mllp.host == s.dicom.host == "0.0.0.0"
    exposed = {int(p) for line in DOCKERFILE.read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {s.mllp.port, s.dicom.port}


def test_each_replica_has_its_own_host_ports(override: dict[str, Any]) -> None:
    host_ports = [spec.split(":")[1] for n in REPLICAS for spec in override["services"][n]["ports"]]
    assert len(host_ports) == 4 and len(set(host_ports)) == 4
    assert all(spec.startswith("127.0.0.1:") for svc in override["services"].values()
               for spec in svc["ports"])


def test_each_replica_has_its_own_data_volume(compose: dict[str, Any]) -> None:
    data = [next(v.split(":")[0] for v in compose["services"][n]["volumes"]
                 if v.split(":")[1] == "/var/lib/mwl-bridge") for n in REPLICAS]
    assert len(set(data)) == len(data)


def test_postgres_and_orthanc_keep_their_data_on_named_volumes(compose: dict[str, Any]) -> None:
    for service, path in (("postgres", "/var/lib/postgresql/data"),
                          ("orthanc", "/var/lib/orthanc/db")):
        (volume,) = [v.split(":")[0] for v in compose["services"][service]["volumes"]
                     if v.split(":")[1] == path]
        assert volume in compose["volumes"]


def test_mappings_are_mounted_where_the_config_looks(
        compose: dict[str, Any], replica: dict[str, Any], bridge_env: dict[str, str]) -> None:
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


def test_the_bridge_runs_unprivileged_on_a_read_only_root(replica: dict[str, Any]) -> None:
    assert replica["read_only"] is True and replica["tmpfs"] == ["/tmp"]
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the daemon does not run as root"
    assert 'CMD ["serve"]' in text


def test_images_build_from_a_base_argument_and_a_wheelhouse_only() -> None:
    for path in (DOCKERFILE, *(REPO / "deploy").glob("*/Dockerfile")):
        text = path.read_text(encoding="utf-8")
        assert "ARG BASE=mwl-bridge-base:bookworm" in text, path
        assert re.search(r"^FROM \$\{BASE\}", text, re.M), path
        assert not re.search(r"^FROM (?!\$\{BASE\}|runtime\b)", text, re.M), path
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse" in text
    assert "'mwl-bridge[postgresql]'" in text


def test_ci_override_uses_host_networking_on_loopback_with_the_tests_ports(
        compose: dict[str, Any], ci: dict[str, Any]) -> None:
    assert set(ci["services"]) == set(compose["services"])
    raw = CI_OVERRIDE.read_text(encoding="utf-8")
    assert not re.search(r"^\s+ports:", raw, re.M), "host networking publishes nothing"
    for name, service in ci["services"].items():
        assert service["network_mode"] == "host", name
    assert set(re.findall(r"\$\{(\w+):\?\}", raw)) == {
        "CI_PG_PORT", "CI_MLLP_1", "CI_DICOM_1", "CI_ADMIN_1", "CI_MLLP_2", "CI_DICOM_2",
        "CI_ADMIN_2", "CI_ORTHANC_DICOM", "CI_ORTHANC_HTTP"}
    assert ci["services"]["postgres"]["environment"]["POSTGRES_LISTEN"] == "127.0.0.1"
    for name in REPLICAS:
        env = {**{k: str(v) for k, v in compose["services"][name]["environment"].items()},
               **{k: str(v) for k, v in ci["services"][name]["environment"].items()}}
        s = load_settings(None, env)
        assert s.mllp.host == s.dicom.host == s.admin.host == "127.0.0.1"
        assert conninfo_to_dict(s.store.postgresql_dsn)["host"] == "127.0.0.1"


def test_orthanc_lets_the_bridges_ae_in(compose: dict[str, Any], bridge_env: dict[str, str]
                                        ) -> None:
    s = load_settings(None, bridge_env)
    orthanc = compose["services"]["orthanc"]["environment"]
    assert orthanc["BRIDGE_AE"] == s.dicom.ae_title
    assert orthanc["BRIDGE_HOST"] in REPLICAS and str(orthanc["BRIDGE_PORT"]) == str(s.dicom.port)
    config = json.loads((REPO / "deploy" / "orthanc" / "orthanc.json").read_text())
    # Only the AEs in DicomModalities (the bridge's, written by the entrypoint) may
    # store or query.
    assert config["DicomAlwaysAllowStore"] is False and config["DicomAlwaysAllowFind"] is False
    entry = (REPO / "deploy" / "orthanc" / "entrypoint.sh").read_text().replace("\\\"", "\"")
    assert '"AllowFind": true, "AllowStore": true' in entry
    # The modalities' entries may store, not query.
    assert '"AllowStore": true, "AllowFind": false' in entry
    assert compose["services"]["orthanc"]["environment"]["ORTHANC_STORE_AETS"] == ""


def test_the_replicas_reconcile_against_the_orthanc_service(
        compose: dict[str, Any], ci: dict[str, Any], bridge_env: dict[str, str]) -> None:
    """Completion without MPPS (docs/completion.md): the replicas ask the stack's Orthanc,
    at its AE title and DICOM port, as the AE Orthanc lets query; in CI at the test's
    port, with a cycle that runs within seconds."""
    s = load_settings(BRIDGE_CONFIG, bridge_env)
    orthanc = compose["services"]["orthanc"]["environment"]
    assert s.reconcile.enabled
    (pacs,) = s.reconcile.pacs
    assert (pacs.ae_title, pacs.host, str(pacs.port)) == (
        orthanc["ORTHANC_AET"], "orthanc", str(orthanc["ORTHANC_DICOM_PORT"]))
    assert (s.reconcile.calling_ae_title or s.dicom.ae_title) == orthanc["BRIDGE_AE"]
    # The production cycle keeps the defaults (docs/completion.md).
    assert s.reconcile.interval_s == 60 and s.reconcile.min_age_min == 10
    for name in REPLICAS:
        env = {**{k: str(v) for k, v in compose["services"][name]["environment"].items()},
               **{k: str(v) for k, v in ci["services"][name]["environment"].items()}}
        ci_settings = load_settings(BRIDGE_CONFIG, env).reconcile
        (ci_pacs,) = ci_settings.pacs
        assert (ci_pacs.host, str(ci_pacs.port)) == (
            "127.0.0.1", str(ci["services"]["orthanc"]["environment"]["ORTHANC_DICOM_PORT"]))
        assert ci_settings.interval_s <= 1 and ci_settings.settle_poll_s <= 1
        assert ci_settings.recheck_s <= 1 and ci_settings.min_age_min == 0
